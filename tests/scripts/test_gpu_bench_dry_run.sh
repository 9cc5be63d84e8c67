#!/usr/bin/env bash
# The GPU day's script must be ready before the GPU is: `scripts/bench/gpu_bench.sh --dry-run` passes
# with this build's scalekv, and fails - exit non-zero, ONE line naming the step - when a command line
# is invalid or an input is missing. Each failure case below breaks one thing:
#   an option scalekv does not have          -> both bench steps, caught by the parser
#   a value the bench rejects                -> both bench steps, caught by the exact command or the twin
#   a value only the run rejects (h/w 0.6)   -> both bench steps, caught by the CPU twin
#   a golden folder with a file missing      -> golden-memcheck
#   a model config that is not there         -> both bench steps
#   test_gpu_bench_dry_run.sh BINARY_DIR [GOLDEN_DIR]   (BINARY_DIR/bin/scalekv must exist; GOLDEN_DIR
#   defaults to ../shared/golden next to the repository)
set -uo pipefail
bin_dir=$(cd "${1:?usage: test_gpu_bench_dry_run.sh BINARY_DIR}" && pwd) || exit 1
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
script=$src/scripts/bench/gpu_bench.sh
golden=${2:-$src/../shared/golden}
[ -x "$bin_dir/bin/scalekv" ] || { echo "FAIL: no $bin_dir/bin/scalekv"; exit 1; }
[ -d "$golden" ] || { echo "SKIP: golden folder $golden is absent"; exit 77; }
golden=$(cd "$golden" && pwd)  # absolute: the copies below link to it
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0

# run_dry NAME [ENV=VALUE...] -- [ARGS...]: the dry run with this build, output in $work/NAME.out
run_dry() {
  local name=$1; shift
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local t=$SECONDS
  env ${envs[@]+"${envs[@]}"} timeout 170 bash "$script" --dry-run --build-dir "$bin_dir" --golden "$golden" "$@" \
    > "$work/$name.out" 2>&1
  rc=$?
  secs=$((SECONDS - t))
}
show() { sed 's/^/    | /' "$work/$1.out"; }

# expect_fail NAME STEP PATTERN [ENV...] -- [ARGS...]: non-zero exit, exactly one FAIL line for STEP
# (matching PATTERN), and no FAIL line for a step that should pass (EXTRA_OK_STEP, if set).
expect_fail() {
  local name=$1 step=$2 pat=$3; shift 3
  run_dry "$name" "$@"
  local lines
  lines=$(grep -c "^gpu_bench.sh --dry-run: FAIL $step: " "$work/$name.out")
  if [ $rc -eq 0 ] || [ $rc -ge 124 ] || [ "$lines" -ne 1 ] ||
     ! grep "^gpu_bench.sh --dry-run: FAIL $step: " "$work/$name.out" | grep -q -- "$pat"; then
    echo "FAIL $name: expected exit != 0 and one line 'FAIL $step: ...$pat...' (exit $rc, $lines line(s)):"; show "$name"
    fails=$((fails + 1))
  elif [ -n "${ok_step:-}" ] && grep -q "FAIL $ok_step:" "$work/$name.out"; then
    echo "FAIL $name: $ok_step should still pass:"; show "$name"; fails=$((fails + 1))
  else
    echo "ok   $name ($secs s): $(grep -m1 "FAIL $step: " "$work/$name.out" | cut -c1-220)"
  fi
}

# 1. This build, the real inputs: valid, in well under a minute.
run_dry valid --
if [ $rc -ne 0 ] || ! tail -1 "$work/valid.out" | grep -q "every step's command line is valid"; then
  echo "FAIL valid: the dry run of this build fails (exit $rc):"; show valid; fails=$((fails + 1))
else
  steps=$(grep -cE '^ok +(gpu|configure|build|unit-memcheck|unit-racecheck|golden-memcheck|plan|bench-full|bench-scalekv) ' "$work/valid.out")
  if [ "$steps" -ne 9 ]; then echo "FAIL valid: $steps of 9 steps checked:"; show valid; fails=$((fails + 1))
  else echo "ok   valid ($secs s), exit 0:"; show valid; fi
  [ $secs -lt 60 ] || { echo "FAIL valid: the dry run took $secs s (must be well under a minute)"; fails=$((fails + 1)); }
fi

# 2. An option scalekv bench does not have (a typo of --kv-budget).
expect_fail unknown_option bench-full 'kv-budjet' GPU_BENCH_DRY_QUICK=1 'GPU_BENCH_EXTRA_BENCH_ARGS=--kv-budjet 10%' --
expect_fail unknown_option_2 bench-scalekv 'kv-budjet' GPU_BENCH_DRY_QUICK=1 'GPU_BENCH_EXTRA_BENCH_ARGS=--kv-budjet 10%' --

# 3. A value the parser takes but the bench refuses (before or after it asks for the GPU, depending on
#    the build: the exact command or the CPU twin must catch it).
expect_fail bad_text_len bench-full 'text-len 0' 'GPU_BENCH_EXTRA_BENCH_ARGS=--text-len 0' --

# 4. A value only the run itself checks (an aspect ratio outside Infinity's table, found when the
#    schedule is built, after the device check): only the CPU twin sees it.
expect_fail bad_ratio bench-full 'dynamic-resolution table' 'GPU_BENCH_EXTRA_BENCH_ARGS=--h-div-w 0.6' --

# 5. A copy of the golden folder with one file missing, and one with a truncated file.
mkdir -p "$work/golden" "$work/golden_trunc"
for f in "$golden"/*; do
  ln -s "$f" "$work/golden/$(basename "$f")"
  ln -s "$f" "$work/golden_trunc/$(basename "$f")"
done
rm "$work/golden/var-tiny-a.vae.safetensors"
rm "$work/golden_trunc/var-tiny-a.var.safetensors"
head -c 4096 "$golden/var-tiny-a.var.safetensors" > "$work/golden_trunc/var-tiny-a.var.safetensors"
expect_fail missing_golden golden-memcheck 'var-tiny-a.vae.safetensors is missing' GPU_BENCH_DRY_QUICK=1 -- --golden "$work/golden"
expect_fail truncated_golden golden-memcheck 'var-tiny-a.var.safetensors is not a readable' GPU_BENCH_DRY_QUICK=1 -- --golden "$work/golden_trunc"
expect_fail no_golden_dir golden-memcheck 'is missing' GPU_BENCH_DRY_QUICK=1 -- --golden "$work/none"

# 6. The model config is not there.
expect_fail missing_config bench-full 'infinity-2b.json is missing' GPU_BENCH_DRY_QUICK=1 -- --config "$work/infinity-2b.json"

# 7. Without a GPU the real run refuses at once (exit 77) instead of building (only where there is none).
if ! command -v nvidia-smi > /dev/null; then
  timeout 30 bash "$script" --out "$work/real" > "$work/real.out" 2>&1
  rc=$?
  if [ $rc -ne 77 ] || [ -e "$work/real" ]; then echo "FAIL no_gpu: exit $rc (expected 77, nothing written):"; show real; fails=$((fails + 1))
  else echo "ok   no_gpu: $(cat "$work/real.out")"; fi
fi

[ $fails -eq 0 ] && echo "all gpu_bench.sh dry-run checks passed" || echo "$fails check(s) failed"
[ $fails -eq 0 ]
