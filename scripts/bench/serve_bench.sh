#!/usr/bin/env bash
# serve_bench.sh - the engine under load: `scalekv bench serve` (Poisson arrivals replayed in one process)
# in sequential, static and continuous mode, full cache vs ScaleKV 10 %, at several arrival rates, under
# one KV cap per model; then a burst that shows how many requests each policy holds in flight at that cap.
#   scripts/bench/serve_bench.sh [OUT_DIR] [QUICK]   SKV=path/to/scalekv (default build/bin/scalekv)
# Every cap is 4 full-cache requests at their planned KV peak (`scalekv plan`, so the caps follow the plan
# when it changes): the shipped demo model (40 requests, 4 x 2.5 = 10 MiB) and the VAR-d16 shape with
# random weights at 256x256 (depth reduced to 4 for the latency runs, 20 requests, 4 x 31 = 124 MiB; the
# bursts run the full depth 16, 60 requests, 4 x 110 = 440 MiB). QUICK=1 runs the demo model only. Writes
# OUT_DIR/serve_bench.md, OUT_DIR/serve_latency.png and one JSON per run (OUT_DIR/runs/). Takes about 45
# minutes on 2 cores (QUICK: 2 minutes). RESUME=1 keeps the runs whose JSON is already there (a long run
# that was interrupted).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-results/serve}
quick=${2:-0}
skv=${SKV:-build/bin/scalekv}
[ -x "$skv" ] || { echo "serve_bench.sh: $skv is missing: build first (scripts/test.sh or cmake --build build), or set SKV"; exit 1; }
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || scripts/setup.sh --torch  # the plot
mkdir -p "$out/runs"
threads=$(nproc)
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads SKV_PROGRESS=0
scalekv_10=(--kv-policy scalekv --kv-budget 10%)

source scripts/bench/full_cap.sh  # full_cap N CONFIG [DEPTH]: N full-cache requests' planned KV peak

run() {  # run NAME ARGS...: one bench serve run, its JSON in runs/NAME.json
  local name=$1
  shift
  if [ "${RESUME:-0}" = 1 ] && [ -s "$out/runs/$name.json" ]; then echo "serve_bench: $name (kept)"; return; fi
  echo "serve_bench: $name"
  "$skv" bench serve "$@" --json "$out/runs/$name.json" >/dev/null
}

# The demo model: every mode and both policies at rates from light to past saturation.
demo_cap=$(full_cap 4 models/demo/var-fmnist.config.json)
demo=(--labels 0-9x4 --seed 1 --kv-memory "$demo_cap")
for rate in 2 5 10 20 40 80; do
  for mode in static continuous; do
    run "demo_${mode}_full_r$rate" "${demo[@]}" --mode $mode --rate $rate
    run "demo_${mode}_scalekv_r$rate" "${demo[@]}" --mode $mode --rate $rate "${scalekv_10[@]}"
  done
done
for rate in 2 40; do
  run "demo_sequential_full_r$rate" "${demo[@]}" --mode sequential --rate $rate
  run "demo_sequential_scalekv_r$rate" "${demo[@]}" --mode sequential --rate $rate "${scalekv_10[@]}"
done
run demo_burst_full "${demo[@]}" --rate 0
run demo_burst_scalekv "${demo[@]}" --rate 0 "${scalekv_10[@]}"

if [ "$quick" != 1 ]; then
  d16_cap=$(full_cap 4 configs/var-d16.json 4)
  d16=(--model configs/var-d16.json --random-weights --depth 4 --labels 0-9x2 --seed 1 --kv-memory "$d16_cap")
  for rate in 0.2 2; do
    for mode in sequential static continuous; do
      run "d16_${mode}_full_r$rate" "${d16[@]}" --mode $mode --rate $rate
      run "d16_${mode}_scalekv_r$rate" "${d16[@]}" --mode $mode --rate $rate "${scalekv_10[@]}"
    done
  done
  # 60 requests: ScaleKV holds about 29 at this cap, so the cap, not the request count, is its limit.
  burst_cap=$(full_cap 4 configs/var-d16.json)
  burst=(--model configs/var-d16.json --random-weights --labels 0-9x6 --seed 1 --kv-memory "$burst_cap" --rate 0)
  run d16full_burst_full "${burst[@]}"
  run d16full_burst_scalekv "${burst[@]}" "${scalekv_10[@]}"
fi
/usr/bin/python3 scripts/bench/serve_table.py "$out"
