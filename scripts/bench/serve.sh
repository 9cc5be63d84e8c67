#!/usr/bin/env bash
# serve.sh - the HTTP server under load: `scalekv serve` on loopback, driven by open-loop Poisson arrivals
# (scripts/bench/serve_client.py, stdlib Python; its header says why not hey or aiperf) at several rates,
# full cache vs ScaleKV 10 % at the same --kv-memory, continuous batching (the server's default).
#   scripts/bench/serve.sh [OUT_DIR] [QUICK]        SKV=path/to/scalekv (default build/bin/scalekv)
# Models (each cap 4 full-cache requests at their planned KV peak, as serve_bench.sh): the shipped demo model
# (10 MiB; 10, 20 and 40 requests/s, 200 requests each) and the VAR-d16 shape with random weights at
# 256x256, depth REDUCED to 4 (124 MiB; 0.1, 0.2 and 0.5 requests/s, 20 requests each: one
# image takes about 5 s there on 2 quiet cores, so 0.1/s is under its throughput and 0.5/s over it).
# One server process per run (model x policy x rate), so the /metrics KV peak (a since-start gauge) is that
# run's (plus the server's one warm-up request); each waits for /ready, takes the run, gets SIGTERM and must
# exit 0 (drained). --max-queue is set above the request count, so nothing is refused with 429 and every
# row's latencies cover all its requests. QUICK=1: every run tiny (a smoke check).
# Writes OUT_DIR/runs/NAME.json (the client's summary plus the server command, machine load before and
# after), OUT_DIR/runs/NAME.server.log, OUT_DIR/serve_http.md and OUT_DIR/serve_http_latency.png.
# Takes about 17 minutes on 2 quiet cores (QUICK: about 1). RESUME=1 keeps the runs whose JSON is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-bench-results/serve-http}
quick=${2:-0}
skv=${SKV:-build/bin/scalekv}
[ -x "$skv" ] || { echo "serve.sh: $skv is missing: build first (scripts/test.sh or cmake --build build), or set SKV"; exit 1; }
/usr/bin/python3 -c "import matplotlib" 2>/dev/null || scripts/setup.sh --torch  # the plot
mkdir -p "$out/runs"
threads=$(nproc)
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads SKV_PROGRESS=0
scalekv_10=(--kv-policy scalekv --kv-budget 10%)
source scripts/bench/full_cap.sh  # full_cap N CONFIG [DEPTH]: N full-cache requests' planned KV peak

# Machine and build, once (the table's header reads it): the same description `scalekv bench` writes (CPU,
# cores, BLAS, build type), from a one-request `bench serve` of the demo model, plus memory and the OS.
"$skv" bench serve --labels 0 --seed 1 --kv-memory 10MiB --json "$out/machine_probe.json" >/dev/null
/usr/bin/python3 - "$out/machine.json" "$out/machine_probe.json" "$skv" <<'EOF'
import json, os, platform, sys
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
probe = json.load(open(sys.argv[2]))
json.dump({"machine": probe["machine"], "memory_gib": round(mem / 2**20, 1), "os": platform.platform(),
           "python": platform.python_version(), "binary": sys.argv[3]}, open(sys.argv[1], "w"), indent=1)
os.remove(sys.argv[2])
EOF

run() {  # run NAME RATE REQUESTS TIMEOUT SERVER_ARGS...: one server, one client run, SIGTERM, exit 0
  local name=$1 rate=$2 requests=$3 timeout=$4
  shift 4
  if [ "${RESUME:-0}" = 1 ] && [ -s "$out/runs/$name.json" ]; then echo "serve.sh: $name (kept)"; return; fi
  echo "serve.sh: $name (rate $rate/s, $requests requests)"
  local pf="$out/runs/$name.port" log="$out/runs/$name.server.log"
  rm -f "$pf" "$out/runs/$name.json"
  local cmd=("$skv" serve --host 127.0.0.1 --port 0 --port-file "$pf" --max-queue $((requests + 100)) "$@")
  "${cmd[@]}" >"$log" 2>&1 &
  local pid=$!
  local port="" t
  for t in $(seq 1200); do  # up to 10 minutes: load + one warm-up request
    if ! kill -0 "$pid" 2>/dev/null; then
      local erc=0
      wait "$pid" || erc=$?
      echo "serve.sh: $name: the server exited with status $erc before it was ready; its log:"
      cat "$log"
      exit 1
    fi
    if [ -s "$pf" ]; then
      port=$(cat "$pf")
      curl -sf -m 10 "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    fi
    sleep 0.5
  done
  curl -sf -m 10 "http://127.0.0.1:$port/ready" >/dev/null || { echo "serve.sh: $name: not ready"; kill -TERM "$pid"; exit 1; }
  local load_before load_after crc=0 rc=0
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  /usr/bin/python3 scripts/bench/serve_client.py --url "http://127.0.0.1:$port" --rate "$rate" --requests "$requests" \
    --seed 1 --labels 0-9 --timeout "$timeout" --json "$out/runs/$name.json.client" --records || crc=$?
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  kill -TERM "$pid"
  local w
  for w in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then  # a drain has 30 s (--drain-timeout); more is a hang
    echo "serve.sh: $name: the server is still running 60 s after SIGTERM; SIGKILL"
    kill -KILL "$pid"
    wait "$pid" || true
    rc=hang
  else
    wait "$pid" || rc=$?
  fi
  [ "$rc" = 0 ] || echo "serve.sh: $name: the server exited $rc after SIGTERM (expected 0)"
  [ "$crc" = 0 ] || echo "serve.sh: $name: the client exited $crc (transport errors)"
  /usr/bin/python3 - "$out/runs/$name.json" "$name" "$rc" "$crc" "$load_before" "$load_after" "${cmd[*]}" <<'EOF'
import json, os, sys
path, name, rc, crc, lb, la, cmd = sys.argv[1:]
j = json.load(open(path + ".client"))
j.update({"name": name, "server_exit": int(rc) if rc.isdigit() else rc, "client_exit": int(crc), "loadavg_before": lb, "loadavg_after": la,
          "server_command": cmd})
json.dump(j, open(path, "w"), indent=1)
os.remove(path + ".client")
EOF
  rm -f "$pf"
}

if [ "$quick" = 1 ]; then
  demo_rates=(20); demo_n=20; d16_rates=(0.5); d16_n=2
else
  demo_rates=(10 20 40); demo_n=200; d16_rates=(0.1 0.2 0.5); d16_n=20
fi
demo_cap=$(full_cap 4 models/demo/var-fmnist.config.json)
d16_cap=$(full_cap 4 configs/var-d16.json 4)
demo=(--kv-memory "$demo_cap")
d16=(--model configs/var-d16.json --random-weights --depth 4 --kv-memory "$d16_cap")
# The client's per-request timeout: a few times the worst latency a healthy run shows (an answer that never
# comes, e.g. a lost one, costs this much wall time and counts as a transport error).
for rate in "${demo_rates[@]}"; do
  run "demo_full_r$rate" "$rate" "$demo_n" 60 "${demo[@]}"
  run "demo_scalekv_r$rate" "$rate" "$demo_n" 60 "${demo[@]}" "${scalekv_10[@]}"
done
for rate in "${d16_rates[@]}"; do
  run "d16_full_r$rate" "$rate" "$d16_n" 300 "${d16[@]}"
  run "d16_scalekv_r$rate" "$rate" "$d16_n" 300 "${d16[@]}" "${scalekv_10[@]}"
done
/usr/bin/python3 scripts/bench/serve_http_table.py "$out"
