#!/usr/bin/env bash
# serve_http.sh MODE BUILD_DIR MPIEXEC NUMPROC_FLAG [OVERSUBSCRIBE_FLAG] - `scalekv serve` on loopback, driven
# by real clients (curl, Python's http.client in serve_client.py, hey), on the demo model. Every server is
# started on a free port (--port 0 --port-file) and stopped by its drain signal; its exit code is checked.
#   api    one rank: PNGs equal generate's (n 1 and n 3), SSE previews, every bad-input answer (400 naming
#          the field, 404, 405, 408, 413, 401 with --api-key), 429 with Retry-After from a bounded queue, a
#          request that can never fit (400), queued and mid-stream disconnects cancel and free KV (/metrics)
#   tp     mpiexec -n 2 --tp 2, and -n 4 --tp 2 (two replicas, requests on both): PNGs equal generate's
#   infinity  a tiny Infinity model with the tiny T5 of scripts/make_t5_golden.py (SKV_T5_GOLDEN): text prompts in;
#          PNGs equal `generate --t5 --prompt` (n 1, n 2, another size of the dynamic-resolution table,
#          ScaleKV, streamed), bad prompts and sizes get 400 naming the field; then under mpiexec -n 2 with
#          --tp 2 (the prompt encoded on both ranks) and --tp 1 (two replicas): the same PNGs
#   load   hey: 320 requests (20 per worker) at concurrency 16: zero 5xx, all complete, KV peak <= cap, /health < 100 ms
#          throughout; then SIGTERM under load: every answer is 200 or 503, exit 0 within the drain timeout
#   half_close     clients that half-close (FIN after the request) get their answer, plain and streamed, equal
#          to generate's; a client that closes while its request is queued still cancels it
#   write_timeout  a streamed request whose client stops reading (tiny receive buffer, never reads): with
#          --write-timeout 1 the server resets the connection, cancels the request, frees its KV
#   fail_rank0     SKV_TEST_ENGINE_FAIL_AT_ITERATION: the engine of a one-rank server throws mid-request: the
#          request gets 503 with a JSON error, the process exits non-zero within seconds
#   fail_replica   mpiexec -n 2 --tp 1 (two replicas), rank 1's engine throws: its request gets 503 with a JSON
#          error, the whole job exits non-zero within seconds
set -uo pipefail
MODE=$1
BUILD=$(cd "$2" && pwd)
MPIEXEC=${3:-mpiexec} NP=${4:--n} OVERSUB=${5:-}
SKV=$BUILD/bin/scalekv
PNG_DIFF=$BUILD/bin/skv_png_diff
HERE=$(cd "$(dirname "$0")" && pwd)
CLIENT="python3 $HERE/serve_client.py"
T=$(mktemp -d /tmp/skv_serve_XXXXXX)
SERVERS=()
cleanup() {
  for p in "${SERVERS[@]}"; do kill -KILL "$p" 2> /dev/null; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
command -v curl > /dev/null || { echo "SKIP: curl is not installed (scripts/setup.sh installs it)"; exit 77; }

# start NAME [LAUNCHER...] -- SERVE_ARGS...: starts a server; sets PID (of the launcher or scalekv) and PORT.
start() {
  local name=$1
  shift
  local launcher=()
  while [ "$1" != "--" ]; do launcher+=("$1"); shift; done
  shift
  rm -f "$T/$name.port"
  "${launcher[@]}" "$SKV" serve --port 0 --port-file "$T/$name.port" "$@" > "$T/$name.log" 2>&1 &
  PID=$!
  SERVERS+=("$PID")
  for _ in $(seq 1 300); do [ -s "$T/$name.port" ] && break; kill -0 "$PID" 2> /dev/null || break; sleep 0.1; done
  [ -s "$T/$name.port" ] || fail "$name: the server did not start"
  PORT=$(cat "$T/$name.port")
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/ready" -H "Authorization: Bearer ${KEY:-}")" = 200 ] && return 0
    sleep 0.1
  done
  fail "$name: /ready never answered 200"
}
# stop PID SIGNAL SECONDS: sends the drain signal and waits (bounded) for exit code 0.
stop() {
  local pid=$1 sig=$2 secs=$3
  kill -"$sig" "$pid"
  for _ in $(seq 1 $((secs * 10))); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2> /dev/null && fail "the server did not exit within $secs s of SIG$sig"
  wait "$pid"
  local rc=$?
  [ "$rc" = 0 ] || fail "the server exited $rc after SIG$sig"
}
# code METHOD PATH [BODY] [CURL_ARGS...]: prints the HTTP status; the body goes to $T/body.
code() {
  local m=$1 path=$2 body=${3:-}
  shift 3 2> /dev/null || shift $#
  if [ -n "$body" ]; then
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" "http://127.0.0.1:$PORT$path" -H 'Content-Type: application/json' \
      --data-binary "$body" "$@"
  else
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" "http://127.0.0.1:$PORT$path" "$@"
  fi
}
expect() {  # expect STATUS TEXT METHOD PATH BODY [CURL_ARGS...]: the status, and TEXT in the body
  local want=$1 text=$2
  shift 2
  local got
  got=$(code "$@")
  [ "$got" = "$want" ] || fail "$1 $2 $3: HTTP $got (want $want): $(head -c 300 "$T/body")"
  grep -qF -- "$text" "$T/body" || fail "$1 $2 $3: the answer does not say '$text': $(head -c 300 "$T/body")"
}
kv_freed() {  # kv_freed WHAT: waits (5 s at most) for replica 0 to hold no KV and run nothing, else fails
  local used running
  for _ in $(seq 1 50); do
    used=$($CLIENT metric "$PORT" 'scalekv_kv_bytes_used{replica="0"}')
    running=$($CLIENT metric "$PORT" 'scalekv_requests_running{replica="0"}')
    [ "$used" = 0 ] && [ "$running" = 0 ] && return 0
    sleep 0.1
  done
  fail "after $1: $used KV bytes in use, $running running"
}
gen() {  # gen DIR LABELS SEED [ARGS...]: generate's PNGs
  local dir=$1 labels=$2 seed=$3
  shift 3
  "$SKV" generate --labels "$labels" --seed "$seed" --out "$dir" "$@" > /dev/null || fail "generate $labels failed"
}

