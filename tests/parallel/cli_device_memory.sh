#!/usr/bin/env bash
# cli_device_memory.sh - `bench serve --device-memory`: the engine measures what is resident (weights, the
# decoder's probe) and admits requests into what is left, counting every request's KV, its conditioning,
# activations and decode (engine/request_memory.h). Checked against the allocator: the measured peak of
# all bytes stays under the device memory, for the tiny VAR model (a burst of 200, full and ScaleKV, TP 1
# and TP 2), the demo model and, when the golden folder is there, the tiny Infinity model; images still
# equal generate's; `generate --device-memory` admits the same way; `serve --device-memory` starts and
# answers; too little memory is a one-line error.
#   cli_device_memory.sh SCALEKV PNG_DIFF MPIEXEC NUMPROC_FLAG OVERSUBSCRIBE_FLAG GOLDEN_DIR DEMO_DIR
set -uo pipefail
. "$(dirname "$0")/cli_common.sh"
G=$6
DEMO=$7
make_tiny_model

# fields FILE: "resident planned" bytes of a lone request (its planned peak above what is resident).
lone() {
  python3 -c "import json, sys; j = json.load(open(sys.argv[1])); print(j['resident_bytes'], j['memory_planned_peak_bytes'])" "$1"
}

# check FILE IMAGES MIN_IN_FLIGHT: the measured peak of all bytes, and the planned one, under the device memory;
# the KV peak under its cap.
check() {
  python3 - "$@" <<'PY' || fail "$1: bad summary"
import json, sys
j = json.load(open(sys.argv[1]))
M = 2 ** 20
assert j["images"] == int(sys.argv[2]), j["images"]
d, peak = j["device_memory_bytes"], j["memory_peak_bytes"]
planned = j["resident_bytes"] + j["memory_planned_peak_bytes"]
assert 0 < j["resident_bytes"] < peak <= d, f"peak {peak / M:.2f} MiB, device {d / M:.2f} MiB"
assert planned <= d, f"planned {planned / M:.2f} MiB > device {d / M:.2f} MiB"
assert j["memory_cap_bytes"] == d - j["resident_bytes"], j
assert 0 < j["kv_peak_bytes"] <= j["kv_cap_bytes"] <= j["memory_cap_bytes"], j
assert j["max_in_flight"] >= int(sys.argv[3]), f"only {j['max_in_flight']} in flight"
print(sys.argv[1], f"ok: {j['kv_policy']}, {j['max_in_flight']} in flight, measured {peak / M:.2f} MiB, planned "
      f"{planned / M:.2f} MiB, device {d / M:.2f} MiB (resident {j['resident_bytes'] / M:.2f} MiB)")
PY
}

# run NAME DEVICE ARGS...: bench serve with --device-memory DEVICE (bytes).
run() {
  local name=$1 dev=$2
  shift 2
  "$SCALEKV" bench serve "$@" --device-memory "$dev" --json "$WORK/$name.json" > "$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log"; fail "bench serve $name"; }
}

# 1. Tiny VAR: a lone request tells what is resident and what one request plans; a device of resident + 2.5
#    such requests makes admission the limit. Images equal generate's.
run lone 1GiB "${MODEL_ARGS[@]}" --labels 0 --mode sequential
read -r RES ONE < <(lone "$WORK/lone.json")
DEV=$((RES + ONE * 5 / 2))
TOO_SMALL=$((RES + ONE / 2))  # above what is resident, below one request
SERVE_DEV=$((RES + ONE * 4))  # room for a request of 3 images
"$SCALEKV" generate "${MODEL_ARGS[@]}" --labels 0-4x4 --seed 5 --out "$WORK/gen" >/dev/null || fail "generate"
rm -f "$WORK/gen/labels.json"
run tiny "$DEV" "${MODEL_ARGS[@]}" --labels 0-4x4 --seed 5 --rate 400 --out "$WORK/tiny"
"$PNG_DIFF" "$WORK/gen" "$WORK/tiny" 1 || fail "bench serve --device-memory differs from generate"
check "$WORK/tiny.json" 20 2
# generate --device-memory: the same engine admission, the same images, the figures on its last line.
"$SCALEKV" generate "${MODEL_ARGS[@]}" --labels 0-4x4 --seed 5 --device-memory "$DEV" --out "$WORK/gen_dev" \
  > "$WORK/gen_dev.log" 2>&1 || { cat "$WORK/gen_dev.log"; fail "generate --device-memory"; }
rm -f "$WORK/gen_dev/labels.json"
"$PNG_DIFF" "$WORK/gen" "$WORK/gen_dev" 0 || fail "generate --device-memory differs from generate"
grep -q "requests admitted into" "$WORK/gen_dev.log" || fail "generate --device-memory: no figures: $(cat "$WORK/gen_dev.log")"
for policy in "full" "scalekv --kv-budget 30% --kv-window 2"; do  # a burst of 200 at once
  # shellcheck disable=SC2086
  run "burst_${policy%% *}" "$DEV" "${MODEL_ARGS[@]}" --labels 0-4x40 --seed 1 --kv-policy $policy
  check "$WORK/burst_${policy%% *}.json" 200 2
done

