#!/usr/bin/env bash
# demo.sh - the README's first command on a fresh Debian machine: installs the dependencies, builds,
# then generates every Fashion-MNIST class with 4 seeds from the shipped demo model (models/demo) twice
# -- full KV cache and ScaleKV at a 10 % budget -- with the model sharded over 2 tensor-parallel ranks
# (mpirun; one rank, with a message, where mpirun is missing). It scores both with scripts/eval and
# writes OUT/demo.png (the two grids side by side, with peak KV, time, PSNR vs full and class
# accuracy above each) and OUT/report.md.
#   scripts/demo.sh [OUT]      (default out/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/demo}
scripts/setup.sh --torch
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j "$(nproc)"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # 2 ranks share this machine's cores
mkdir -p "$out"
gen() {  # gen NAME ARGS...
  local name=$1; shift
  rm -rf "${out:?}/$name"
  echo "demo: $name"
  scripts/run_tp.sh 2 generate --labels 0-9x4 --seed 0 --out "$out/$name" "$@" | tee "$out/$name.log"
}
gen full --kv-policy full
gen scalekv --kv-policy scalekv --kv-budget 10%
/usr/bin/python3 scripts/eval/evaluate.py "$out/full" --json "$out/full.eval.json" > /dev/null
/usr/bin/python3 scripts/eval/evaluate.py "$out/scalekv" --reference "$out/full" --json "$out/scalekv.eval.json" > /dev/null
/usr/bin/python3 scripts/eval/side_by_side.py "$out"