case "$MODE" in
api)
  gen "$T/g3" 3 5
  gen "$T/g33" 3x3 7
  gen "$T/gs" 7 11 --kv-policy scalekv --kv-budget 10%
  KEY=k3y
  export SKV_API_KEY=$KEY  # serve_client.py sends it
  # 8 MiB: a request of 3 images fits (6.7 MiB at admission: its pool and first transient), of 8 does not; a
  # queue of 2.
  start a -- --kv-memory 8MiB --max-queue 2 --read-timeout 2 --max-body 4KiB --api-key "$KEY" --drain-timeout 10
  A=$PID
  AUTH=(-H "Authorization: Bearer $KEY")
  # Authentication: /health and the page need no key, the rest does.
  expect 200 '"ok"' GET /health ""
  expect 200 '<' GET / ""
  expect 401 'API key' POST /v1/images/generations '{"class_label":3}'
  expect 401 'not valid' GET /v1/models "" -H "Authorization: Bearer wrong"
  expect 401 'API key' GET /metrics ""
  expect 200 '"var-fmnist"' GET /v1/models "" "${AUTH[@]}"
  # The PNGs equal generate's: one image, three images (image j of --labels 3x3), ScaleKV.
  $CLIENT post "$PORT" '{"class_label":3,"seed":5}' "$T/s3" "$KEY" > "$T/s3.json" || fail "POST n=1"
  "$PNG_DIFF" "$T/g3" "$T/s3" 1 || fail "the served image differs from generate --labels 3 --seed 5"
  $CLIENT post "$PORT" '{"class_label":3,"seed":7,"n":3}' "$T/s33" "$KEY" > /dev/null || fail "POST n=3"
  "$PNG_DIFF" "$T/g33" "$T/s33" 1 || fail "the served images differ from generate --labels 3x3 --seed 7"
  $CLIENT post "$PORT" '{"prompt":"Sneaker","seed":11,"kv_policy":"scalekv","kv_budget":"10%"}' "$T/ss" "$KEY" \
    > "$T/ss.json" || fail "POST scalekv"
  "$PNG_DIFF" "$T/gs" "$T/ss" 1 || fail "the served ScaleKV image differs from generate's"
  python3 -c "import json,sys; s=json.load(open('$T/ss.json')); sys.exit(not (s['policy']=='scalekv' and s['budget']=='10%' and s['kv_peak_bytes']>0 and s['seconds']>0 and 'queue_seconds' in s))" \
    || fail "the scalekv object of a ScaleKV answer: $(cat "$T/ss.json")"
  # Bad input: 400 naming the field and the valid values.
  expect 400 'not valid JSON' POST /v1/images/generations '{"class_label":' "${AUTH[@]}"
  expect 400 'must be a JSON object' POST /v1/images/generations '[1]' "${AUTH[@]}"
  expect 400 "unknown field 'colour'" POST /v1/images/generations '{"class_label":1,"colour":"red"}' "${AUTH[@]}"
  expect 400 "'class_label' = 10 is outside [0, 9]" POST /v1/images/generations '{"class_label":10}' "${AUTH[@]}"
  expect 400 "'n' = 9 is outside [1, 8]" POST /v1/images/generations '{"class_label":1,"n":9}' "${AUTH[@]}"
  expect 400 'the sizes are 32x32' POST /v1/images/generations '{"class_label":1,"size":"1024x1024"}' "${AUTH[@]}"
  expect 400 'use b64_json' POST /v1/images/generations '{"class_label":1,"response_format":"url"}' "${AUTH[@]}"
  expect 400 'Sneaker (7)' POST /v1/images/generations '{"prompt":"a red car"}' "${AUTH[@]}"
  expect 400 "kv_policy 'lru' is not one of" POST /v1/images/generations '{"class_label":1,"kv_policy":"lru"}' "${AUTH[@]}"
  expect 400 'kv_budget' POST /v1/images/generations '{"class_label":1,"kv_policy":"scalekv","kv_budget":"200%"}' "${AUTH[@]}"
  expect 400 "'seed' must be an integer" POST /v1/images/generations '{"class_label":1,"seed":-1}' "${AUTH[@]}"
  expect 400 "'top_p' = 2 is outside" POST /v1/images/generations '{"class_label":1,"top_p":2}' "${AUTH[@]}"
  expect 400 'can never run on this server' POST /v1/images/generations '{"class_label":1,"n":8}' "${AUTH[@]}"
  python3 -c "print('{\"prompt\":\"' + 'x' * 5000 + '\"}')" > "$T/big.json"
  expect 413 'over the limit of 4096 bytes' POST /v1/images/generations "@$T/big.json" "${AUTH[@]}"
  python3 -c "print('{\"prompt\":\"' + 'x' * 1200 + '\"}')" > "$T/long.json"
  expect 400 'the limit is 1000' POST /v1/images/generations "@$T/long.json" "${AUTH[@]}"
  head -c 1000000 /dev/zero | tr '\0' x > "$T/huge.json"  # still being sent when the 413 goes: answered, not reset
  expect 413 'over the limit of 4096 bytes' POST /v1/images/generations "@$T/huge.json" "${AUTH[@]}"
  expect 400 "kv_budget" POST /v1/images/generations '{"class_label":1,"kv_policy":"snapkv","kv_budget":1}' "${AUTH[@]}"
  expect 400 'not valid JSON' POST /v1/images/generations '{"class_label":1,"n":1e400}' "${AUTH[@]}"
  expect 400 'names class 7 but class_label is 1' POST /v1/images/generations '{"prompt":" sneaker ","class_label":1}' "${AUTH[@]}"
  expect 400 "output_format 'jpeg'" POST /v1/images/generations '{"class_label":1,"output_format":"jpeg"}' "${AUTH[@]}"
  [ "$(curl -s --head -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$PORT/health")" = "200 0" ] \
    || fail "HEAD /health must answer 200 without a body"
  expect 404 'no such endpoint' GET /v2/images "" "${AUTH[@]}"
  expect 405 'takes POST only' GET /v1/images/generations "" "${AUTH[@]}"
  # A stalled client (headers promise a body that never comes) gets 408 after --read-timeout.
  exec 3<> "/dev/tcp/127.0.0.1/$PORT"
  printf 'POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"class' >&3
  timeout 10 cat <&3 > "$T/stalled" || true
  exec 3>&-
  grep -q '^HTTP/1.1 408' "$T/stalled" || fail "a stalled request did not get 408: $(head -c 200 "$T/stalled")"
  # SSE: a preview per scale, then the final image, equal to generate's.
  $CLIENT stream "$PORT" '{"class_label":3,"seed":7,"n":3}' "$T/st" > "$T/st.json" || fail "stream"
  "$PNG_DIFF" "$T/g33" "$T/st" 1 || fail "the streamed images differ from generate's"
  # Overload: 8 requests of 2 images at once under a cap of one such request in flight and a queue of 2: some get 429 with
  # Retry-After; every other one completes.
  W=()
  for i in $(seq 1 8); do
    curl -s -o /dev/null -D "$T/h$i" -w '%{http_code}\n' "${AUTH[@]}" -X POST "http://127.0.0.1:$PORT/v1/images/generations" \
      --data-binary "{\"class_label\":$i,\"n\":2,\"seed\":$i}" > "$T/c$i" &
    W+=($!)
  done
  wait "${W[@]}"
  n429=$(cat "$T"/c? | grep -c 429)
  n200=$(cat "$T"/c? | grep -c 200)
  [ "$n429" -ge 1 ] && [ $((n429 + n200)) = 8 ] || fail "a burst of 8 over a queue of 2: $(cat "$T"/c? | tr '\n' ' ')"
  grep -il '^Retry-After: [0-9]' "$T"/h? > /dev/null || fail "429 without Retry-After"
  rej=$($CLIENT metric "$PORT" 'scalekv_admission_rejections_total{reason="queue_full"}')
  [ "${rej%.*}" = "$n429" ] || fail "/metrics counts $rej queue_full rejections, clients saw $n429"
  stop "$A" TERM 20
  KEY=
  unset SKV_API_KEY
  # Disconnects (no key): a queued request whose client gives up, and a stream closed after its first preview;
  # both cancel, and the KV is free afterwards.
  start b -- --kv-memory 8MiB --drain-timeout 10
  B=$PID
  W=()
  for i in 1 2 3; do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/images/generations" --data-binary "{\"class_label\":1,\"n\":2,\"seed\":$i}" &
    W+=($!)
  done
  curl -s -o /dev/null --max-time 0.05 -X POST "http://127.0.0.1:$PORT/v1/images/generations" --data-binary '{"class_label":2,"n":2}'
  $CLIENT drop "$PORT" '{"class_label":4,"n":2}' || fail "drop"
  wait "${W[@]}"
  kv_freed "the disconnects"
  cancelled=$($CLIENT metric "$PORT" 'scalekv_requests_cancelled_total{cause="disconnect"}')
  [ "${cancelled%.*}" -ge 1 ] || fail "no disconnect was counted as a cancellation ($cancelled)"
  echo "disconnects cancelled: $cancelled"
  stop "$B" TERM 20
  echo "serve api: OK"
  ;;
tp)
  export OMP_NUM_THREADS=1
  gen "$T/g" 3x2 5
  start tp2 "$MPIEXEC" "$NP" 2 $OVERSUB -- --tp 2 --kv-memory 64MiB --drain-timeout 10
  $CLIENT post "$PORT" '{"class_label":3,"seed":5,"n":2}' "$T/s2" > /dev/null || fail "POST at TP 2"
  "$PNG_DIFF" "$T/g" "$T/s2" 1 || fail "TP 2: the served images differ from generate's"
  $CLIENT stream "$PORT" '{"class_label":3,"seed":5,"n":2}' "$T/st2" > /dev/null || fail "stream at TP 2"
  "$PNG_DIFF" "$T/g" "$T/st2" 1 || fail "TP 2: the streamed images differ from generate's"
  stop "$PID" USR1 30  # mpiexec forwards SIGUSR1 to the ranks (it ends the job on SIGTERM)
  start rep "$MPIEXEC" "$NP" 4 $OVERSUB -- --tp 2 --kv-memory 64MiB --drain-timeout 10
  W=()
  for i in $(seq 1 6); do
    $CLIENT post "$PORT" '{"class_label":3,"seed":5,"n":2}' "$T/r$i" > "$T/r$i.json" &
    W+=($!)
  done
  wait "${W[@]}"
  for i in $(seq 1 6); do "$PNG_DIFF" "$T/g" "$T/r$i" 1 || fail "replicas: request $i differs from generate's"; done
  replicas=$(cat "$T"/r?.json | python3 -c "import json,sys; print(sorted({json.loads(l)['replica'] for l in sys.stdin}))")
  [ "$replicas" = "[0, 1]" ] || fail "6 concurrent requests ran on replicas $replicas (want both)"
  $CLIENT stream "$PORT" '{"class_label":3,"seed":5,"n":2}' "$T/rs" > /dev/null || fail "stream with replicas"
  "$PNG_DIFF" "$T/g" "$T/rs" 1 || fail "replicas: the streamed images differ from generate's"
  # A remote replica's gauges reach world rank 0 every 200 ms: its last answers may be newer than them.
  seen=
  for _ in $(seq 1 30); do
    curl -s "http://127.0.0.1:$PORT/metrics" | grep -q 'scalekv_replica_images{replica="1"} [1-9]' && { seen=1; break; }
    sleep 0.1
  done
  [ -n "$seen" ] || fail "/metrics reports no image on replica 1 (3 s after its answers)"
  stop "$PID" USR1 30
  echo "serve tp: OK (replicas used: $replicas)"
  ;;
