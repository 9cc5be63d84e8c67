#!/usr/bin/env bash
# gpu_bench.sh - everything the CUDA issue asks to measure on a GPU, in one command:
#   scripts/bench/gpu_bench.sh [OUT_DIR]            (default bench-results/gpu-<date>)
# 1. builds (if needed) and runs the CUDA tests and the goldens with --device cuda (ctest -L cuda);
# 2. `scalekv bench --device cuda` for VAR-d30 (and the Infinity configs when this build's bench takes
#    them), batch 1/8/16 with CFG, F32 and BF16 Linear weights, full KV cache and the compressed policy
#    ($KV_COMPRESSED, default "--kv-policy scalekv"; skipped with the error when the build lacks it);
#    each run prints per-scale times, images/s, peak device memory per category and the GPU figures
#    (GEMM TFLOP/s vs the cuBLAS peak, attention GB/s vs HBM peak, measured in the same run);
# 3. the PyTorch reference (scripts/bench/var_torch_ref.py --device cuda) on the same shapes, F32 and BF16;
# 4. OUT_DIR/gpu_bench.md: GPU model, driver, date, commit, every table, and scalekv vs PyTorch.
# Paste OUT_DIR/gpu_bench.md into the README's GPU section. Nothing here asserts a time.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
out=${1:-bench-results/gpu-$(date -u +%Y%m%d-%H%M)}
batches=${BATCHES:-1,8,16}
repeats=${REPEATS:-3}
compressed=${KV_COMPRESSED:---kv-policy scalekv}
mkdir -p "$out"
md="$out/gpu_bench.md"

command -v nvidia-smi >/dev/null || { echo "gpu_bench.sh: no nvidia-smi: this is not a GPU machine"; exit 77; }
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
if [ ! -x build/bin/scalekv ] || [ ! -x build/bin/skv_cuda_tests ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build -j "$(nproc)" || exit 1
fi
export SKV_PROGRESS=0
{
  echo "## scalekv on $gpu"
  echo
  echo "- date: $(date -u +%Y-%m-%d) (UTC), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), host $(hostname)"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), torch: $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || python3 -c 'import torch; print(torch.__version__)' 2>/dev/null || echo absent)"
  echo "- command: scripts/bench/gpu_bench.sh $out (BATCHES=$batches REPEATS=$repeats KV_COMPRESSED=\"$compressed\")"
  echo
} > "$md"

echo "### CUDA tests (ctest -L cuda)" >> "$md"
ctest --test-dir build -L cuda --output-on-failure > "$out/ctest_cuda.txt" 2>&1
echo "ctest -L cuda exit $?: $(grep -E 'tests passed|tests failed' "$out/ctest_cuda.txt" | tail -1)" | tee -a "$md"
grep -E '\((Failed|Skipped|Not Run)\)' "$out/ctest_cuda.txt" | sed 's/^/    /' >> "$md"
echo >> "$md"

py=/usr/bin/python3
$py -c 'import torch' 2>/dev/null || py=python3

run_bench() {  # name config weight-dtype batches policy-args...
  local name=$1 cfg=$2 wdt=$3 b=$4; shift 4
  echo "== scalekv bench $name ($cfg, $wdt, batch $b, $*)"
  if build/bin/scalekv bench --device cuda --model "$cfg" --batch "$b" --repeats "$repeats" --weight-dtype "$wdt" \
       "$@" --md "$out/$name.md" > "$out/$name.log" 2>&1; then
    { echo "### $name"; echo; cat "$out/$name.md"; echo; } >> "$md"
  else
    { echo "### $name"; echo; echo "not run: $(grep -m1 'error' "$out/$name.log")"; echo; } >> "$md"
  fi
}

for cfg in configs/var-d30.json configs/infinity-2b.json; do
  base=$(basename "$cfg" .json)
  for wdt in f32 bf16; do
    run_bench "$base-$wdt-full" "$cfg" "$wdt" "$batches" --kv-policy full
    # shellcheck disable=SC2086
    run_bench "$base-$wdt-compressed" "$cfg" "$wdt" "$batches" $compressed
  done
done
# The paper's Table 3 claim: Infinity-8B, 1024x1024, batch 16 with the compressed cache fits in 80 GB.
# shellcheck disable=SC2086
run_bench "infinity-8b-bf16-compressed-b16" configs/infinity-8b.json bf16 16 $compressed

for dt in f32 bf16; do
  echo "== torch reference var-d30 $dt"
  $py scripts/bench/var_torch_ref.py --device cuda --dtype "$dt" --model configs/var-d30.json --batch "$batches" \
    --repeats "$repeats" --json "$out/torch-var-d30-$dt.json" > "$out/torch-var-d30-$dt.log" 2>&1 ||
    echo "torch reference $dt failed: $(tail -1 "$out/torch-var-d30-$dt.log")" >> "$md"
done

$py - "$out" "$md" <<'PY'
import json, os, re, sys
out, md = sys.argv[1], sys.argv[2]
lines = ["### scalekv vs PyTorch (var-d30, full KV cache, same GPU, same run)", "",
         "| weights | batch | scalekv total s | torch total s | scalekv images/s | torch images/s | torch peak GiB | speed-up |",
         "|---|---|---|---|---|---|---|---|"]
versions = set()
for dt in ("f32", "bf16"):
    tj, sm = f"{out}/torch-var-d30-{dt}.json", f"{out}/var-d30-{dt}-full.md"
    if not (os.path.exists(tj) and os.path.exists(sm)):
        continue
    t = json.load(open(tj))
    versions.add(f"torch {t['torch']}, SDPA {'on' if t.get('sdpa') else 'off'}")
    rows = {}
    for line in open(sm):  # first table of `scalekv bench`: | batch | total s | ...
        m = re.match(r"\| (\d+) \| ([\d.]+) \|", line)
        if m and int(m.group(1)) not in rows:
            rows[int(m.group(1))] = float(m.group(2))
    for b, r in t["batches"].items():
        s = rows.get(int(b))
        if s:
            lines.append(f"| {dt} | {b} | {s:.3f} | {r['total']:.3f} | {int(b) / s:.2f} | {int(b) / r['total']:.2f} | "
                         f"{r.get('peak_bytes', 0) / 2**30:.1f} | {r['total'] / s:.2f}x |")
lines += ["", "PyTorch reference: scripts/bench/var_torch_ref.py --device cuda (" + "; ".join(sorted(versions)) +
          "); f32 = TF32 off on both sides, bf16 = PyTorch in bf16 throughout, scalekv with BF16 Linear weights."]
open(md, "a").write("\n".join(lines) + "\n")
PY
echo "gpu_bench.sh: wrote $md"
cat "$md"
