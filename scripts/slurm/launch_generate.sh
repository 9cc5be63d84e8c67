#!/usr/bin/env bash
# launch_generate.sh - the body of the Slurm batch scripts (generate.sbatch, generate-multinode.sbatch):
# inside an allocation, starts one `scalekv generate` rank per task with srun --mpi=pmix. The first
# TP ranks form one model replica, the next TP ranks the next, and so on (srun's block distribution
# keeps a replica on one node); replicas split the labels. --kill-on-bad-exit ends the step when a
# rank fails, and scalekv itself calls MPI_Abort on the first error, so a failed job never hangs.
#
# Variables (all optional):
#   SKV_ROOT    repository (default: the submit directory)      SKV_BIN   the scalekv binary (default: build/bin/scalekv)
#   MODEL WEIGHTS VAE   model config + weights + VAE (default: the shipped demo model)
#   LABELS      class labels, e.g. 0-9 or 0-999x2 (default 0-9)   SEED      sampling seed (default 0)
#   KV_POLICY   --kv-policy (default: the program's)            BUDGET    --kv-budget (builds that have it)
#   OUT         output folder (default: out/<job name>-<job id>)
#   TP          tensor-parallel size (default: every task of the job); tasks / TP replicas
#   DEVICE      cpu or cuda (one GPU per task: the GPU is the task's node-local rank)
#   LOG_DIR     per-rank logs <job name>-<job id>-rank<r>.log (default: logs/)
#   SRUN_ARGS   extra srun options; EXTRA_ARGS extra scalekv generate options
set -uo pipefail
: "${SLURM_JOB_ID:?launch_generate.sh runs inside a Slurm allocation: submit generate.sbatch with sbatch}"
ROOT=${SKV_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
SKV_BIN=${SKV_BIN:-$ROOT/build/bin/scalekv}
NTASKS=${SLURM_NTASKS:-1}
TP=${TP:-$NTASKS}
DEVICE=${DEVICE:-cpu}
JOB="${SLURM_JOB_NAME:-scalekv}-${SLURM_JOB_ID}"
OUT=${OUT:-$ROOT/out/$JOB}
LOG_DIR=${LOG_DIR:-$ROOT/logs}

[ -x "$SKV_BIN" ] || { echo "error: $SKV_BIN is not an executable (set SKV_BIN or build first)" >&2; exit 2; }
if (( NTASKS % TP != 0 )); then
  echo "error: TP=$TP does not divide the $NTASKS tasks of job $SLURM_JOB_ID (tasks = TP x replicas)" >&2
  exit 2
fi
mkdir -p "$OUT" "$LOG_DIR"

args=(generate --tp "$TP" --device "$DEVICE" --labels "${LABELS:-0-9}" --seed "${SEED:-0}" --out "$OUT")
if [ -n "${MODEL:-}" ]; then
  args+=(--model "$MODEL" --weights "${WEIGHTS:?WEIGHTS is required with MODEL}" --vae "${VAE:?VAE is required with MODEL}")
fi
[ -n "${KV_POLICY:-}" ] && args+=(--kv-policy "$KV_POLICY")
[ -n "${BUDGET:-}" ] && args+=(--kv-budget "$BUDGET")
# CPU threads per rank: the cores Slurm gave each task.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

echo "job $SLURM_JOB_ID: $NTASKS tasks on ${SLURM_JOB_NUM_NODES:-1} node(s) (${SLURM_JOB_NODELIST:-?}), TP $TP," \
     "$((NTASKS / TP)) replica(s), device $DEVICE, $OMP_NUM_THREADS thread(s)/rank"
echo "job $SLURM_JOB_ID: rank logs $LOG_DIR/$JOB-rank<r>.log, images $OUT"
# shellcheck disable=SC2086  # SRUN_ARGS and EXTRA_ARGS are word lists
srun --mpi=pmix --kill-on-bad-exit=1 --distribution=block --output="$LOG_DIR/$JOB-rank%t.log" ${SRUN_ARGS:-} \
  "$SKV_BIN" "${args[@]}" ${EXTRA_ARGS:-}
rc=$?
echo "job $SLURM_JOB_ID: srun exited with $rc"
for f in "$LOG_DIR/$JOB"-rank*.log; do
  [ -f "$f" ] && grep -h "^error:" "$f" | head -3
done
exit $rc
