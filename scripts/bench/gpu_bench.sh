#!/usr/bin/env bash
# gpu_bench.sh - the one script for the day a GPU is available (issue 13): build, the CUDA unit tests
# and every golden under compute-sanitizer, the Infinity-2B-shaped benchmark at 1024x1024 (full KV
# cache vs ScaleKV 10 %, batch 1, 8 and 16, bf16 weights), and one summary table. 8 minutes on one
# H100 or H200, build included.
#
#   scripts/bench/gpu_bench.sh [--out DIR] [--build-dir DIR] [--golden DIR] [--config FILE]
#   scripts/bench/gpu_bench.sh --dry-run [--build-dir DIR] [--golden DIR] [--config FILE]
#
# Defaults: --out bench-results/gpu-<UTC date-time>, --build-dir build, --golden ../shared/golden,
# --config configs/infinity-2b.json. Paths are relative to the repository root.
#
# Steps. Expected times on one H100/H200 with >= 16 host cores; each step runs under `timeout` with
# the smaller of its limit and the time left before the 8-minute deadline (the tests always leave
# the benchmark 130 s; the two bench steps share what is left, half each at the start):
#   step             expected  limit  what
#   gpu                   2 s    20 s  nvidia-smi: name, memory, driver, compute capability
#   configure            20 s    90 s  cmake -DCMAKE_CUDA_ARCHITECTURES=<this GPU only: 90a-real on
#                                      H100/H200> (CMakeLists.txt only sets 80-real;90a-real when the
#                                      variable is unset), Release
#   build               110 s   300 s  only the targets scalekv and skv_cuda_tests, -j $(nproc)
#   unit-memcheck        75 s   120 s  compute-sanitizer --tool memcheck skv_cuda_tests (every CUDA test)
#   unit-racecheck       35 s    60 s  compute-sanitizer --tool racecheck skv_cuda_tests, only the
#                                      attention and KV-selection tests ($race_filter below)
#   golden-memcheck      45 s    90 s  compute-sanitizer --tool memcheck scalekv verify-golden --dir
#                                      GOLDEN --device cuda (every golden in the folder)
#   plan                  2 s    30 s  scalekv plan per policy and batch: the planned KV peak, and which
#                                      batches fit this GPU's memory (full cache at batch 16 needs
#                                      ~120 GiB: it fits an H200, not an 80 GB H100, and is skipped there)
#   bench-full           65 s  half    scalekv bench --model infinity-2b --device cuda --resolution 1024
#                                      --batch 1,8,16 --weight-dtype bf16 --kv-policy full
#                                      --warmup 1 --repeats 1 (decoder included; one model for
#                                      the three batch sizes)
#   bench-scalekv        60 s  rest    the same with --kv-policy scalekv --kv-budget 10%
#   total               414 s   480 s
# The test and build times are estimates (no GPU has run this project yet). The bench estimates:
# ~35 s to make the 2.3 G random weights on the host (one thread; 27-35 ns a value measured on this
# project's loaded 2-core CI machine), then ~0.5 s per image with the full cache from the FLOPs (79
# TFLOP of bf16 GEMMs and ~36 TFLOP of attention per image with CFG), plus one warm-up generation.
# The Infinity bench builds the model once for all batch sizes and, on CUDA, adds the per-op GPU
# profile and the attention-alone sweep of launcher/bench_cuda.cpp (GEMM vs cuBLAS peak, HBM share).
#
# Reported per policy and batch: time per image (transformer + decoder) against the Infinity paper's
# 0.8 s for a 2B 1024x1024 image, the measured KV peak against `scalekv plan`, the weight bytes
# against the bf16 plan, and - when the bench prints the GPU figures of launcher/bench_cuda.cpp - the
# attention bandwidth as a share of HBM peak and the GEMM throughput as a share of cuBLAS peak.
# Summary: OUT/gpu_bench.md (printed at the end); every step's log: OUT/<step>.log.
#
# --dry-run (any machine, no GPU needed, < 1 minute): every step's command line and input, without
# running a model. The scalekv commands go through the real binary in --build-dir: each bench command,
# exactly as the real run gives it but with the GPU hidden, must stop where a minimal `scalekv bench
# --model CONFIG --device cuda` stops (the device check: options and config passed); its cheap CPU
# twin (same options, but --device cpu, 256x256, depth 1, batch 1, one run) must run and its output
# must parse; the plans run (they check --resolution 1024 and the KV options); verify-golden must get
# to its no-GPU skip (77); the gtest filter must select tests; every golden file must be a readable
# safetensors file; nvcc must accept the CUDA architecture. Exit 0 when all is valid, else 1 with one
# line per failing step: "gpu_bench.sh --dry-run: FAIL <step>: <reason>".
#
# Environment: CUDA_HOME (/usr/local/cuda); GPU_BENCH_DEADLINE_S (480); GPU_BENCH_CUDA_ARCH (override
# the architecture); GPU_BENCH_EXTRA_BENCH_ARGS (words appended to both `scalekv bench` commands; must
# not repeat an option the script passes: a test hook, and for experiments); GPU_BENCH_DRY_QUICK=1
# (dry run without the CPU twins and the weight-dtype probe).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || exit 1
cd "$root" || exit 1
prog=gpu_bench.sh

