#!/usr/bin/env bash
# --weight-dtype is honoured in a one-process run (it used to be set only when several ranks ran, so
# every one-GPU "bf16" benchmark row ran F32): `scalekv bench` must report fewer weight bytes with bf16
# than with f32 - the linear weights halve, embeddings, norms and the VAE stay F32 - for VAR and Infinity.
#   test_weight_dtype.sh SCALEKV_BINARY
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# VAR (the shipped demo model): "| batch | weights | ..." then "| 1 | 30.95 MiB | ...".
var_weights() {
  "$bin" bench --model "$here/models/demo/var-fmnist.config.json" --weight-dtype "$1" --batch 1 --repeats 1 \
    --warmup 0 > "$work/var-$1.txt"
  grep -A2 '^| batch | weights' "$work/var-$1.txt" | tail -1 | awk -F'|' '{print $3}' | awk '{print $1}'
}
# Infinity-2B shape, one block: "| cpu | 717.7 | ..." in the memory table (MiB).
inf_weights() {
  "$bin" bench --model "$here/configs/infinity-2b.json" --resolution 256 --depth 1 --batch 1 --repeats 1 --warmup 0 \
    --no-decode --text-len 4 --weight-dtype "$1" > "$work/inf-$1.txt"
  grep -A2 '^| memory (MiB)' "$work/inf-$1.txt" | tail -1 | awk -F'|' '{print $3}' | tr -d ' '
}
check() {  # name f32 bf16 max-ratio
  awk -v n="$1" -v a="$2" -v b="$3" -v r="$4" 'BEGIN {
    if (a == "" || b == "" || a <= 0) { printf "%s: could not read the weight bytes (f32 %s, bf16 %s)\n", n, a, b; exit 1 }
    printf "%s: weights f32 %s, bf16 %s (ratio %.3f, must be <= %s)\n", n, a, b, b / a, r
    exit !(b / a <= r) }'
}
check "VAR demo" "$(var_weights f32)" "$(var_weights bf16)" 0.6
grep -q "bf16\|BF16" "$work/var-bf16.txt" || { echo "VAR bench does not name the bf16 weights"; cat "$work/var-bf16.txt"; exit 1; }
check "Infinity-2B, 1 block" "$(inf_weights f32)" "$(inf_weights bf16)" 0.8
grep -q "BF16 linear weights" "$work/inf-bf16.txt" || { echo "Infinity bench does not name the bf16 weights"; exit 1; }
# A dtype that does not exist is an error naming it, in a one-process run too.
if "$bin" bench --model "$here/models/demo/var-fmnist.config.json" --weight-dtype xyz --batch 1 --repeats 1 \
     --warmup 0 > "$work/bad.txt" 2>&1; then
  echo "--weight-dtype xyz was accepted"; exit 1
fi
grep -q "xyz" "$work/bad.txt" || { cat "$work/bad.txt"; exit 1; }
echo "weight dtype ok"
