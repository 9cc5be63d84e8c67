#!/usr/bin/env bash
# cli_bench_serve.sh - `scalekv bench serve` replays arrivals against the engine: request i writes the PNG
# of image i of `scalekv generate` (same labels, seed and policy; within 1 level), for three policies, in
# all three modes, at TP 1 and TP 2; a burst of 200 requests keeps the measured KV peak under the cap and holds
# as many in flight as `scalekv plan --kv-memory` predicts; the JSON has its fields; bad options are one-line
# errors.
set -uo pipefail
. "$(dirname "$0")/cli_common.sh"
make_tiny_model
common=("${MODEL_ARGS[@]}" --labels 0-4x4 --seed 5)

# check_json FILE IMAGES: the summary's fields, and the KV peak at or under the cap.
check_json() {
  python3 - "$1" "$2" <<'PY' || fail "$1: bad summary"
import json, sys
j = json.load(open(sys.argv[1]))
for k in ("images", "seconds", "images_per_s", "latency_p50_s", "latency_p99_s", "queue_p50_s", "max_in_flight",
          "kv_peak_bytes", "kv_cap_bytes"):
    assert k in j, f"no {k}"
assert j["images"] == int(sys.argv[2]), j["images"]
assert 0 < j["kv_peak_bytes"] <= j["kv_cap_bytes"], (j["kv_peak_bytes"], j["kv_cap_bytes"])
assert j["latency_p50_s"] <= j["latency_p99_s"]
print(sys.argv[1], "ok:", j["mode"], j["kv_policy"], "in flight", j["max_in_flight"], "KV", j["kv_peak_bytes"],
      "of", j["kv_cap_bytes"])
PY
}

i=0
for policy in "full" "scalekv --kv-budget 50% --kv-window 4" "snapkv --kv-budget 40% --kv-window 4"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$SCALEKV" generate "${common[@]}" --kv-policy $policy --out "$WORK/gen$i" >/dev/null || fail "generate ($policy)"
  rm -f "$WORK/gen$i/labels.json"
  for mode in continuous static sequential; do
    # shellcheck disable=SC2086
    "$SCALEKV" bench serve "${common[@]}" --kv-policy $policy --mode $mode --rate 400 --kv-memory 150KiB \
      --out "$WORK/serve$i$mode" --json "$WORK/serve$i$mode.json" || fail "bench serve ($policy, $mode)"
    "$PNG_DIFF" "$WORK/gen$i" "$WORK/serve$i$mode" 1 || fail "bench serve ($policy, $mode) differs from generate"
    check_json "$WORK/serve$i$mode.json" 20
  done
done
python3 -c "import json, sys; j = json.load(open(sys.argv[1])); assert j['max_in_flight'] == 1, j" \
  "$WORK/serve1sequential.json" || fail "sequential mode had more than one request in flight"

# TP 2: the plan goes from rank 0 to rank 1 every iteration; images equal TP 1's generate.
mpirun_n 2 "$SCALEKV" bench serve "${common[@]}" --kv-policy scalekv --kv-budget 50% --kv-window 4 --tp 2 \
  --rate 400 --kv-memory 150KiB --out "$WORK/serve_tp2" --json "$WORK/serve_tp2.json" || fail "TP 2 bench serve"
"$PNG_DIFF" "$WORK/gen2" "$WORK/serve_tp2" 1 || fail "TP 2 bench serve differs from generate"
check_json "$WORK/serve_tp2.json" 20

# Two data-parallel replicas of TP 1: request i runs on replica i % 2, each writes its own PNGs; world rank 0
# reports the whole trace (every request's latency), and both replicas ran requests.
mpirun_n 2 "$SCALEKV" bench serve "${common[@]}" --kv-policy scalekv --kv-budget 50% --kv-window 4 --tp 1 \
  --rate 400 --kv-memory 150KiB --out "$WORK/serve_dp2" --json "$WORK/serve_dp2.json" || fail "2 replicas bench serve"
