#!/usr/bin/env bash
# cli_rank_failure.sh MODE ... - one rank of a 2-rank TP job fails; the whole job must end, non-zero,
# within seconds, with a message naming the failing rank. Modes (no test hooks in the program: the
# failures are real):
#   bad_file     rank 1 is given a corrupt weights file (MPMD launch), rank 0 a good one
#   bad_request  rank 1 is asked for a class the model does not have; rank 0 is already waiting in
#                the first all-reduce when rank 1 fails
#   stopped_rank1  rank 1 is stopped (SIGSTOP) in the middle of generation; rank 0's collective
#                watchdog (SKV_COLLECTIVE_TIMEOUT=5) must end the job and name rank 1, which never arrived
#   stopped_rank0  the same with rank 0 (the rank that writes the images) stopped: rank 1 names it
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
  stopped_rank0|stopped_rank1)
    stop=${MODE#stopped_rank}
    LIMIT=20  # the 5 s watchdog, its 1.25 s of questions, MPI_Abort; the default (90 s) is in the README
    SKV_COLLECTIVE_TIMEOUT=5 mpirun_n 2 "$SCALEKV" "${base[@]}" "${MODEL_ARGS[@]}" --labels 0-4x400 --batch 1 \
      --out "$WORK/o" > "$WORK/log" 2>&1 &
    job=$!
    victim=""
    # On every way out (a failed check, ctest's timeout): no stopped or leftover process stays behind.
    trap '[ -n "$victim" ] && kill -CONT "$victim" 2>/dev/null; kill -KILL "$victim" "$job" 2>/dev/null; rm -rf "$WORK"' EXIT
    # Wait until generation is under way (rank 0 wrote a PNG), then stop the rank.
    for _ in $(seq 600); do
      compgen -G "$WORK/o/*.png" > /dev/null && break
      sleep 0.05
    done
    for d in /proc/[0-9]*; do
      tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q "$WORK/tiny.config.json" || continue
      tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$stop" && victim=${d#/proc/}
    done
    [ -n "$victim" ] || fail "could not find rank $stop (did the job finish early?)"
    start=$(date +%s%N)
    kill -STOP "$victim"
    # The job must end by itself; past twice the limit it is ended here (and the test fails below).
    for _ in $(seq $((LIMIT * 20 * 2))); do
      kill -0 "$job" 2>/dev/null || break
      sleep 0.05
    done
    kill -0 "$job" 2>/dev/null && { kill -CONT "$victim"; kill -KILL "$victim"; kill -TERM "$job"; }
    wait "$job"
    rc=$?
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
  stopped_rank0|stopped_rank1)
    other=$((1 - stop))
    grep -q "^error: \[rank $other/2\] .* #[0-9]* of .*: rank $stop never arrived and does not answer (stopped, hung" \
      "$WORK/log" || fail "no error line names rank $stop as the rank that never arrived"
    grep -q "never arrived" <(grep -v "rank $stop never arrived" "$WORK/log") && fail "another rank is named missing"
    ;;
  mismatch) grep -q "different --labels (rank 0: '1', rank 1: '2,3')" "$WORK/log" || fail "no error names --labels and both values" ;;
esac
echo "PASS"
