# full_cap.sh - sourced by serve_bench.sh and serve.sh: KV caps sized to whole full-cache requests.
#   full_cap N CONFIG [DEPTH]   prints the bytes of N full-cache requests (one image each) at their planned
#                               KV peak, from `scalekv plan --json` (so a cap follows the plan when it changes)
# Needs $skv (the binary) and $out (where a copy of CONFIG with DEPTH goes: plan reads the depth from the config).
full_cap() {
  local cfg=$2
  if [ -n "${3:-}" ]; then
    cfg=$out/$(basename "$2" .json)-depth$3.json
    /usr/bin/python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); c["depth"] = int(sys.argv[3]); json.dump(c, open(sys.argv[2], "w"))' "$2" "$cfg" "$3"
  fi
  "$skv" plan --model "$cfg" --json | /usr/bin/python3 -c 'import json, sys; print(int(sys.argv[1]) * json.load(sys.stdin)["full_kv_bytes_peak"])' "$1"
}