"$PNG_DIFF" "$WORK/gen2" "$WORK/serve_dp2" 1 || fail "2 replicas: bench serve differs from generate"
check_json "$WORK/serve_dp2.json" 20
python3 -c "import json, sys; j = json.load(open(sys.argv[1])); r = j['per_replica']
assert j['replicas'] == 2 and len(r) == 2 and all(x['iterations'] > 0 and 0 < x['kv_peak_bytes'] <= x['kv_cap_bytes'] for x in r), j
assert j['max_in_flight'] == sum(x['max_in_flight'] for x in r), j" "$WORK/serve_dp2.json" || fail "2 replicas: the summary"

# Every request's CFG and sampling from the command line: generate's images with the same options.
"$SCALEKV" generate "${common[@]}" --cfg 2.5 --top-k 3 --top-p 0.9 --out "$WORK/gen_cfg" >/dev/null || fail "generate --cfg"
rm -f "$WORK/gen_cfg/labels.json"
"$SCALEKV" bench serve "${common[@]}" --cfg 2.5 --top-k 3 --top-p 0.9 --rate 400 --kv-memory 150KiB \
  --out "$WORK/serve_cfg" --json "$WORK/serve_cfg.json" || fail "bench serve --cfg"
"$PNG_DIFF" "$WORK/gen_cfg" "$WORK/serve_cfg" 1 || fail "bench serve --cfg 2.5 --top-k 3 --top-p 0.9 differs from generate"
cmp -s "$WORK/gen1/0000_c0.png" "$WORK/serve_cfg/0000_c0.png" && fail "--cfg/--top-k/--top-p changed nothing"

# A burst of 200 requests into a cap of about three full-cache requests: nothing passes the cap.
"$SCALEKV" bench serve "${MODEL_ARGS[@]}" --labels 0-4x40 --seed 1 --kv-memory 150KiB --json "$WORK/burst.json" \
  || fail "burst"
check_json "$WORK/burst.json" 200
# `scalekv plan --kv-memory` replays the same admission on the plans: its figure is the burst's measured one.
# plan_burst JSON KEY KV-OPTIONS...: the plan's figure KEY equals the run's max_in_flight.
plan_burst() {
  local json=$1 key=$2
  shift 2
  "$SCALEKV" plan --model "$WORK/tiny.config.json" --kv-memory 150KiB "$@" --json > "$WORK/plan_burst.json" \
    || fail "plan --kv-memory $*"
  python3 -c "import json, sys; p = json.load(open(sys.argv[1])); j = json.load(open(sys.argv[2]))
assert p[sys.argv[3]] == j['max_in_flight'] > 0, (p[sys.argv[3]], j['max_in_flight'])" "$WORK/plan_burst.json" "$json" "$key" \
    || fail "plan --kv-memory $* predicts another concurrency than the burst measured"
}
plan_burst "$WORK/burst.json" full_burst_in_flight
skv_burst=(--kv-policy scalekv --kv-budget 50% --kv-window 4)
"$SCALEKV" bench serve "${MODEL_ARGS[@]}" --labels 0-4x40 --seed 1 --kv-memory 150KiB "${skv_burst[@]}" \
  --json "$WORK/burst_skv.json" || fail "ScaleKV burst"
check_json "$WORK/burst_skv.json" 200
plan_burst "$WORK/burst_skv.json" burst_in_flight "${skv_burst[@]}"

expect_bench_serve_error "can never run" --kv-memory 10KiB
expect_bench_serve_error "is not a memory size" --kv-memory 12parsecs
expect_bench_serve_error "give --kv-memory BYTES" --rate 1
expect_bench_serve_error "--mode 'fast'" --kv-memory 1MiB --mode fast
expect_bench_serve_error "--rate -1" --kv-memory 1MiB --rate -1
expect_bench_serve_error "--top-p 2 must be in" --kv-memory 1MiB --top-p 2
echo "PASS"
