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
[ -x "$bin" ] || { echo "quality_table.sh: build first (scripts/test.sh or cmake --build build)"; exit 1; }
/usr/bin/python3 -c "import torch, PIL" 2>/dev/null ||
  { echo "quality_table.sh: needs Debian's PyTorch and PIL (scripts/setup.sh --torch)"; exit 1; }
threads=$(nproc)
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 SKV_PROGRESS=0
mkdir -p "$out"
: > "$out/runs.txt"
run() {  # run NAME generate-args...
  local name=$1; shift
  rm -rf "${out:?}/$name"
  local log
  log=$("$bin" generate --labels "0-9x$per_class" --seed "$seed" --batch 50 --out "$out/$name" "$@")
  echo "$name|$*|$log" | tr '\n' ' ' >> "$out/runs.txt"
  echo >> "$out/runs.txt"
  /usr/bin/python3 scripts/eval/evaluate.py "$out/$name" --threads "$threads" --json "$out/$name.eval.json" \
    $( [ "$name" = full ] || echo --reference "$out/full" ) > /dev/null
  echo "  $name done"
}
echo "quality_table.sh: $((per_class * 10)) images per configuration into $out"
run full --kv-policy full
for b in 4 10 20; do
  for p in sliding-window streamingllm snapkv pyramidkv scalekv; do
    # StreamingLLM's sinks: the first scale (one token, the class token) -- its default of 4 sinks
    # exceeds the whole 4 % budget (4 tokens) of this 155-token model.
    run "$p-$b" --kv-policy "$p" --kv-budget "$b%" $( [ "$p" = streamingllm ] && echo --kv-sinks 1 )
  done
done
/usr/bin/python3 - "$out" "$per_class" "$seed" <<'PY'
import json, platform, re, subprocess, sys
out, per_class, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(f"{out}/runs.txt"):
    if not line.strip():
        continue
    name, args, log = line.split("|", 2)
    t = re.search(r"generated (\d+) images .* in ([\d.]+) s", log)
    kv = re.search(r"measured peak ([\d.]+) MiB \((\d+) bytes\), ([\d.]+)% of the full", log)
    ev = json.load(open(f"{out}/{name}.eval.json"))
    rows.append(dict(name=name, args=args.strip(), images=int(t.group(1)), seconds=float(t.group(2)),
                     kv_bytes=int(kv.group(2)), kv_share=float(kv.group(3)), accuracy=ev.get("accuracy"),
                     fid=ev.get("fid_fmnist"), psnr=ev.get("psnr_mean"), ssim=ev.get("ssim_mean"),
                     identical=sum(1 for v in ev["per_image"].values() if v.get("psnr", 0) >= 100)))
json.dump(rows, open(f"{out}/quality.json", "w"), indent=1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
build = next((l.split("=", 1)[1].strip() for l in open("build/CMakeCache.txt") if l.startswith("CMAKE_BUILD_TYPE:")), "?")
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
