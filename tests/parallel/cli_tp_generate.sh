#!/usr/bin/env bash
# cli_tp_generate.sh - `scalekv generate` sharded over ranks writes the images of one rank:
# TP 2, TP 4 (oversubscribed) and 2 replicas of TP 2 against TP 1, pixel for pixel (at most 1 level
# apart, from float rounding). Also: --tp 2 started alone fails with the mpirun command to use.
set -uo pipefail
. "$(dirname "$0")/cli_common.sh"
make_tiny_model
args=(generate "${MODEL_ARGS[@]}" --labels 0-4x2 --seed 7 --batch 3)

"$SCALEKV" "${args[@]}" --out "$WORK/tp1" || fail "TP 1 run failed"
mpirun_n 2 "$SCALEKV" "${args[@]}" --tp 2 --out "$WORK/tp2" || fail "TP 2 run failed"
mpirun_n 4 "$SCALEKV" "${args[@]}" --tp 4 --out "$WORK/tp4" || fail "TP 4 run failed"
mpirun_n 4 "$SCALEKV" "${args[@]}" --tp 2 --out "$WORK/tp2x2" > "$WORK/replicas.log" || fail "2 x TP 2 run failed"
cat "$WORK/replicas.log"
grep -q "replica 0/2" "$WORK/replicas.log" && grep -q "replica 1/2" "$WORK/replicas.log" ||
  fail "the two replicas did not both report"
for d in tp2 tp4 tp2x2; do
  "$PNG_DIFF" "$WORK/tp1" "$WORK/$d" 1 || fail "$d differs from TP 1"
done

out=$("$SCALEKV" "${args[@]}" --tp 2 --out "$WORK/alone" 2>&1) && fail "--tp 2 without mpirun succeeded"
echo "$out"
grep -q "mpirun -n 2" <<<"$out" || fail "the error does not say how to start 2 ranks"
out=$(mpirun_n 4 "$SCALEKV" "${args[@]}" --tp 3 --out "$WORK/tp3" 2>&1) && fail "--tp 3 on 4 ranks succeeded"
grep -q "does not divide the 4 ranks" <<<"$out" || fail "the --tp 3 error does not explain: $out"
echo "PASS"
