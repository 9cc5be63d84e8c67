#!/usr/bin/env bash
# Smoke test of the demo-model pipeline (Python side): a few training steps of the VQ-VAE and the VAR
# (train_demo_model.py --smoke), sampling a handful of images from those weights with the KV-cached
# PyTorch sampler (plus its self-check against the teacher-forcing graph), and evaluate.py on them,
# with the images as their own reference; with a scalekv binary as the argument, the runtime also loads
# and samples the freshly trained files (the key names and config the trainer writes are the ones
# the runtime reads). Fails on any error; exit 77 (skip) without Debian's python3-torch, python3-pil
# or the dataset-fashion-mnist package. Takes ~15 s on 2 cores.
#   tests/scripts/test_demo_training_smoke.sh [build/bin/scalekv]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-/usr/bin/python3}
BIN=${1:-}
"$PY" -c "import torch, PIL" 2>/dev/null || { echo "SKIP: needs python3-torch and python3-pil (scripts/setup.sh --torch)"; exit 77; }
[ -d /usr/share/datasets/fashion-mnist ] ||
  { echo "SKIP: needs Debian's dataset-fashion-mnist (scripts/setup.sh --torch)"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$PY" "$ROOT/scripts/train_demo_model.py" --smoke --out "$TMP/model"
for f in var-fmnist.config.json var-fmnist.var.safetensors var-fmnist.vae.safetensors train_log.txt; do
  [ -s "$TMP/model/$f" ] || { echo "missing $f" >&2; exit 1; }
done
"$PY" "$ROOT/scripts/eval/sample_demo.py" --model "$TMP/model" --classes 0,3,7,9 --per-class 2 \
  --images-dir "$TMP/samples" --grid "$TMP/grid.png" --self-check
[ "$(ls "$TMP/samples" | wc -l)" -eq 8 ] || { echo "expected 8 sample PNGs" >&2; exit 1; }
if [ -n "$BIN" ]; then
  "$BIN" generate --model "$TMP/model/var-fmnist.config.json" --weights "$TMP/model/var-fmnist.var.safetensors" \
    --vae "$TMP/model/var-fmnist.vae.safetensors" --labels 0,3 --kv-policy scalekv --out "$TMP/runtime" > /dev/null
  [ "$(ls "$TMP/runtime"/*.png | wc -l)" -eq 2 ] || { echo "the runtime wrote no PNGs from the trained files" >&2; exit 1; }
fi
"$PY" "$ROOT/scripts/eval/evaluate.py" "$TMP/samples" --reference "$TMP/samples" --json "$TMP/eval.json"
"$PY" - "$TMP/eval.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("accuracy", "fid_fmnist", "psnr_mean", "ssim_mean", "per_image"):
    assert key in r, f"evaluate.py --json lacks {key}"
assert r["num_images"] == 8 and abs(r["ssim_mean"] - 1.0) < 1e-9 and r["psnr_mean"] == 100.0, r
print("demo training smoke test: OK")
PYEOF