infinity)
  export OMP_NUM_THREADS=1
  G=${SKV_T5_GOLDEN:-$BUILD/t5-golden}/sharded
  [ -f "$G/config.json" ] || fail "no tiny T5 at $G (ctest's t5_golden_make fixture writes it)"
  "$SKV" random-checkpoint --model "$HERE/../t5/infinity-t5tiny.config.json" --out "$T/m" --seed 3 > /dev/null \
    || fail "random-checkpoint"
  M=(--model "$T/m/infinity-t5tiny.config.json" --weights "$T/m/infinity-t5tiny.model.safetensors"
     --vae "$T/m/infinity-t5tiny.vae.safetensors" --t5 "$G")
  P1="a red fox in the snow" P2="a watercolor castle at night"
  igen() {  # igen DIR SEED [ARGS...]: generate's PNGs of the prompts in ARGS
    local dir=$1 seed=$2
    shift 2
    "$SKV" generate "${M[@]}" --seed "$seed" --out "$dir" "$@" > /dev/null || fail "generate $*"
  }
  igen "$T/g1" 5 --prompt "$P1"
  igen "$T/g2" 7 --prompt "$P2" --prompt "$P2"
  igen "$T/gw" 9 --prompt "$P1" --h-div-w 0.5
  igen "$T/gs" 11 --prompt "$P2" --kv-policy scalekv --kv-budget 10%
  # Options that cannot work: one line naming what to change, non-zero exit, before anything listens.
  bad_serve() {  # bad_serve TEXT ARGS...
    local want=$1 out
    shift
    out=$(timeout 60 "$SKV" serve --port 0 "$@" 2>&1) && fail "serve $* started"
    grep -qF -- "$want" <<< "$out" || fail "serve $*: expected '$want' in: $out"
  }
  bad_serve "serve needs --t5 DIR" "${M[@]:0:6}"
  bad_serve "are for Infinity models" --t5 "$G"
  bad_serve "not in Infinity's dynamic-resolution table" "${M[@]}" --h-div-w 0.77
  start i -- "${M[@]}" --kv-memory 64MiB --drain-timeout 10
  expect 200 '"prompt":"text"' GET /v1/models ""
  grep -qF '"family":"infinity"' "$T/body" || fail "/v1/models: $(head -c 300 "$T/body")"
  $CLIENT post "$PORT" "{\"prompt\":\"$P1\",\"seed\":5}" "$T/s1" > "$T/s1.json" || fail "POST a prompt"
  "$PNG_DIFF" "$T/g1" "$T/s1" 1 || fail "the served image differs from generate --t5 --prompt"
  grep -qF "\"prompt\": \"$P1\"" "$T/s1.json" || fail "the answer does not name its prompt: $(cat "$T/s1.json")"
  $CLIENT post "$PORT" "{\"prompt\":\"$P2\",\"seed\":7,\"n\":2}" "$T/s2" > /dev/null || fail "POST n=2"
  "$PNG_DIFF" "$T/g2" "$T/s2" 1 || fail "n=2: the served images differ from generate's"
  cmp -s "$T/s2/0000.png" "$T/s2/0001.png" && fail "n=2 gave two identical images"
  $CLIENT post "$PORT" "{\"prompt\":\"$P1\",\"seed\":9,\"size\":\"88x44\"}" "$T/sw" > "$T/sw.json" || fail "POST size 88x44"
  "$PNG_DIFF" "$T/gw" "$T/sw" 1 || fail "size 88x44: the served image differs from generate --h-div-w 0.5"
  python3 -c "import json,sys; d=json.load(open('$T/sw.json')); sys.exit(not (d['width'] == 88 and d['height'] == 44))" \
    || fail "size 88x44: $(cat "$T/sw.json")"
  $CLIENT post "$PORT" "{\"prompt\":\"$P2\",\"seed\":11,\"kv_policy\":\"scalekv\",\"kv_budget\":\"10%\"}" "$T/ss" > /dev/null \
    || fail "POST scalekv"
  "$PNG_DIFF" "$T/gs" "$T/ss" 1 || fail "ScaleKV: the served image differs from generate's"
  $CLIENT stream "$PORT" "{\"prompt\":\"$P2\",\"seed\":7,\"n\":2}" "$T/st" > /dev/null || fail "stream"
  "$PNG_DIFF" "$T/g2" "$T/st" 1 || fail "the streamed images differ from generate's"
  expect 400 'give a prompt' POST /v1/images/generations '{"seed":1}'
  expect 400 'give a prompt' POST /v1/images/generations '{"prompt":"   "}'
  expect 400 'class_label is for class-conditional models' POST /v1/images/generations '{"prompt":"a cat","class_label":1}'
  expect 400 'the sizes are 64x64, ' POST /v1/images/generations '{"prompt":"a cat","size":"1024x1024"}'
  printf '{"prompt":"caf\xe9"}' > "$T/latin1.json"
  expect 400 'not valid JSON' POST /v1/images/generations "@$T/latin1.json"
  expect 400 "'n' = 0 is outside [1, 8]" POST /v1/images/generations '{"prompt":"a cat","n":0}'
  stop "$PID" TERM 20
  # TP 2 (every rank encodes the prompt with its half of T5's heads), then two replicas of TP 1.
  for topo in "--tp 2" "--tp 1"; do
    start "tp${topo#--tp }" "$MPIEXEC" "$NP" 2 $OVERSUB -- $topo "${M[@]}" --kv-memory 64MiB --drain-timeout 10
    W=()
    for i in 1 2 3; do
      $CLIENT post "$PORT" "{\"prompt\":\"$P2\",\"seed\":7,\"n\":2}" "$T/p$i" > "$T/p$i.json" &
      W+=($!)
    done
    wait "${W[@]}" || fail "$topo: a POST failed"
    for i in 1 2 3; do "$PNG_DIFF" "$T/g2" "$T/p$i" 1 || fail "$topo: request $i differs from generate's"; done
    $CLIENT post "$PORT" "{\"prompt\":\"$P1\",\"seed\":9,\"size\":\"88x44\"}" "$T/pw" > /dev/null || fail "$topo: size"
    "$PNG_DIFF" "$T/gw" "$T/pw" 1 || fail "$topo: size 88x44 differs from generate's"
    stop "$PID" USR1 30
  done
  echo "serve infinity: OK"
  ;;
