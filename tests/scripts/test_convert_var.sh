#!/usr/bin/env bash
# Converter round trip (official key layout -> safetensors, bit-exact) and the converted model runs.
#   test_convert_var.sh SCALEKV_BINARY GOLDEN_DIR
set -euo pipefail
bin=$1 golden=$2
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--self-test --keep "$work")
[ -f "$golden/var-tiny-a.var.safetensors" ] && args+=(--golden "$golden/var-tiny-a")
/usr/bin/python3 "$here/scripts/convert_var.py" "${args[@]}"
"$bin" generate --model "$work/synthetic.config.json" --weights "$work/synthetic.var.safetensors" \
  --vae "$work/synthetic.vae.safetensors" --labels 0,3 --out "$work/png"
test -s "$work/png/0000_c0.png" && test -s "$work/png/0001_c3.png"
# A checkpoint that does not match the config must fail with the tensor named.
if "$bin" generate --model "$work/synthetic.config.json" --weights "$work/synthetic-shared.var.safetensors" \
     --vae "$work/synthetic.vae.safetensors" --labels 0 --out "$work/bad" 2>"$work/err"; then
  echo "expected a failure for a mismatched checkpoint"; exit 1
fi
grep -q "missing tensor 'blocks.0.ada_lin.1.weight'" "$work/err" || { cat "$work/err"; exit 1; }
echo "convert_var round trip ok"
