#!/usr/bin/env bash
# The converter at the real VAR-d16 shape (issue: exactness at the released shapes): random weights in
# the official key layout (var_d16.pth, vae_ch160v4096z32.pth with its encoder) go through
# scripts/convert_var.py; the inferred config must equal configs/var-d16.json, and the converted model
# must load and generate a 256x256 image on the released 10-scale schedule.
#   test_convert_var_d16.sh SCALEKV_BINARY
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 "$here/scripts/convert_var.py" --full-size-test "$work/d16"
"$bin" generate --model "$work/d16/var-d16.config.json" --weights "$work/d16/var-d16.var.safetensors" \
  --vae "$work/d16/var-d16.vae.safetensors" --labels 207 --seed 1 --out "$work/png" | tee "$work/log"
png=$(ls "$work/png"/*.png)
# PNG header: width and height are big-endian at bytes 16..23.
dims=$(od -An -tu1 -j16 -N8 "$png" | tr -s ' ')
[ "$dims" = " 0 0 1 0 0 0 1 0" ] || { echo "expected a 256x256 PNG, header bytes:$dims"; exit 1; }
echo "convert_var full-size ok"
