#!/usr/bin/env bash
# generate --save-tokens writes OUT/tokens.json: each image's tokens per scale, as sampled. Checked
# against the demo model's pinned tokens (tests/models/demo_tokens*.json: classes 0-9, seed 0, full
# cache), in F32 and, where the CPU has avx512_bf16, with --compute-dtype bf16; and one image per forward
# pass (--batch 1) must save the same tokens as all ten at once, in both dtypes.
#   test_save_tokens.sh SCALEKV_BINARY SOURCE_DIR
set -euo pipefail
bin=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check() {  # check OUT_DIR PIN_FILE
  python3 - "$1/tokens.json" "$2" <<'PY'
import json, sys
got, pin = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["full/seed0"]
names = sorted(got)
assert names == [f"{i:04d}_c{i}.png" for i in range(10)], names
for si, want in enumerate(pin):
    n = len(want) // 10
    for i, name in enumerate(names):
        assert got[name][si] == want[i * n:(i + 1) * n], f"{sys.argv[1]}: {name} scale {si} differs from {sys.argv[2]}"
print(f"ok: {sys.argv[1]} equals the pin {sys.argv[2]}")
PY
}
"$bin" generate --labels 0-9 --seed 0 --save-tokens --out "$work/f32" > /dev/null
check "$work/f32" "$src/tests/models/demo_tokens.json"
"$bin" generate --labels 0-9 --seed 0 --save-tokens --batch 1 --out "$work/f32-b1" > /dev/null
cmp "$work/f32/tokens.json" "$work/f32-b1/tokens.json" && echo "ok: --batch 1 saves the same tokens"
if "$bin" generate --labels 0-9 --seed 0 --save-tokens --compute-dtype bf16 --out "$work/bf16" > /dev/null 2> "$work/err"; then
  check "$work/bf16" "$src/tests/models/demo_tokens_bf16.json"
  "$bin" generate --labels 0-9 --seed 0 --save-tokens --compute-dtype bf16 --batch 1 --out "$work/bf16-b1" > /dev/null
  cmp "$work/bf16/tokens.json" "$work/bf16-b1/tokens.json" && echo "ok: bf16 with --batch 1 saves the same tokens"
elif grep -q "needs avx512_bf16" "$work/err"; then
  echo "bf16 skipped: $(cat "$work/err")"
else
  cat "$work/err"; exit 1
fi
