#!/usr/bin/env bash
# The runtime against the PyTorch code the demo model was trained with: greedy sampling (top-k 1, the
# config's CFG) of every class, two images each, by `scalekv generate` (C++) and by
# scripts/eval/sample_demo.py (PyTorch, scripts/vardemo/models.py). The PNGs must agree within one
# 8-bit level: same tokens at every scale, same VQ-VAE decode. Exit 77 (skip) without Debian's PyTorch.
#   tests/scripts/test_demo_parity.sh build/bin/scalekv
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/build/bin/scalekv}
PY=${PYTHON:-/usr/bin/python3}
"$PY" -c "import torch, PIL" 2>/dev/null || { echo "SKIP: needs python3-torch and python3-pil (scripts/setup.sh --torch)"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN" generate --labels 0-9x2 --top-k 1 --out "$TMP/skv" > /dev/null
"$PY" "$ROOT/scripts/eval/sample_demo.py" --per-class 2 --top-k 1 --images-dir "$TMP/torch" --grid '' --threads 1 > /dev/null
"$PY" - "$TMP" <<'PY'
import json, sys
import numpy as np
from PIL import Image
tmp = sys.argv[1]
labels = json.load(open(f"{tmp}/skv/labels.json"))
seen, worst = {}, 0
for name, c in sorted(labels.items()):
    k = seen.get(c, 0)
    seen[c] = k + 1
    a = np.asarray(Image.open(f"{tmp}/skv/{name}").convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(f"{tmp}/torch/c{c}_s{k}.png").convert("RGB"), dtype=np.int16)
    d = int(np.abs(a - b).max())
    worst = max(worst, d)
    if d > 1:
        sys.exit(f"demo parity: {name} (class {c}) differs from the PyTorch c{c}_s{k}.png by {d} levels")
print(f"demo parity: {len(labels)} greedy images match the PyTorch sampler (max difference {worst} levels)")
PY