dry=0 out="" build=build golden=../shared/golden config=configs/infinity-2b.json
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1 ;;
    --out | --build-dir | --golden | --config)
      [ $# -ge 2 ] || { echo "$prog: $1 needs a value" >&2; exit 2; }
      case $1 in --out) out=$2 ;; --build-dir) build=$2 ;; --golden) golden=$2 ;; --config) config=$2 ;; esac
      shift ;;
    -h | --help) sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "$prog: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- what runs (shared by the real run and the dry run) -------------------------------------------
cuda_home=${CUDA_HOME:-/usr/local/cuda}
deadline=${GPU_BENCH_DEADLINE_S:-480}
policies=(full scalekv)
batches=(1 8 16)
anchor=0.8  # s per 1024x1024 image, Infinity-2B (Infinity paper)
race_filter='*Attention*:*Select*:*Gather*:*QueryScores*:*Window*:*TopK*:*Extents*'
read -r -a extra <<< "${GPU_BENCH_EXTRA_BENCH_ARGS:-}"
declare -A expect=([gpu]=2 [configure]=20 [build]=110 [unit-memcheck]=75 [unit-racecheck]=35 [golden-memcheck]=45
                   [plan]=2 [bench-full]=65 [bench-scalekv]=60)
declare -A limit=([gpu]=20 [configure]=90 [build]=300 [unit-memcheck]=120 [unit-racecheck]=60 [golden-memcheck]=90
                  [plan]=30)
bench_reserve=130  # the tests never eat into the last 130 s: the benchmark's share
export SKV_PROGRESS=0

policy_args() {  # POLICY -> pa
  case $1 in
    full) pa=(--kv-policy full) ;;
    scalekv) pa=(--kv-policy scalekv --kv-budget 10%) ;;
  esac
}
bench_cmd() {  # POLICY BATCHES(csv) MD -> cmd
  policy_args "$1"
  cmd=("$build/bin/scalekv" bench --model "$config" --device cuda --resolution 1024 --batch "$2" --weight-dtype bf16
       --warmup 1 --repeats 1 "${pa[@]}" --md "$3" ${extra[@]+"${extra[@]}"})
}
plan_cmd() {  # POLICY BATCH DEVICE_MEMORY -> cmd
  policy_args "$1"
  cmd=("$build/bin/scalekv" plan --model "$config" --resolution 1024 --batch "$2" --weight-dtype bf16 "${pa[@]}"
       --device-memory "$3" --json)
}
unit_cmd() { cmd=("$build/bin/skv_cuda_tests" --gtest_color=no); }
race_cmd() { cmd=("$build/bin/skv_cuda_tests" --gtest_color=no "--gtest_filter=$race_filter"); }
golden_cmd() { cmd=("$build/bin/scalekv" verify-golden --dir "$golden" --device cuda); }
san_args() {  # TOOL -> sa (the compute-sanitizer options; the binary is found at run time)
  sa=(--tool "$1" --error-exitcode 99)
}
find_sanitizer() {
  local c
  for c in "$cuda_home/bin/compute-sanitizer" "$(command -v compute-sanitizer 2>/dev/null)" \
           "$cuda_home/compute-sanitizer/compute-sanitizer"; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}
