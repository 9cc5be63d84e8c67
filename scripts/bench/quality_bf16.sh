#!/usr/bin/env bash
# quality_bf16.sh - the quality table's rows for --compute-dtype bf16 next to F32, on the shipped demo model.
#   scripts/bench/quality_bf16.sh [PER_CLASS] [OUT_DIR] [SEED]
# Defaults: 50 images per class (500 images, as scripts/bench/quality_table.sh), bench-results/quality-bf16,
# seed 0. For the full cache and ScaleKV 10 % it generates the same labels and seeds in F32 and in BF16 with
# `scalekv generate --save-tokens`, scores every folder with scripts/eval/evaluate.py (FID-FMNIST, class
# accuracy; PSNR/SSIM of each BF16 image against the F32 image of the same request), and counts the
# share of tokens equal to F32's at every scale (free-running: a token that differs changes the rest of
# its image). Writes OUT_DIR/quality_bf16.md and OUT_DIR/quality_bf16.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
per_class=${1:-50}
out=${2:-bench-results/quality-bf16}
seed=${3:-0}
bin=build/bin/scalekv
source scripts/bench/quality_common.sh
quality_setup quality_bf16.sh
echo "quality_bf16.sh: $((per_class * 10)) images per configuration into $out"
for p in full scalekv; do
  budget=(); [ "$p" = full ] || budget=(--kv-budget 10%)
  quality_run "$p-f32" "" --save-tokens --kv-policy "$p" "${budget[@]}" --compute-dtype f32
  quality_run "$p-bf16" "$p-f32" --save-tokens --kv-policy "$p" "${budget[@]}" --compute-dtype bf16
done
/usr/bin/python3 - "$out" "$per_class" "$seed" <<'PY'
import json, sys
sys.path.insert(0, "scripts/bench")
import quality_rows
out, per_class, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = quality_rows.rows(out)
for r in rows:
    del r["log"]
# Token agreement per scale of each BF16 row with the F32 row of the same policy.
for r in rows:
    if not r["name"].endswith("-bf16"):
        continue
    a = json.load(open(f"{out}/{r['name'].replace('-bf16', '-f32')}/tokens.json"))
    b = json.load(open(f"{out}/{r['name']}/tokens.json"))
    assert a.keys() == b.keys(), "the two runs hold different images"
    scales = len(next(iter(a.values())))
    same, count = [0] * scales, [0] * scales
    for img in a:
        for si in range(scales):
            same[si] += sum(x == y for x, y in zip(a[img][si], b[img][si]))
            count[si] += len(a[img][si])
    r["token_agreement"] = [s / c for s, c in zip(same, count)]
    r["images_identical_tokens"] = sum(a[i] == b[i] for i in a)
json.dump(rows, open(f"{out}/quality_bf16.json", "w"), indent=1)
cpu, cores, build = quality_rows.machine()
md = [f"Demo model (models/demo), {rows[0]['images']} images per row ({per_class} per class, seed {seed}, the config's "
      f"CFG/top-k), CPU {cpu}, {cores} cores, build {build}.",
      f"Command: `scripts/bench/quality_bf16.sh {per_class}`; each row is `scalekv generate --labels 0-9x{per_class} --seed "
      f"{seed} --batch 50 --save-tokens ARGS` (ScaleKV with --kv-budget 10%), scored by `scripts/eval/evaluate.py`; PSNR/SSIM, identical "
      "images and token agreement compare each BF16 image with the F32 image of the same request and policy.", "",
      "| policy | compute dtype | FID-FMNIST ↓ | class acc. ↑ | PSNR vs F32 (dB) | SSIM vs F32 | identical images | "
      "token agreement with F32 per scale | ms / image ↓ |",
      "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    policy, _, dtype = r["name"].rpartition("-")
    bf = dtype == "bf16"
    agree = " ".join(f"{100 * x:.0f}" for x in r["token_agreement"]) + " %" if bf else "—"
    md.append(f"| {policy}{' 10%' if policy != 'full' else ''} | {dtype.upper()} | {r['fid']:.2f} | "
              f"{100 * r['accuracy']:.1f}% | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['identical']} | {agree} | "
              f"{1000 * r['seconds'] / r['images']:.1f} |" if bf else
              f"| {policy}{' 10%' if policy != 'full' else ''} | F32 | {r['fid']:.2f} | {100 * r['accuracy']:.1f}% | — | — | — | "
              f"— | {1000 * r['seconds'] / r['images']:.1f} |")
open(f"{out}/quality_bf16.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