load)
  command -v hey > /dev/null || { echo "SKIP: hey is not installed (scripts/setup.sh installs it)"; exit 77; }
  start l -- --kv-memory 10MiB --max-queue 64 --drain-timeout 20
  L=$PID
  URL="http://127.0.0.1:$PORT"
  # /health every 50 ms during the load, each timed.
  (while kill -0 "$L" 2> /dev/null && [ ! -e "$T/stop_health" ]; do
     curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 2 "$URL/health" >> "$T/health"
     sleep 0.05
   done) &
  HP=$!
  hey -n 320 -c 16 -t 60 -m POST -T application/json -d '{"class_label":3,"seed":1}' "$URL/v1/images/generations" \
    > "$T/hey.txt" || fail "hey failed"
  touch "$T/stop_health"
  wait "$HP"
  sed -n '/Status code distribution/,$p' "$T/hey.txt"
  grep -qF '[200]	320 responses' "$T/hey.txt" || fail "not every request got 200: $(sed -n '/Status code/,$p' "$T/hey.txt")"
  grep -q 'Error distribution' "$T/hey.txt" && fail "hey saw errors: $(sed -n '/Error distribution/,$p' "$T/hey.txt")"
  slow=$(awk '$1 != 200 || $2 > 0.1' "$T/health" | wc -l)
  checks=$(wc -l < "$T/health")
  [ "$checks" -ge 5 ] && [ "$slow" = 0 ] || fail "/health: $slow of $checks checks failed or took over 100 ms: $(sort -k2 -n "$T/health" | tail -3)"
  peak=$($CLIENT metric "$PORT" 'scalekv_kv_bytes_peak{replica="0"}')
  cap=$($CLIENT metric "$PORT" 'scalekv_kv_bytes_capacity{replica="0"}')
  done_=$($CLIENT metric "$PORT" 'scalekv_requests_completed_total')
  python3 -c "import sys; sys.exit(not (0 < float('$peak') <= float('$cap') and float('$done_') >= 320))" \
    || fail "KV peak $peak, cap $cap, completed $done_"
  echo "load: 320 x 200, /health max $(sort -k2 -n "$T/health" | tail -1 | cut -d' ' -f2) s over $checks checks, KV peak $peak of $cap"
  # SIGTERM under load: every answer is 200 or 503 (connections after the listener closed are refused:
  # never accepted), and the server exits 0 within the drain timeout.
  hey -n 400 -c 16 -t 60 -m POST -T application/json -d '{"class_label":4,"seed":2}' "$URL/v1/images/generations" \
    > "$T/hey2.txt" &
  HEY=$!
  sleep 1
  stop "$L" TERM 25
  wait "$HEY"
  sed -n '/Status code distribution/,$p' "$T/hey2.txt"
  bad=$(sed -n '/Status code distribution/,/^$/p' "$T/hey2.txt" | grep -E '^\s*\[' | grep -vE '\[(200|503)\]' || true)
  [ -z "$bad" ] || fail "under SIGTERM, answers other than 200/503: $bad"
  grep -q '\[200\]' "$T/hey2.txt" || fail "no request completed before the drain"
  grep -q 'drained and stopped' "$T/l.log" || fail "the log does not say it drained"
  echo "serve load: OK"
  ;;
