#!/usr/bin/env bash
# run_tp.sh N COMMAND [ARGS...] - `scalekv COMMAND ARGS --tp N` on N ranks of this machine with
# mpirun: the model is sharded over N ranks (the README's demo uses N = 2). Adds what Open MPI needs
# on a laptop or CI box (--oversubscribe for more ranks than cores, --allow-run-as-root as root).
# Where mpirun is missing it says so and runs the same command on one rank (--tp 1).
#   scripts/run_tp.sh 2 generate --labels 0-9 --out out/demo
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SKV=${SKV_BIN:-$ROOT/build/bin/scalekv}
N=${1:?usage: run_tp.sh N COMMAND [ARGS...]}
shift
[ -x "$SKV" ] || { echo "run_tp.sh: $SKV is missing: build first (cmake -S . -B build -G Ninja && ninja -C build)" >&2; exit 1; }
if ! command -v mpirun > /dev/null; then
  echo "run_tp.sh: mpirun is not installed, so this runs on 1 rank without tensor parallelism" \
       "(install Open MPI: sudo apt-get install openmpi-bin, or scripts/setup.sh)" >&2
  exec "$SKV" "$@"
fi
flags=()
if mpirun --version 2>&1 | grep -q "Open MPI"; then
  flags+=(--oversubscribe)
  [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
fi
exec mpirun -n "$N" "${flags[@]}" "$SKV" "$@" --tp "$N"
