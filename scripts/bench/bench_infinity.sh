#!/usr/bin/env bash
# bench_infinity.sh - scalekv (full cache and ScaleKV 10 %) vs a PyTorch reference on the same
# Infinity shapes, same machine, same run.
#   scripts/bench/bench_infinity.sh [RESOLUTION] [BATCHES] [DEPTH] [REPEATS] [OUT_DIR] [CONFIG]
# Defaults: 512, batches 1,4, depth 2 of the config's blocks (for time; 0 = all), 3 repeats after one
# warm-up, bench-results/infinity, configs/infinity-2b.json. Random weights and random 32-token prompts,
# float32, CFG (2 rows per image), all cores for both sides. The PyTorch side
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
    build/bin/scalekv bench --model "$cfg" --resolution "$res" --batch "$b" --depth "$depth" --repeats "$repeats" \
      "${warm[@]}" --no-decode --kv-policy "$p" --kv-budget 10% --md "$out/skv_${res}_b${b}_$p.md" > /dev/null
  done
  /usr/bin/python3 scripts/bench/infinity_torch_ref.py --model "$cfg" --resolution "$res" --batch "$b" \
    --depth "$depth" --repeats "$repeats" "${twarm[@]}" --threads "$threads" > "$out/torch_${res}_b${b}.md"
done
/usr/bin/python3 - "$out" "$res" "$batches" "$depth" "$repeats" "$cfg" <<'PY'
import re, sys
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
         "| batch | scalekv full s | scalekv ScaleKV 10 % s | PyTorch full s | PyTorch / scalekv (full) | "
         "KV peak full (MiB) | KV peak ScaleKV (MiB) |", "|---|---|---|---|---|---|---|"]
for b in batches.split(","):
    f, s, t = (total(f"{out}/skv_{res}_b{b}_full.md"), total(f"{out}/skv_{res}_b{b}_scalekv.md"),
               total(f"{out}/torch_{res}_b{b}.md"))
    lines.append(f"| {b} | {f:.2f} | {s:.2f} | {t:.2f} | {t / f:.2f}x | {kv(f'{out}/skv_{res}_b{b}_full.md'):.1f} | "
                 f"{kv(f'{out}/skv_{res}_b{b}_scalekv.md'):.1f} |")
md = "\n".join(lines) + "\n"
with open(f"{out}/infinity_bench_{res}.md", "w") as f:
    f.write(md)
print(md)
PY
