#!/usr/bin/env bash
# `scalekv calibrate` on an Infinity model: random weights of the infinity-tiny golden's shape, three
# random prompts (an embeddings file in the format scripts/encode_prompts.py writes), 256x256. The
# table must be written and then be read by `plan --kv-budget-table`; a VAR-style --prompts file must
# be refused with a one-line error. Exit 77 (skip) when the golden folder is absent.
#   tests/scripts/test_calibrate_infinity.sh build/bin/scalekv ../shared/golden
set -euo pipefail
BIN=$1
CFG=$2/infinity-tiny.config.json
[ -f "$CFG" ] || { echo "SKIP: $CFG is absent"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$TMP/text.safetensors" <<'PY'
import json, random, struct, sys
random.seed(0)
n, length, ch = 3, 5, 512
kv = struct.pack(f"<{n * length * ch}f", *[random.gauss(0, 0.3) for _ in range(n * length * ch)])
lens = struct.pack(f"<{n}q", *[length] * n)
hdr = {"kv_compact": {"dtype": "F32", "shape": [n * length, ch], "data_offsets": [0, len(kv)]},
       "lens": {"dtype": "I64", "shape": [n], "data_offsets": [len(kv), len(kv) + len(lens)]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + kv + lens)
PY
"$BIN" calibrate --model "$CFG" --random-weights --text-embeddings "$TMP/text.safetensors" --resolution 256 \
  --out "$TMP/budgets.json" | tee "$TMP/log"
grep -q "calibrated .* (3 requests)" "$TMP/log"
[ -s "$TMP/budgets.json" ]
"$BIN" plan --model "$CFG" --resolution 256 --kv-policy scalekv --kv-budget-table "$TMP/budgets.json" > "$TMP/plan"
grep -q "KV peak" "$TMP/plan"
if ! "$BIN" calibrate --model "$CFG" --random-weights --prompts "$TMP/log" --out "$TMP/x.json" 2> "$TMP/err"; then
  grep -q "needs --text-embeddings" "$TMP/err" || { cat "$TMP/err"; exit 1; }
else
  echo "calibrate accepted --prompts for an Infinity model" >&2; exit 1
fi
echo "calibrate (Infinity): OK"