half_close)
  gen "$T/g3" 3 5
  gen "$T/g33" 3x3 7
  start h -- --kv-memory 8MiB --drain-timeout 10
  H=$PID
  # Half-closed clients (shutdown(SHUT_WR) after the request) get their answer: the FIN is no disconnect.
  $CLIENT halfclose "$PORT" '{"class_label":3,"seed":5}' "$T/h3" || fail "a half-closed client got no answer"
  "$PNG_DIFF" "$T/g3" "$T/h3" 1 || fail "half-closed client: the image differs from generate --labels 3 --seed 5"
  $CLIENT halfclose "$PORT" '{"class_label":3,"seed":7,"n":3,"stream":true}' "$T/h33" \
    || fail "a half-closed streaming client got no stream"
  "$PNG_DIFF" "$T/g33" "$T/h33" 1 || fail "half-closed stream: the images differ from generate --labels 3x3 --seed 7"
  cancelled=$($CLIENT metric "$PORT" 'scalekv_requests_cancelled_total{cause="disconnect"}')
  [ "${cancelled%.*}" = 0 ] || fail "a half-closed client was counted as a disconnect ($cancelled)"
  # A client that closes its socket while its request is queued (a FIN too, the same on the wire until
  # the server writes) is still seen as gone and its request cancelled: three requests of 2 images hold
  # the 8 MiB cap (one in flight at a time), the fourth waits.
  W=()
  for i in 1 2 3; do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/v1/images/generations" --data-binary "{\"class_label\":1,\"n\":2,\"seed\":$i}" &
    W+=($!)
  done
  sleep 0.2
  $CLIENT close "$PORT" '{"class_label":2,"n":2}' || fail "close"
  for _ in $(seq 1 100); do
    cancelled=$($CLIENT metric "$PORT" 'scalekv_requests_cancelled_total{cause="disconnect"}')
    [ "${cancelled%.*}" = 1 ] && break
    sleep 0.1
  done
  [ "${cancelled%.*}" = 1 ] || fail "a client that closed while queued was not cancelled ($cancelled disconnects counted)"
  wait "${W[@]}"
  kv_freed "the requests"
  stop "$H" TERM 20
  echo "serve half_close: OK"
  ;;
write_timeout)
  # A model whose previews are large (random weights of VAR-d16's shape, one block: 256x256 PNGs, ~100 KB
  # an event) and slow to make (seconds a request on CPU): the client's first preview already stalls the
  # server's writes, long before the request would finish by itself.
  start w -- --random-weights --model "$HERE/../../configs/var-d16.json" --depth 1 --kv-memory 256MiB --no-warmup \
    --write-timeout 1 --drain-timeout 10
  W=$PID
  $CLIENT stall "$PORT" '{"class_label":3,"seed":1}' "$T/go" > "$T/stall.log" 2>&1 &
  SP=$!
  t0=$(date +%s)
  while [ $(($(date +%s) - t0)) -lt 30 ]; do  # seconds: the reset comes ~1 s after the first preview
    cancelled=$($CLIENT metric "$PORT" 'scalekv_requests_cancelled_total{cause="disconnect"}')
    used=$($CLIENT metric "$PORT" 'scalekv_kv_bytes_used{replica="0"}')
    running=$($CLIENT metric "$PORT" 'scalekv_requests_running{replica="0"}')
    [ "${cancelled%.*}" = 1 ] && [ "$used" = 0 ] && [ "$running" = 0 ] && break
    sleep 0.2
  done
  secs=$(($(date +%s) - t0))
  touch "$T/go"  # the client reads now: the connection must be gone
  wait "$SP"
  src=$?
  cat "$T/stall.log"
  [ "${cancelled%.*}" = 1 ] && [ "$used" = 0 ] && [ "$running" = 0 ] \
    || fail "a client that stopped reading: after $secs s, $cancelled disconnects counted, $running running, $used KV bytes in use"
  [ "$src" = 0 ] || fail "the stalled client's connection was not ended by the server"
  echo "cancelled and freed within $secs s of the request"
  stop "$W" TERM 20
  echo "serve write_timeout: OK"
  ;;
