#!/usr/bin/env bash
# cli_rank_failure.sh MODE ... - one rank of a 2-rank TP job fails; the whole job must end, non-zero,
# within seconds, with a message naming the failing rank. Modes (no test hooks in the program: the
# failures are real):
#   bad_file     rank 1 is given a corrupt weights file (MPMD launch), rank 0 a good one
#   bad_request  rank 1 is asked for a class the model does not have; rank 0 is already waiting in
#                the first all-reduce when rank 1 fails
#   hang         rank 1 is stopped (SIGSTOP) in the middle of generation; rank 0's collective
#                watchdog (SKV_COLLECTIVE_TIMEOUT=3) must end the job
#   mismatch     the ranks are given different --labels (a valid request each); they must compare
#                their requests and name the option and both values (not MPI_ERR_TRUNCATE later)
set -uo pipefail
MODE=$1
shift
. "$(dirname "$0")/cli_common.sh"
make_tiny_model
base=(generate --tp 2 --seed 1)
LIMIT=30  # seconds: generous for a loaded 2-core machine; a hung job would run into ctest's timeout

start=$(date +%s%N)
case "$MODE" in
  bad_file)
    head -c 200 "$WORK/tiny.var.safetensors" > "$WORK/corrupt.safetensors"
    "$MPIEXEC" "$NP" 1 $OVERSUB "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 1 --out "$WORK/o" : \
      "$NP" 1 "$SCALEKV" "${base[@]}" --model "$WORK/tiny.config.json" --weights "$WORK/corrupt.safetensors" \
      --vae "$WORK/tiny.vae.safetensors" --labels 1 --out "$WORK/o" > "$WORK/log" 2>&1
    rc=$?
    ;;
  bad_request)
    "$MPIEXEC" "$NP" 1 $OVERSUB "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 1 --out "$WORK/o" : \
      "$NP" 1 "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 99 --out "$WORK/o" > "$WORK/log" 2>&1
    rc=$?
    ;;
  mismatch)
    "$MPIEXEC" "$NP" 1 $OVERSUB "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 1 --out "$WORK/o" : \
      "$NP" 1 "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 2,3 --out "$WORK/o" > "$WORK/log" 2>&1
    rc=$?
    ;;
  hang)
    SKV_COLLECTIVE_TIMEOUT=3 mpirun_n 2 "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 0-4x400 --batch 1 \
      --out "$WORK/o" > "$WORK/log" 2>&1 &
    job=$!
    # Wait until generation is under way (rank 0 wrote a PNG), then stop rank 1.
    for _ in $(seq 600); do
      compgen -G "$WORK/o/*.png" > /dev/null && break
      sleep 0.05
    done
    victim=""
    for d in /proc/[0-9]*; do
      tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q "$WORK/tiny.config.json" || continue
      tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=${d#/proc/}
    done
    [ -n "$victim" ] || { kill "$job" 2>/dev/null; fail "could not find rank 1 (did the job finish early?)"; }
    start=$(date +%s%N)
    kill -STOP "$victim"
    wait "$job"
    rc=$?
    kill -CONT "$victim" 2>/dev/null
    ;;
  *) fail "unknown mode $MODE" ;;
esac
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed=$(printf "%d.%03d" $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))
cat "$WORK/log"
echo "mode $MODE: exit status $rc after $elapsed s"
[ "$rc" -ne 0 ] || fail "the job exited 0"
(( elapsed_ms < LIMIT * 1000 )) || fail "the job took $elapsed s to end (limit $LIMIT s)"
case "$MODE" in
  bad_file|bad_request) grep -q "error: \[rank 1/2\]" "$WORK/log" || fail "no error line names rank 1" ;;
  hang) grep -q "error: \[rank 0/2\].*waited" "$WORK/log" || fail "rank 0's watchdog did not report the wait" ;;
  mismatch) grep -q "different --labels (rank 0: '1', rank 1: '2,3')" "$WORK/log" || fail "no error names --labels and both values" ;;
esac
echo "PASS"
