#!/usr/bin/env bash
# quality_table.sh - our version of the paper's Table 1 on the shipped Fashion-MNIST demo model.
#   scripts/bench/quality_table.sh [PER_CLASS] [OUT_DIR] [SEED]
# Defaults: 50 images per class (500 images), bench-results/quality, seed 0.
# For the full cache and for sliding-window, streamingllm, snapkv, pyramidkv and scalekv at 4 %, 10 %
# and 20 % it generates the same labels and seeds with `scalekv generate`, then scores every folder
# with scripts/eval/evaluate.py: FID-FMNIST (lower is better), class accuracy (higher is better),
# PSNR and SSIM against the full-cache image of the same label and seed (higher is better), the
# measured peak KV bytes (lower is better) and the generation time (lower is better; one run of all
# images, so the per-image figure is already a mean over PER_CLASS x 10 images). StreamingLLM keeps
# one sink token (the first scale) here: its usual 4 would fill the whole 4 % budget.
# Writes OUT_DIR/quality.md (with the machine, build type and commands) and OUT_DIR/quality.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
per_class=${1:-50}
out=${2:-bench-results/quality}
seed=${3:-0}
bin=build/bin/scalekv
source scripts/bench/quality_common.sh
quality_setup quality_table.sh
echo "quality_table.sh: $((per_class * 10)) images per configuration into $out"
quality_run full "" --kv-policy full
for b in 4 10 20; do
  for p in sliding-window streamingllm snapkv pyramidkv scalekv; do
    # StreamingLLM's sinks: the first scale (one token, the class token) -- its default of 4 sinks
    # exceeds the whole 4 % budget (4 tokens) of this 155-token model.
    quality_run "$p-$b" full --kv-policy "$p" --kv-budget "$b%" $( [ "$p" = streamingllm ] && echo --kv-sinks 1 )
  done
done
/usr/bin/python3 - "$out" "$per_class" "$seed" <<'PY'
import json, re, sys
sys.path.insert(0, "scripts/bench")
import quality_rows
out, per_class, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = quality_rows.rows(out)
for r in rows:
    kv = re.search(r"measured peak ([\d.]+) MiB \((\d+) bytes\), ([\d.]+)% of the full", r.pop("log"))
    r["kv_bytes"], r["kv_share"] = int(kv.group(2)), float(kv.group(3))
json.dump(rows, open(f"{out}/quality.json", "w"), indent=1)
cpu, cores, build = quality_rows.machine()
md = [f"Demo model (models/demo, VAR depth 6, 7 scales, 155 tokens), {rows[0]['images']} images per row "
      f"({per_class} per class, seed {seed}, the config's CFG/top-k), CPU {cpu}, {cores} cores, build {build}.",
      f"Command: `scripts/bench/quality_table.sh {per_class}`; each row is `scalekv generate --labels 0-9x{per_class} "
      f"--seed {seed} --batch 50 ARGS`, scored by `scripts/eval/evaluate.py` (FID-FMNIST vs the 10k test set).",
      "Better: FID lower, accuracy higher, PSNR/SSIM vs full higher, KV lower, time lower. PSNR is the mean over "
      "images, an image identical to its full-cache counterpart counting as 100 dB (the 'identical' column counts them).", "",
      "| policy | budget | FID-FMNIST ↓ | class acc. ↑ | PSNR vs full (dB) ↑ | SSIM vs full ↑ | identical | peak KV (MiB) ↓ | KV share of full | ms / image ↓ |",
      "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    policy, _, budget = r["name"].rpartition("-") if r["name"] != "full" else ("full", "", "100")
    psnr = "—" if r["psnr"] is None else f"{r['psnr']:.2f}"
    ssim = "—" if r["ssim"] is None else f"{r['ssim']:.4f}"
    md.append(f"| {policy} | {budget}% | {r['fid']:.2f} | {100 * r['accuracy']:.1f}% | {psnr} | {ssim} | {'—' if r['name'] == 'full' else r['identical']} | "
              f"{r['kv_bytes'] / 2**20:.3f} | {r['kv_share']:.1f}% | {1000 * r['seconds'] / r['images']:.1f} |")
open(f"{out}/quality.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