fail_rank0|fail_replica)
  export SKV_TEST_ENGINE_FAIL_AT_ITERATION=3  # the engine throws after 3 scale steps (a test hook, server/serve.cpp)
  if [ "$MODE" = fail_rank0 ]; then
    start f -- --no-warmup --kv-memory 64MiB
    N=1
    WHO="injected engine failure"
  else
    export SKV_TEST_ENGINE_FAIL_RANK=1 OMP_NUM_THREADS=1
    XENV=()
    "$MPIEXEC" --version 2>&1 | grep -qE 'Open MPI|OpenRTE' \
      && XENV=(-x SKV_TEST_ENGINE_FAIL_AT_ITERATION -x SKV_TEST_ENGINE_FAIL_RANK)
    start f "$MPIEXEC" "$NP" 2 $OVERSUB "${XENV[@]}" -- --tp 1 --no-warmup --kv-memory 64MiB
    # Several requests at once: the second lands on replica 1 (replica 0 is busy), whose engine fails.
    N=4
    WHO="replica 1 (rank 1) failed: injected engine failure"
  fi
  F=$PID
  W=()
  for i in $(seq 1 "$N"); do
    curl -s -o "$T/f$i.body" -w '%{http_code}' --max-time 60 -X POST "http://127.0.0.1:$PORT/v1/images/generations" \
      --data-binary "{\"class_label\":$i,\"n\":2,\"seed\":$i}" > "$T/f$i.code" &
    W+=($!)
  done
  wait "${W[@]}"
  t0=$(date +%s%N)
  n503=0
  for i in $(seq 1 "$N"); do
    c=$(cat "$T/f$i.code")
    case "$c" in
      200) ;;
      503)
        python3 -c "import json,sys; e=json.load(open('$T/f$i.body'))['error']; sys.exit(not (e['type']=='server_error' and '$WHO' in e['message']))" \
          || fail "request $i: a 503 without the JSON error naming the failure: $(head -c 300 "$T/f$i.body")"
        n503=$((n503 + 1))
        ;;
      *) fail "request $i: HTTP $c (want 200, or 503 for a request the failed engine held): $(head -c 300 "$T/f$i.body")" ;;
    esac
  done
  [ "$n503" -ge 1 ] || fail "no request got 503 from the failed engine"
  echo "$n503 of $N requests got 503: $(head -c 200 "$T/f1.body")"
  for _ in $(seq 1 200); do kill -0 "$F" 2> /dev/null || break; sleep 0.1; done
  kill -0 "$F" 2> /dev/null && fail "the server still runs 20 s after its engine failed"
  wait "$F"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ "$rc" != 0 ] || fail "the server exited 0 after its engine failed"
  grep -q "error: .*injected engine failure" "$T/f.log" || fail "the log has no error line naming the failure"
  echo "serve $MODE: OK (exit $rc, $ms ms after the answers)"
  ;;
*) fail "unknown mode $MODE" ;;
esac
