#!/usr/bin/env bash
# bench_var.sh - scalekv vs a PyTorch reference on the same VAR shapes, same machine, same run.
#   scripts/bench/bench_var.sh [CONFIG] [BATCHES] [REPEATS] [OUT_DIR]
# Defaults: configs/var-d16.json (256x256), batches 1,8, 3 repeats, out bench-results/.
# Both sides use random weights of the same shapes, the same thread count (all cores), full KV cache,
# top-k 900 / top-p 0.95 sampling, CFG 1.5. scalekv runs twice, --compute-dtype f32 and bf16 (bf16 is
# reported as skipped, with the reason, on a CPU without avx512_bf16); PyTorch runs in F32. Writes
# OUT_DIR/var_bench.md (and each run's full table in OUT_DIR/scalekv_{f32,bf16}.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
cfg=${1:-configs/var-d16.json}
batches=${2:-1,8}
repeats=${3:-3}
out=${4:-bench-results}
threads=$(nproc)
mkdir -p "$out"
[ -x build/bin/scalekv ] || { echo "bench_var.sh: build first (scripts/test.sh or cmake --build build)"; exit 1; }
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads SKV_PROGRESS=0
for d in f32 bf16; do
  if ! build/bin/scalekv bench --model "$cfg" --batch "$batches" --repeats "$repeats" --compute-dtype "$d" \
      --md "$out/scalekv_$d.md" > /dev/null 2> "$out/scalekv_$d.err"; then
    # bf16 on a CPU without avx512_bf16: the table says why instead of a row; anything else fails.
    grep -q "needs avx512_bf16" "$out/scalekv_$d.err" || { cat "$out/scalekv_$d.err"; exit 1; }
    echo "bf16 skipped: $(tail -1 "$out/scalekv_$d.err")" > "$out/scalekv_$d.skipped"
  fi
done
/usr/bin/python3 scripts/bench/var_torch_ref.py --model "$cfg" --batch "$batches" --repeats "$repeats" \
  --threads "$threads" --json "$out/torch.json" > /dev/null
/usr/bin/python3 - "$out" "$cfg" "$batches" "$repeats" <<'PY'
import json, os, re, sys
out, cfg, batches, repeats = sys.argv[1:]
t = json.load(open(f"{out}/torch.json"))
rows, peaks, md = {}, {}, open(f"{out}/scalekv_f32.md").read()
for d in ("f32", "bf16"):
    path = f"{out}/scalekv_{d}.md"
    if not os.path.exists(path) or os.path.exists(f"{out}/scalekv_{d}.skipped"):
        continue
    text = open(path).read()
    peaks[d] = re.search(r"GEMM peaks measured in this run[^:]*: (.*)", text).group(1)
    for line in text.splitlines():
        m = re.match(r"\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \| \d+ \| [\d.]+ \| (\d+) % \|", line)
        if m and (int(m.group(1)), d) not in rows:
            rows[(int(m.group(1)), d)] = tuple(float(x) for x in m.groups()[1:])
machine = re.search(r"^- machine: (.*)$", md, re.M).group(1)
lines = [f"### scalekv vs PyTorch on {cfg}, F32 and BF16", "",
         f"- machine: {machine}",
         f"- command: `scripts/bench/bench_var.sh {cfg} {batches} {repeats}`: `scalekv bench --compute-dtype f32|bf16` and "
         f"`scripts/bench/var_torch_ref.py` (torch {t['torch']}, F32, {t['threads']} threads), median of {repeats} runs "
         "after one warm-up each, random weights of the same shapes, full cache, top-k 900 / top-p 0.95, CFG 1.5",
         *[f"- GEMM peaks measured in the {d} run (2048^3): {p}" for d, p in peaks.items()], "",
         "| batch | scalekv dtype | scalekv total s | scalekv transformer s | scalekv decoder s | transformer share of "
         "its dtype's GEMM peak | torch F32 total s | torch transformer s | torch decoder s | speed-up (total) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for b, r in t["batches"].items():
    for d in ("f32", "bf16"):
        s = rows.get((int(b), d))
        if s:
            lines.append(f"| {b} | {d.upper()} | {s[0]:.3f} | {s[1]:.3f} | {s[2]:.3f} | {s[3]:.0f} % | {r['total']:.3f} | "
                         f"{r['transformer']:.3f} | {r['decoder']:.3f} | {r['total'] / s[0]:.2f}x |")
for d in ("bf16",):
    if os.path.exists(f"{out}/scalekv_{d}.skipped"):
        lines.append("\n" + open(f"{out}/scalekv_{d}.skipped").read().strip())
open(f"{out}/var_bench.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
