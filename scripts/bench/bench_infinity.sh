#!/usr/bin/env bash
# bench_infinity.sh - scalekv (full cache and ScaleKV 10 %) vs a PyTorch reference on the same
# Infinity shapes, same machine, same run.
#   scripts/bench/bench_infinity.sh [RESOLUTION] [BATCHES] [DEPTH] [REPEATS] [OUT_DIR] [CONFIG]
# Defaults: 512, batches 1,4, depth 2 of the config's blocks (for time; 0 = all), 3 repeats after one
# warm-up, bench-results/infinity, configs/infinity-2b.json. Random weights and random 32-token prompts,
# CFG (2 rows per image), all cores for both sides; scalekv in F32 and with --compute-dtype bf16 (skipped,
# with the reason, on a CPU without avx512_bf16), PyTorch in F32. The PyTorch side
# (scripts/bench/infinity_torch_ref.py, written from the architecture) keeps the full cache the way the
# official code does (concatenated per scale). Writes OUT_DIR/infinity_bench.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
res=${1:-512}
batches=${2:-1,4}
depth=${3:-2}
repeats=${4:-3}
out=${5:-bench-results/infinity}
cfg=${6:-configs/infinity-2b.json}
threads=$(nproc)
mkdir -p "$out"
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 SKV_PROGRESS=0
warm=(--warmup 1); twarm=()
[ "$repeats" -gt 1 ] || { warm=(--warmup 0); twarm=(--no-warmup); }
for b in ${batches//,/ }; do
  for p in full scalekv; do
    budget=(); [ "$p" = full ] || budget=(--kv-budget 10%)
    build/bin/scalekv bench --model "$cfg" --resolution "$res" --batch "$b" --depth "$depth" --repeats "$repeats" \
      "${warm[@]}" --no-decode --kv-policy "$p" "${budget[@]}" --md "$out/skv_${res}_b${b}_$p.md" > /dev/null
    # The same with --compute-dtype bf16 (skipped, with the reason, on a CPU without avx512_bf16).
    if ! build/bin/scalekv bench --model "$cfg" --resolution "$res" --batch "$b" --depth "$depth" --repeats "$repeats" \
        "${warm[@]}" --no-decode --kv-policy "$p" "${budget[@]}" --compute-dtype bf16 \
        --md "$out/skv_${res}_b${b}_${p}_bf16.md" > /dev/null 2> "$out/bf16.err"; then
      grep -q "needs avx512_bf16" "$out/bf16.err" || { cat "$out/bf16.err"; exit 1; }
      rm -f "$out/skv_${res}_b${b}_${p}_bf16.md"
    fi
  done
  /usr/bin/python3 scripts/bench/infinity_torch_ref.py --model "$cfg" --resolution "$res" --batch "$b" \
    --depth "$depth" --repeats "$repeats" "${twarm[@]}" --threads "$threads" > "$out/torch_${res}_b${b}.md"
done
/usr/bin/python3 - "$out" "$res" "$batches" "$depth" "$repeats" "$cfg" <<'PY'
import os, re, sys
out, res, batches, depth, repeats, cfg = sys.argv[1:]
def total(path):
    return float(re.search(r"^\| \*\*total\*\* \| \d+ \| \*\*([\d.]+)\*\*", open(path).read(), re.M).group(1))
def kv(path):
    return int(re.search(r"^KV measured peak: (\d+) bytes", open(path).read(), re.M).group(1)) / 2**20
head = open(f"{out}/skv_{res}_b{batches.split(',')[0]}_full.md").read()
machine = re.search(r"^machine: (.*)$", head, re.M).group(1)
lines = [f"Infinity ({cfg} shape, depth {depth}), {res}x{res} 1:1, CFG, random weights; {machine}",
         f"Command: `scripts/bench/bench_infinity.sh {res} {batches} {depth} {repeats}`; transformer time, median of "
         f"{repeats} run(s); the decoder is not timed here.", "",
         "| batch | scalekv full F32 s | scalekv full BF16 s | scalekv ScaleKV 10 % F32 s | scalekv ScaleKV 10 % BF16 s | "
         "PyTorch full F32 s | PyTorch / scalekv (full F32) | PyTorch / scalekv (full BF16) | KV peak full (MiB) | "
         "KV peak ScaleKV (MiB) |", "|---|---|---|---|---|---|---|---|---|---|"]
def maybe(path):
    return total(path) if os.path.exists(path) else None
fmt = lambda v, spec="{:.2f}": "skipped (no avx512_bf16)" if v is None else spec.format(v)
for b in batches.split(","):
    f, s, t = (total(f"{out}/skv_{res}_b{b}_full.md"), total(f"{out}/skv_{res}_b{b}_scalekv.md"),
               total(f"{out}/torch_{res}_b{b}.md"))
    fb, sb = maybe(f"{out}/skv_{res}_b{b}_full_bf16.md"), maybe(f"{out}/skv_{res}_b{b}_scalekv_bf16.md")
    lines.append(f"| {b} | {f:.2f} | {fmt(fb)} | {s:.2f} | {fmt(sb)} | {t:.2f} | {t / f:.2f}x | "
                 f"{fmt(None if fb is None else t / fb, '{:.2f}x')} | {kv(f'{out}/skv_{res}_b{b}_full.md'):.1f} | "
                 f"{kv(f'{out}/skv_{res}_b{b}_scalekv.md'):.1f} |")
md = "\n".join(lines) + "\n"
with open(f"{out}/infinity_bench_{res}.md", "w") as f:
    f.write(md)
print(md)
PY