# 2. TP 2: each rank measures its own; the cap is what the fuller rank leaves, the peak the larger rank's.
mpirun_n 2 "$SCALEKV" bench serve "${MODEL_ARGS[@]}" --labels 0-4x4 --seed 5 --tp 2 --rate 400 --device-memory "$DEV" \
  --out "$WORK/tp2" --json "$WORK/tp2.json" > "$WORK/tp2.log" 2>&1 || { cat "$WORK/tp2.log"; fail "TP 2"; }
"$PNG_DIFF" "$WORK/gen" "$WORK/tp2" 1 || fail "TP 2 bench serve --device-memory differs from generate"
check "$WORK/tp2.json" 20 2

# 3. The demo model (a real decoder: its probe is most of a request's memory).
if [ -f "$DEMO/var-fmnist.config.json" ]; then
  demo=(--model "$DEMO/var-fmnist.config.json" --weights "$DEMO/var-fmnist.var.safetensors"
        --vae "$DEMO/var-fmnist.vae.safetensors")
  run demo_lone 1GiB "${demo[@]}" --labels 0 --mode sequential
  read -r RES ONE < <(lone "$WORK/demo_lone.json")
  run demo $((RES + ONE * 3)) "${demo[@]}" --labels 0-9x4 --kv-policy scalekv --kv-budget 10%
  check "$WORK/demo.json" 40 2
else
  echo "no demo model in $DEMO: its case is skipped"
fi

# 4. Infinity (cross-attention K/V of its prompts, RoPE, bit sampling), when the golden folder has its model.
if [ -f "$G/infinity-tiny.config.json" ]; then
  write_text_embeddings "$WORK/text.safetensors" 2 3 7 5 4 6 9
  inf=(--model "$G/infinity-tiny.config.json" --weights "$G/infinity-tiny.model.safetensors"
       --vae "$G/infinity-tiny.vae.safetensors" --text-embeddings "$WORK/text.safetensors" --resolution 256)
  run inf_lone 4GiB "${inf[@]}" --mode sequential
  read -r RES ONE < <(lone "$WORK/inf_lone.json")
  run inf $((RES + ONE * 5 / 2)) "${inf[@]}"
  check "$WORK/inf.json" 6 2
  "$SCALEKV" generate "${inf[@]}" --device-memory $((RES + ONE * 5 / 2)) --out "$WORK/inf_gen" > "$WORK/inf_gen.log" 2>&1 ||
    { cat "$WORK/inf_gen.log"; fail "Infinity generate --device-memory"; }
  grep -q "wrote 6 PNGs" "$WORK/inf_gen.log" && grep -q "requests admitted into" "$WORK/inf_gen.log" ||
    fail "Infinity generate --device-memory: $(cat "$WORK/inf_gen.log")"
else
  echo "no $G/infinity-tiny.config.json: the Infinity case is skipped"
fi

# 5. serve --device-memory: the cap is derived at start (the line says so), a request of 3 images is answered,
#    /metrics exports the derived cap; SIGTERM drains.
"$SCALEKV" serve "${MODEL_ARGS[@]}" --port 0 --port-file "$WORK/port" --device-memory "$SERVE_DEV" > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/port" ] && curl -sf "localhost:$(cat "$WORK/port")/ready" >/dev/null && break; sleep 0.2; done
PORT=$(cat "$WORK/port" 2>/dev/null)
code=$(curl -s -o "$WORK/answer.json" -w '%{http_code}' "localhost:$PORT/v1/images/generations" -d '{"prompt": "2", "n": 3}')
metrics=$(curl -s "localhost:$PORT/metrics")
cap=$(awk '/^scalekv_kv_bytes_capacity/ {print $2}' <<<"$metrics")
mcap=$(awk '/^scalekv_memory_bytes_capacity/ {print $2}' <<<"$metrics")
mpeak=$(awk '/^scalekv_memory_bytes_peak/ {print $2}' <<<"$metrics")
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve --device-memory exited $?: $(cat "$WORK/serve.log")"
[ "$code" = 200 ] || fail "serve --device-memory answered $code: $(cat "$WORK/answer.json")"
python3 -c "import json, sys; assert len(json.load(open(sys.argv[1]))['data']) == 3" "$WORK/answer.json" ||
  fail "serve --device-memory: not 3 images"
grep -q "device memory .* resident, requests admitted into" "$WORK/serve.log" || fail "serve: no derived cap: $(cat "$WORK/serve.log")"
python3 -c "import sys; c = float(sys.argv[1]); assert 0 < c < int(sys.argv[2]), c" "${cap:-0}" "$SERVE_DEV" ||
  fail "serve: /metrics capacity '$cap' is not the derived cap (under $SERVE_DEV)"
python3 -c "import sys; c, p, d = (float(x) for x in sys.argv[1:]); assert 0 < c < d and 0 < p <= d, (c, p, d)" \
  "${mcap:-0}" "${mpeak:-0}" "$SERVE_DEV" || fail "serve: /metrics memory capacity '$mcap' / peak '$mpeak' (device $SERVE_DEV)"

# 6. Too little memory: one line naming --device-memory.
expect_bench_serve_error "leaves nothing for requests" --device-memory 1KiB
expect_bench_serve_error "can never run" --device-memory "$TOO_SMALL"
expect_bench_serve_error "is not a memory size" --device-memory 12parsecs
echo "PASS"