arch_for() {  # compute capability (9.0) -> CMAKE_CUDA_ARCHITECTURES; Hopper gets the project's own 90a-real
  if [ -n "${GPU_BENCH_CUDA_ARCH:-}" ]; then echo "$GPU_BENCH_CUDA_ARCH"
  elif [ "$1" = 9.0 ] || [ -z "$1" ]; then echo 90a-real
  else echo "${1//./}-real"; fi
}
nvcc_path() {
  if [ -x "$cuda_home/bin/nvcc" ]; then echo "$cuda_home/bin/nvcc"; else command -v nvcc 2>/dev/null; fi
}
# Reads the markdown of `scalekv bench` on an Infinity config; one line per batch:
# batch transformer_s decoder_s weights_MiB kv_peak_bytes backend gemm_share attention_share ("-": absent)
parse_bench_md() {
  awk '
    function t(s) { gsub(/^[ \t*]+|[ \t*]+$/, "", s); return s }
    /^### scalekv Infinity:/ { if (match($0, /batch [0-9]+/)) { b = substr($0, RSTART + 6, RLENGTH - 6); order[++n] = b }
                               mem = 0; next }
    /backend [A-Za-z0-9_]+;/ && b != "" { match($0, /backend [A-Za-z0-9_]+/); be[b] = substr($0, RSTART + 8, RLENGTH - 8) }
    /^\| \*\*total\*\* \|/ { split($0, c, "|"); tot[b] = t(c[4]); next }
    /^\| decoder \|/ { split($0, c, "|"); dec[b] = t(c[4]); next }
    /^\| memory \(MiB\)/ { mem = 1; next }
    mem && /^\|[-:| ]+$/ { next }
    mem && /^\|/ { split($0, c, "|"); w[b] = t(c[3]); mem = 0; next }
    /^KV measured peak: [0-9]+ bytes/ { kv[b] = $4; next }
    /^\|/ { n2 = split($0, c, "|"); op = t(c[3])
            if ((op == "linear" || op == "attention") && n2 >= 11) {
              bb = b; lab = t(c[2]); if (match(lab, /batch [0-9]+/)) bb = substr(lab, RSTART + 6, RLENGTH - 6)
              if (op == "linear") g[bb] = t(c[8]); else a[bb] = t(c[10]) } }
    function d(x) { x = x ""; gsub(/ /, "", x); return x == "" ? "-" : x }
    END { for (i = 1; i <= n; ++i) { b = order[i]
            print b, d(tot[b]), d(dec[b]), d(w[b]), d(kv[b]), d(be[b]), d(g[b]), d(a[b]) } }' "$1"
}
json_int() { grep -o "\"$2\"[[:space:]]*:[[:space:]]*[0-9]*" "$1" 2>/dev/null | head -1 | grep -o '[0-9]*$'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ==================================================================================================
# --dry-run
# ==================================================================================================
if [ "$dry" = 1 ]; then
  t_start=$SECONDS
  tmp=$(mktemp -d) || exit 1
  trap 'rm -rf "$tmp"' EXIT
  fails=0
  ok() { printf 'ok    %-16s %s\n' "$1" "$2"; }
  note() { printf 'note  %-16s %s\n' "$1" "$2"; }
  warn() { printf 'WARN  %-16s %s\n' "$1" "$2"; }
  fail() { echo "$prog --dry-run: FAIL $1: $2" >&2; fails=$((fails + 1)); }
  first_error() {  # the first line worth showing from a log
    local l
    l=$(grep -m1 -E '^error:|not expected|Could not convert|required|At Most|INVALID|FileError|ERROR' "$1")
    [ -n "$l" ] || l=$(grep -m1 -v '^[[:space:]]*$' "$1")
    echo "${l:-no output}"
  }
  hide_gpu=(env CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1)
  echo "$prog --dry-run: repository $root, build dir $build, golden $golden, config $config"
  skv="$build/bin/scalekv"
  have_skv=1
  [ -x "$skv" ] || have_skv=0

  # gpu
  if command -v nvidia-smi > /dev/null; then
    ok gpu "nvidia-smi: $(nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader 2>&1 | head -1)"
  else
    ok gpu "no nvidia-smi here (fine for a dry run); the real run needs it and exits 77 without it"
  fi

  # configure
  arch=$(arch_for "")
  if ! command -v cmake > /dev/null; then
    fail configure "cmake is not installed"
  else
    nvcc=$(nvcc_path)
    msg="cmake $(cmake --version | head -1 | awk '{print $3}'), generator $(command -v ninja > /dev/null && echo Ninja || echo 'Unix Makefiles')"
    if ! grep -q 'if(NOT CMAKE_CUDA_ARCHITECTURES)' CMakeLists.txt; then
      warn configure "CMakeLists.txt no longer sets the CUDA architectures only when unset: -DCMAKE_CUDA_ARCHITECTURES=$arch may be ignored (slower build)"
    fi
    if [ -z "$nvcc" ]; then
      ok configure "$msg; no nvcc here to check CMAKE_CUDA_ARCHITECTURES=$arch (the real run needs CUDA >= 12.0 for 90a)"
    else
      a=${arch%-real}; a=${a%-virtual}
      if "$nvcc" --dryrun "--generate-code=arch=compute_$a,code=[sm_$a]" -c -x cu /dev/null -o /dev/null > "$tmp/nvcc.log" 2>&1; then
        ok configure "$msg; $nvcc ($("$nvcc" --version | grep -o 'release [0-9.]*')) accepts CMAKE_CUDA_ARCHITECTURES=$arch"
      else
        fail configure "$nvcc rejects CMAKE_CUDA_ARCHITECTURES=$arch: $(first_error "$tmp/nvcc.log")"
      fi
    fi
  fi

  # build
  missing=""
  grep -qE 'add_executable\(scalekv[ )]' launcher/CMakeLists.txt 2> /dev/null || missing+=" scalekv"
  grep -qE 'add_executable\(skv_cuda_tests[ )]' tests/CMakeLists.txt 2> /dev/null || missing+=" skv_cuda_tests"
  if [ -n "$missing" ]; then
    fail build "no CMake target$missing (cmake --build --target scalekv skv_cuda_tests would fail)"
  elif [ "$have_skv" = 0 ]; then
    fail build "no $skv to check the command lines with: build it first or pass --build-dir"
  else
    ok build "targets scalekv and skv_cuda_tests exist; checking with $skv"
  fi

  # unit-memcheck, unit-racecheck: the test binary's own listing, or the test sources when it is not built here
  if [ -x "$build/bin/skv_cuda_tests" ]; then
    list_tests() {  # FILTER -> "Suite.Name" lines
      "${hide_gpu[@]}" timeout 60 "$build/bin/skv_cuda_tests" --gtest_list_tests "--gtest_filter=$1" 2> "$tmp/list.err" |
        awk '/^[^ ]/ { s = $1 } /^  / { print s $1 }'
    }
    src="$build/bin/skv_cuda_tests --gtest_list_tests"
  else
    list_tests() {
      local t p
      local -a pats
      IFS=: read -r -a pats <<< "$1"
      grep -hoE '^TEST(_F|_P)?\([A-Za-z0-9_]+, *[A-Za-z0-9_]+' tests/cuda/*.cpp | sed -E 's/^TEST(_F|_P)?\(//; s/, */./' |
        while read -r t; do
          for p in "${pats[@]}"; do
            # shellcheck disable=SC2053  # $p is a gtest glob, matched as one
            [[ $t == $p ]] && { echo "$t"; break; }
          done
        done
    }
    src="tests/cuda/*.cpp (skv_cuda_tests is not built in $build)"
  fi
  unit_cmd; all=$(list_tests '*' | wc -l)
  if [ "$all" -gt 0 ]; then ok unit-memcheck "${cmd[*]}: $all tests ($src)"
  else fail unit-memcheck "no CUDA tests found in $src: $(head -c 200 "$tmp/list.err" 2> /dev/null)"; fi
  race_cmd; sel=$(list_tests "$race_filter")
  if [ -n "$sel" ]; then ok unit-racecheck "--gtest_filter=$race_filter selects $(echo "$sel" | wc -l): $(echo "$sel" | sed 's/^[^.]*\.//' | paste -sd ' ')"
  else fail unit-racecheck "--gtest_filter=$race_filter selects no test in $src"; fi
  if san=$(find_sanitizer); then
    note sanitizer "$san ($("$san" --version 2>&1 | grep -m1 -io 'version [0-9.]*'))"
  else
    note sanitizer "compute-sanitizer is absent from $cuda_home/bin here (only nvcc is installed); the real run needs the CUDA toolkit's compute-sanitizer (Debian/NVIDIA package cuda-sanitizer-<major>-<minor>, same version as nvcc) and runs the tests unsanitized, marked WARN, without it"
  fi

  # golden-memcheck: every golden's files, then the command up to its no-GPU skip
  if [ ! -d "$golden" ]; then
    fail golden-memcheck "golden folder $golden is missing"
  else
    shopt -s nullglob
    cfgs=("$golden"/*.config.json)
    shopt -u nullglob
    if [ ${#cfgs[@]} -eq 0 ]; then
      fail golden-memcheck "no NAME.config.json in $golden"
    else
      bad="" nfiles=0 names=""
      for c in "${cfgs[@]}"; do
        n=${c%.config.json}; names+=" $(basename "$n")"
        files=("$n.expected.safetensors" "$n.vae.safetensors")
        if [ -e "$n.var.safetensors" ]; then files+=("$n.var.safetensors"); else files+=("$n.model.safetensors"); fi
        [ -e "$n.scalekv.json" ] && files+=("$n.scalekv.expected.safetensors")
        for f in "${files[@]}"; do
          nfiles=$((nfiles + 1))
          if [ ! -f "$f" ]; then bad="$f is missing"; break 2; fi
          if [ "$have_skv" = 1 ] && ! "$skv" inspect --summary "$f" > "$tmp/inspect.log" 2>&1; then
            bad="$f is not a readable safetensors file: $(first_error "$tmp/inspect.log")"; break 2
          fi
        done
      done
      if [ -n "$bad" ]; then
        fail golden-memcheck "$bad"
      elif [ "$have_skv" = 1 ]; then
        golden_cmd
        "${hide_gpu[@]}" timeout 60 "${cmd[@]}" > "$tmp/golden.log" 2>&1
        rc=$?
        if [ $rc -eq 77 ] && grep -q '^SKIP' "$tmp/golden.log"; then
          ok golden-memcheck "${#cfgs[@]} goldens ($names ), $nfiles safetensors files readable; '${cmd[*]:1}' parses (exit 77 here: no GPU)"
        else
          fail golden-memcheck "scalekv stops before the device check (exit $rc): $(first_error "$tmp/golden.log") -- in: ${cmd[*]:1}"
        fi
      fi
    fi
  fi

  # plan (runs for real: no weights, no model) for the two memory sizes the script is meant for
  if [ "$have_skv" = 1 ]; then
    plan_ok=1 fits=""
    for p in "${policies[@]}"; do
      for b in "${batches[@]}"; do
        for gpu in H100:81559MiB H200:143771MiB; do  # what nvidia-smi reports for an H100 SXM and an H200
          plan_cmd "$p" "$b" "${gpu#*:}"
          if ! timeout 60 "${cmd[@]}" > "$tmp/plan-${gpu%%:*}.json" 2> "$tmp/plan.err" ||
             [ -z "$(json_int "$tmp/plan-${gpu%%:*}.json" kv_bytes_peak)" ]; then
            fail plan "scalekv plan fails: $(first_error "$tmp/plan.err") -- in: ${cmd[*]:1}"; plan_ok=0; break 3
          fi
        done
      done
      fits+=" $p up to batch $(json_int "$tmp/plan-H100.json" max_batch) on an 80 GB H100, $(json_int "$tmp/plan-H200.json" max_batch) on an H200;"
    done
    [ "$plan_ok" = 1 ] && ok plan "$((${#policies[@]} * ${#batches[@]} * 2)) plans run (bf16 weights, 1024x1024):$fits larger batches are skipped"
  fi

  # bench-full, bench-scalekv: the exact command must stop where a minimal `bench --model CONFIG
  # --device cuda` stops with the GPU hidden (the device check: whatever this build checks before it -
  # options, config, today also the schedule - passed); then its cheap CPU twin must run and parse.
  twin_of() {  # cmd -> twin: the same options, --device cpu and cheap values (--text-len only if absent)
    local -A set=([--device]=cpu [--resolution]=256 [--batch]=1 [--repeats]=1 [--warmup]=0 [--depth]=1 [--md]="$1")
    local -A seen=()
    local i=0 n=${#cmd[@]} w
    twin=()
    while [ $i -lt $n ]; do
      w=${cmd[$i]}
      if [ $i -gt 1 ] && [ -n "${set[$w]+x}" ]; then twin+=("$w" "${set[$w]}"); seen[$w]=1; i=$((i + 2))
      else twin+=("$w"); i=$((i + 1)); fi
    done
    for w in "${!set[@]}"; do [ -n "${seen[$w]+x}" ] || twin+=("$w" "${set[$w]}"); done
    [[ " ${cmd[*]} " == *" --text-len "* ]] || twin+=(--text-len 1)
    [[ " ${cmd[*]} " == *" --no-decode "* ]] || twin+=(--no-decode)
  }
  device_stop=""
  if [ -f "$config" ] && [ "$have_skv" = 1 ]; then
    "${hide_gpu[@]}" timeout 60 "$skv" bench --model "$config" --device cuda > "$tmp/baseline.log" 2>&1
    [ $? -ne 0 ] && device_stop=$(grep -m1 '^error:' "$tmp/baseline.log")
  fi
  for p in "${policies[@]}"; do
    step=bench-$p
    if [ ! -f "$config" ]; then fail "$step" "model config $config is missing"; continue; fi
    [ "$have_skv" = 1 ] || continue
    if [ -z "$device_stop" ]; then
      fail "$step" "cannot check: a minimal 'bench --model $config --device cuda' with the GPU hidden gives no error line: $(first_error "$tmp/baseline.log")"
      continue
    fi
    csv=$(IFS=,; echo "${batches[*]}")
    bench_cmd "$p" "$csv" "$tmp/$step.md"
    "${hide_gpu[@]}" timeout 60 "${cmd[@]}" > "$tmp/$step.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
      fail "$step" "ran to the end with the GPU hidden, so the check cannot tell a valid command line: ${cmd[*]:1}"; continue
    elif [ "$(grep -m1 '^error:' "$tmp/$step.log")" != "$device_stop" ]; then
      fail "$step" "scalekv stops before the device check (exit $rc): $(first_error "$tmp/$step.log") -- in: ${cmd[*]:1}"; continue
    fi
    what="'${cmd[*]:1}' gets to the device check"
    if [ "${GPU_BENCH_DRY_QUICK:-0}" = 1 ]; then ok "$step" "$what (quick: no CPU twin)"; continue; fi
    twin_of "$tmp/$step-twin.md"
    "${hide_gpu[@]}" timeout 120 "${twin[@]}" > "$tmp/$step-twin.log" 2>&1
    rc=$?
    row=$(parse_bench_md "$tmp/$step-twin.md" 2> /dev/null | head -1)
    read -r tb ttot tdec tw tkv tbe _ _ <<< "$row"
    if [ $rc -ne 0 ]; then
      fail "$step" "its CPU twin fails (exit $rc): $(first_error "$tmp/$step-twin.log") -- twin: ${twin[*]:1}"
    elif [ "${tb:-}" != 1 ] || [ "$ttot" = - ] || [ "$tkv" = - ] || [ "$tw" = - ]; then
      fail "$step" "the output of its CPU twin does not parse (batch '${tb:-}', total '${ttot:-}', KV peak '${tkv:-}', weights '${tw:-}'): see '${twin[*]:1}'"
    else
      ok "$step" "$what; its CPU twin (256x256, depth 1, batch 1) ran and parses: total ${ttot} s, KV peak ${tkv} B, weights ${tw} MiB, backend ${tbe}"
    fi
  done
  [ -z "$device_stop" ] || note bench "the device check both bench commands reach here: $device_stop"

  # Probes (warnings, not failures): what the real run would get wrong with this build.
  # The weight dtype: the same CPU bench with bf16 and with f32 must hold different weight bytes. On the
  # golden folder's tiny Infinity config when there is one (a second), else on the twin of bench-full.
  if [ "$have_skv" = 1 ] && [ "${GPU_BENCH_DRY_QUICK:-0}" != 1 ]; then
    probe_cfg=$(grep -l '"infinity_kwargs"' "$golden"/*.config.json 2> /dev/null | head -1)
    bench_cmd full 1 "$tmp/x.md"
    if [ -n "$probe_cfg" ]; then for i in "${!cmd[@]}"; do [ "${cmd[$i]}" = "$config" ] && cmd[$i]=$probe_cfg; done; fi
    probe=()
    for dt in bf16 f32; do
      twin_of "$tmp/probe-$dt.md"
      for i in "${!twin[@]}"; do [ "${twin[$i]}" = bf16 ] && twin[$i]=$dt; done
      "${hide_gpu[@]}" timeout 120 "${twin[@]}" > "$tmp/probe.log" 2>&1 && read -r _ _ _ w _ <<< "$(parse_bench_md "$tmp/probe-$dt.md" | head -1)"
      probe+=("${w:--}")
    done
    on=${probe_cfg:-$config}
    if [ "${probe[0]}" = - ] || [ "${probe[1]}" = - ]; then
      note bench "weight-dtype probe on $on did not run: $(first_error "$tmp/probe.log")"
    elif [ "${probe[0]}" = "${probe[1]}" ]; then
      warn bench "--weight-dtype bf16 is ignored by the Infinity bench (weights ${probe[0]} MiB with bf16 and with f32 on $on, --device cpu): the bf16 rows would time F32 weights (issue 13 item 3)"
    else
      ok bench "--weight-dtype bf16 is honoured by the Infinity bench (weights ${probe[0]} MiB with bf16, ${probe[1]} MiB with f32 on $on)"
    fi
  fi
  total=0; for s in "${!expect[@]}"; do total=$((total + expect[$s])); done
  note budget "expected $total s of the ${deadline} s deadline on one H100/H200 (see the header of $0)"
  if [ "$fails" -gt 0 ]; then
    echo "$prog --dry-run: $fails step(s) invalid ($((SECONDS - t_start)) s)" >&2
    exit 1
  fi
  echo "$prog --dry-run: every step's command line is valid and every input is there ($((SECONDS - t_start)) s)"
  exit 0
fi

# ==================================================================================================
# The real run
# ==================================================================================================
t0=$SECONDS
if ! command -v nvidia-smi > /dev/null; then
  echo "$prog: no nvidia-smi: this is not a GPU machine (use --dry-run here)"
  exit 77
fi
out=${out:-bench-results/gpu-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$out" || exit 1
md="$out/gpu_bench.md"
declare -a R_STEP R_STATUS R_TIME R_EXP R_RESULT
record() { R_STEP+=("$1"); R_STATUS+=("$2"); R_TIME+=("$3"); R_EXP+=("$4"); R_RESULT+=("$5"); }
left() { echo $((deadline - (SECONDS - t0))); }
cap() {  # LIMIT RESERVE -> the timeout for a step, or 0 when fewer than 10 s would be left
  local l; l=$(($(left) - $2)); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 10 ] && l=0; echo "$l"
}
run_step() {  # NAME TIMEOUT CMD... -> rc, dur; the output goes to OUT/NAME.log
  local name=$1 lim=$2; shift 2
  local t=$SECONDS
  echo "== $name (timeout ${lim} s, $(left) s left): $*"
  { echo "\$ $*"; echo; } > "$out/$name.log"
  timeout -k 10 "$lim" "$@" >> "$out/$name.log" 2>&1
  rc=$?
  dur=$((SECONDS - t))
  echo "   exit $rc after $dur s"
}
err_line() {  # the first error worth showing from a log, else its last line
  local l
  l=$(grep -m1 -E '^error:|ERROR SUMMARY: [1-9]|not expected|Could not convert|At Most|FAILED|out of memory' "$1")
  [ -n "$l" ] || l=$(grep -v '^[[:space:]]*$' "$1" | tail -1)
  echo "$l" | cut -c1-200
}

# gpu
t=$SECONDS
q=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader,nounits 2>&1 | head -1)
IFS=, read -r gpu_name gpu_mib gpu_driver gpu_cc <<< "$q"
gpu_name=$(echo "$gpu_name" | xargs); gpu_mib=$(echo "$gpu_mib" | xargs); gpu_driver=$(echo "$gpu_driver" | xargs)
gpu_cc=$(echo "$gpu_cc" | xargs)
arch=$(arch_for "$gpu_cc")
if [[ $gpu_mib =~ ^[0-9]+$ ]]; then
  record gpu ok $((SECONDS - t)) "${expect[gpu]}" "$gpu_name, $gpu_mib MiB, driver $gpu_driver, compute capability $gpu_cc -> $arch"
else
  record gpu FAIL $((SECONDS - t)) "${expect[gpu]}" "nvidia-smi: $q"
  gpu_mib=81559
fi
san=$(find_sanitizer) || san=""
machine="$gpu_name ($gpu_mib MiB, driver $gpu_driver) on $(hostname), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs))"
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
git diff --quiet HEAD 2> /dev/null || commit+=" + uncommitted changes"
date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')

# configure + build
built=0
lim=$(cap "${limit[configure]}" 0)
gen=(); [ -f "$build/CMakeCache.txt" ] || { command -v ninja > /dev/null && gen=(-G Ninja); }
nvcc=$(nvcc_path); [ -z "$nvcc" ] || [ -f "$build/CMakeCache.txt" ] || gen+=(-DCMAKE_CUDA_COMPILER="$nvcc")
run_step configure "$lim" cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DSKV_ENABLE_CUDA=ON \
  -DSKV_BUILD_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES="$arch"
if [ $rc -ne 0 ]; then
  l=$(grep -m1 -A1 'CMake Error' "$out/configure.log" | paste -sd ' '); [ -n "$l" ] || l=$(tail -1 "$out/configure.log")
  record configure FAIL $dur "${expect[configure]}" "exit $rc: $(echo "$l" | cut -c1-200)"
elif ! grep -q 'CUDA=ON' "$out/configure.log"; then
  record configure FAIL $dur "${expect[configure]}" "CMake found no nvcc (CUDA=OFF): set CUDA_HOME or CMAKE_CUDA_COMPILER"
else
  record configure ok $dur "${expect[configure]}" "$build, CMAKE_CUDA_ARCHITECTURES=$(grep -m1 '^CMAKE_CUDA_ARCHITECTURES' "$build/CMakeCache.txt" | cut -d= -f2)"
  lim=$(cap "${limit[build]}" 0)
  run_step build "$lim" cmake --build "$build" --target scalekv skv_cuda_tests -j "$(nproc)"
  if [ $rc -eq 0 ]; then built=1; record build ok $dur "${expect[build]}" "scalekv, skv_cuda_tests"
  else record build FAIL $dur "${expect[build]}" "exit $rc: $(grep -m1 -E 'error|FAILED' "$out/build.log" | cut -c1-200)"; fi
fi

# the tests, under compute-sanitizer
sanitized() {  # TOOL -> pre (the sanitizer prefix, empty without one)
  pre=(); [ -n "$san" ] || return 0; san_args "$1"; pre=("$san" "${sa[@]}")
}
test_step() {  # NAME TOOL KIND(gtest|golden)
  local name=$1 tool=$2 kind=$3 lim status result
  if [ $built = 0 ]; then record "$name" "not run" 0 "${expect[$name]}" "no build"; return; fi
  lim=$(cap "${limit[$name]}" $bench_reserve)
  if [ "$lim" = 0 ]; then record "$name" skipped 0 "${expect[$name]}" "budget spent (deadline $deadline s; the tests keep $bench_reserve s for the benchmark)"; return; fi
  sanitized "$tool"
  case $name in unit-memcheck) unit_cmd ;; unit-racecheck) race_cmd ;; golden-memcheck) golden_cmd ;; esac
  run_step "$name" "$lim" "${pre[@]}" "${cmd[@]}"
  local log="$out/$name.log"
  local errs; errs=$(grep -o 'ERROR SUMMARY: [0-9]* error' "$log" | tail -1 | grep -o '[0-9]*')
  local sanmsg="$tool ${errs:-?} errors"; [ -n "$san" ] || sanmsg="NOT under compute-sanitizer (absent)"
  if [ "$kind" = gtest ]; then
    local pass fail skip
    pass=$(grep -o '^\[  PASSED  \] [0-9]*' "$log" | grep -o '[0-9]*$'); fail=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$log")
    skip=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$log")
    result="${pass:-0} passed, $fail failed, $skip skipped; $sanmsg"
    [ "$fail" -gt 0 ] && result+="; first: $(grep -m1 '^\[  FAILED  \] [A-Za-z]' "$log" | cut -c14-120)"
    [ "$skip" -gt 0 ] && result+="; skipped tests mean no GPU was visible to them"
  else
    result="$(grep -m1 '^goldens:' "$log" || echo 'no golden summary'); $sanmsg"
    [ $rc -eq 77 ] && result+="; exit 77: the run saw no GPU"
    grep -q '^FAIL' "$log" && result+="; first: $(grep -m1 '^FAIL' "$log" | cut -c1-120)"
  fi
  if [ $rc -ge 124 ] && [ $rc -ne 77 ]; then status=TIMEOUT; result="stopped after $lim s; $result"
  elif [ $rc -eq 99 ]; then status=FAIL; result="$tool found errors: $result"
  elif [ $rc -ne 0 ] || [ "${skip:-0}" -gt 0 ]; then status=FAIL; [ $rc -eq 0 ] || result="exit $rc: $result"
  elif [ -z "$san" ]; then status=WARN
  else status=ok; fi
  record "$name" "$status" "$dur" "${expect[$name]}" "$result"
}
test_step unit-memcheck memcheck gtest
test_step unit-racecheck racecheck gtest
test_step golden-memcheck memcheck golden

# plan: planned KV peak per policy and batch, and the batches that fit this GPU
declare -A plan_kv plan_w run_batches
t=$SECONDS plan_status=ok plan_result=""
if [ $built = 0 ]; then
  plan_status="not run"; plan_result="no build"
else
  for p in "${policies[@]}"; do
    fit=()
    for b in "${batches[@]}"; do
      plan_cmd "$p" "$b" "${gpu_mib}MiB"
      timeout 30 "${cmd[@]}" > "$out/plan-$p-b$b.json" 2>> "$out/plan.log"
      plan_kv[$p/$b]=$(json_int "$out/plan-$p-b$b.json" kv_bytes_peak)
      plan_w[$p/$b]=$(json_int "$out/plan-$p-b$b.json" weight_bytes_per_rank)
      mb=$(json_int "$out/plan-$p-b$b.json" max_batch)
      if [ -z "${plan_kv[$p/$b]}" ]; then plan_status=FAIL; plan_result+=" $p b$b: $(tail -1 "$out/plan.log");"; fit+=("$b")
      elif [ "$b" -le "${mb:-0}" ]; then fit+=("$b"); fi
      [ "$b" = "${batches[-1]}" ] && plan_result+=" $p: largest batch ${mb:-?} in $gpu_mib MiB;"
    done
    run_batches[$p]=$(IFS=,; echo "${fit[*]}")
  done
fi
plan_result=${plan_result# }
record plan "$plan_status" $((SECONDS - t)) "${expect[plan]}" "${plan_result%;}"

# bench: one process per policy, batches 1,8,16 (those that fit); the two share the time left
nb=${#policies[@]}
for p in "${policies[@]}"; do
  step=bench-$p
  if [ $built = 0 ]; then record "$step" "not run" 0 "${expect[$step]}" "no build"; nb=$((nb - 1)); continue; fi
  if [ -z "${run_batches[$p]}" ]; then record "$step" skipped 0 "${expect[$step]}" "no batch fits"; nb=$((nb - 1)); continue; fi
  lim=$(( $(left) / nb - 5 )); nb=$((nb - 1))
  if [ "$lim" -lt 10 ]; then record "$step" skipped 0 "${expect[$step]}" "budget spent (deadline $deadline s; the tests keep $bench_reserve s for the benchmark)"; continue; fi
  bench_cmd "$p" "${run_batches[$p]}" "$out/$step.md"
  : > "$out/$step.md"
  run_step "$step" "$lim" "${cmd[@]}"
  if [ $rc -eq 0 ]; then st=ok; res="batches ${run_batches[$p]}"
  elif [ $rc -ge 124 ]; then st=TIMEOUT; res="stopped after $lim s (its share of the $deadline s deadline)"
  else st=FAIL; res="exit $rc: $(err_line "$out/$step.log")"; fi
  record "$step" "$st" "$dur" "${expect[$step]}" "$res"
  step_res=$res
  for b in "${batches[@]}"; do
    name="$p, batch $b"
    if [[ ,${run_batches[$p]}, != *,$b,* ]]; then
      record "$name" skipped - - "does not fit $gpu_mib MiB by the plan (KV peak $(mib "${plan_kv[$p/$b]:-0}") MiB + weights + activations)"
      continue
    fi
    row=$(parse_bench_md "$out/$step.md" | awk -v b="$b" '$1 == b' | head -1)
    if [ -z "$row" ]; then record "$name" "not reached" - - "$step ended before this batch: $step_res"; continue; fi
    read -r _ ttot tdec tw tkv tbe tg ta <<< "$row"
    res=$(awk -v tot="$ttot" -v dec="$tdec" -v b="$b" -v an="$anchor" -v kv="$tkv" -v pk="${plan_kv[$p/$b]:-0}" \
              -v w="$tw" -v pw="${plan_w[$p/$b]:-0}" -v g="$tg" -v a="$ta" 'BEGIN {
      d = (dec == "-") ? 0 : dec; s = (tot + d) / b
      printf "%.3f s/image = %.2fx the paper'"'"'s %.1f s (transformer %.3f s, decoder %s, batch of %d); ", s, s / an, an,
             tot, (dec == "-") ? "not run" : sprintf("%.3f s", dec), b
      printf "KV peak %.1f MiB vs plan %.1f MiB (%s); ", kv / 1048576, pk / 1048576,
             (pk > 0) ? sprintf("%.1f %%", 100 * kv / pk) : "no plan"
      printf "weights %.0f MiB (bf16 plan %.0f MiB%s); ", w, pw / 1048576,
             (pw > 0 && w * 1048576 > 1.5 * pw) ? ": F32, --weight-dtype not honoured" : ""
      printf "attention %s of HBM peak; GEMM %s of cuBLAS peak", (a == "-") ? "n/a" : a, (g == "-") ? "n/a" : g }')
    [ "$ta" = - ] && [ "$tg" = - ] && res+=" (no GPU figures found in the bench output)"
    st=ok; [ "$tbe" = cuda ] || { st=FAIL; res="ran on backend $tbe, not cuda; $res"; }
    record "$name" "$st" - - "$res"
  done
done

# summary: one table
{
  echo "## gpu_bench.sh: $machine"
  echo
  echo "$date_utc, commit $commit, $((SECONDS - t0)) s in all (deadline $deadline s); logs in $out/"
  echo
  echo "| step | status | time (s) | expected (s) | result |"
  echo "|---|---|---:|---:|---|"
  for i in "${!R_STEP[@]}"; do
    echo "| ${R_STEP[$i]} | ${R_STATUS[$i]} | ${R_TIME[$i]} | ${R_EXP[$i]} | ${R_RESULT[$i]//|//} |"
  done
} > "$md"
echo
cat "$md"
failed=0
for s in "${R_STATUS[@]}"; do case $s in FAIL | TIMEOUT) failed=1 ;; esac; done
exit $failed
