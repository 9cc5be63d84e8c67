#!/usr/bin/env bash
# scaling.sh - tensor-parallel scaling of scalekv on this machine's CPUs, and the analytic model of
# the same numbers for 8 GPUs per node over NVLink (Infinity-2B and -8B at 1024x1024).
# Runs `scalekv bench-scaling` at TP 1, 2 and 4 (4 oversubscribed where the machine has fewer cores)
# on a random-weight model of VAR-d16's shape (depth 16, width 1024, 16 heads, 10 scales, 680
# tokens, 256x256 images), each rank with cores/TP threads, and writes one table: wall time per
# image, per-scale time, the share of time in collectives, bytes all-reduced per scale, weights and
# peak RSS per rank. Prints medians of several runs; asserts nothing about time.
#   scripts/bench/scaling.sh [--build DIR] [--work DIR] [--runs N] [--tps "1 2 4"] [--labels 0]
# The work folder keeps the 1.3 GB checkpoint between runs (default /tmp/skv_scaling).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build WORK=/tmp/skv_scaling RUNS=3 TPS="1 2 4" LABELS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --tps) TPS=$2; shift 2 ;;
    --labels) LABELS=$2; shift 2 ;;
    *) echo "scaling.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
SKV=$BUILD/bin/scalekv
[ -x "$SKV" ] || { echo "scaling.sh: build scalekv first ($SKV is missing)" >&2; exit 1; }
mkdir -p "$WORK"

# The VAR-d16 shape (FoundationVision/VAR: depth 16, width 64 x depth, heads = depth). configs/var-d16.json
# is used when the tree has it; otherwise the same numbers are written here, in the work folder.
CFG=$ROOT/configs/var-d16.json
if [ ! -f "$CFG" ]; then
  CFG=$WORK/var-d16.config.json
  cat > "$CFG" <<JSON
{"family": "var", "name": "var-d16 (shape only)", "depth": 16, "embed_dim": 1024, "num_heads": 16, "mlp_ratio": 4.0,
 "norm_eps": 1e-6, "shared_aln": false, "attn_l2_norm": true, "patch_nums": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
 "V": 4096, "Cvae": 32, "num_classes": 1000, "ch": 160, "vae_ch_mult": [1, 1, 2, 2, 4], "image_size": 256,
 "cfg": 1.5, "top_k": 900, "top_p": 0.96}
JSON
fi
NAME=var-d16
if [ ! -f "$WORK/$NAME.var.safetensors" ] || [ "$CFG" -nt "$WORK/$NAME.var.safetensors" ]; then
  echo "scaling.sh: writing a random-weight $NAME checkpoint to $WORK"
  "$SKV" random-checkpoint --model "$CFG" --out "$WORK" --name "$NAME" --seed 1
fi

CORES=$(nproc)
MPIRUN=$(command -v mpirun || true)
OVERSUB=""
if [ -n "$MPIRUN" ] && "$MPIRUN" --version 2>&1 | grep -q "Open MPI"; then
  OVERSUB="--oversubscribe --bind-to none"
  [ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
fi
BUILD_TYPE=$(grep -m1 '^CMAKE_BUILD_TYPE:' "$BUILD/CMakeCache.txt" 2> /dev/null | cut -d= -f2)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)  # other work on the machine shows in wall times, not in CPU s/rank
jsons=()
for tp in $TPS; do
  threads=$(( CORES / tp ))
  (( threads < 1 )) && threads=1
  export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE
  args=(bench-scaling --model "$CFG" --weights "$WORK/$NAME.var.safetensors" --vae "$WORK/$NAME.vae.safetensors"
        --labels "$LABELS" --runs "$RUNS" --warmup 1 --tp "$tp" --json "$WORK/tp$tp.json")
  echo "scaling.sh: TP $tp, $threads thread(s) per rank"
  if [ "$tp" = 1 ]; then
    "$SKV" "${args[@]}"
  else
    [ -n "$MPIRUN" ] || { echo "scaling.sh: TP $tp needs mpirun (apt-get install openmpi-bin)" >&2; exit 1; }
    # shellcheck disable=SC2086
    "$MPIRUN" -n "$tp" $OVERSUB "$SKV" "${args[@]}"
  fi
  jsons+=("$WORK/tp$tp.json")
done

{
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $CORES cores;" \
       "build ${BUILD_TYPE:-?}; $(date -u +%Y-%m-%d); load average $LOAD_START at the start," \
       "$(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo "Command: scripts/bench/scaling.sh --runs $RUNS --tps \"$TPS\" --labels $LABELS (median of $RUNS runs after 1 warm-up)"
  echo
  python3 "$ROOT/scripts/bench/scaling_table.py" "${jsons[@]}"
  echo
  python3 "$ROOT/scripts/bench/tp_model.py"
} | tee "$WORK/scaling.md"
echo "scaling.sh: table written to $WORK/scaling.md"
