#!/usr/bin/env bash
# bench_var.sh - scalekv vs a PyTorch reference on the same VAR shapes, same machine, same run.
#   scripts/bench/bench_var.sh [CONFIG] [BATCHES] [REPEATS] [OUT_DIR]
# Defaults: configs/var-d16.json (256x256), batches 1,8, 3 repeats, out bench-results/.
# Both sides use random weights of the same shapes, float32 on the CPU, the same thread count
# (all cores), full KV cache, top-k 900 / top-p 0.95 sampling, CFG 1.5. Writes OUT_DIR/var_bench.md.
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
build/bin/scalekv bench --model "$cfg" --batch "$batches" --repeats "$repeats" --md "$out/scalekv.md" > /dev/null
/usr/bin/python3 scripts/bench/var_torch_ref.py --model "$cfg" --batch "$batches" --repeats "$repeats" \
  --threads "$threads" --json "$out/torch.json" > /dev/null
/usr/bin/python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
md = open(f"{out}/scalekv.md").read()
t = json.load(open(f"{out}/torch.json"))
rows = {}
for line in md.splitlines():
    m = re.match(r"\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", line)
    if m and int(m.group(1)) not in rows:
        rows[int(m.group(1))] = tuple(float(x) for x in m.groups()[1:])
lines = ["", f"PyTorch reference (scripts/bench/var_torch_ref.py, torch {t['torch']}, {t['threads']} threads) on the same shapes:", "",
         "| batch | scalekv total s | torch total s | scalekv transformer s | torch transformer s | scalekv decoder s | torch decoder s | speed-up (total) |",
         "|---|---|---|---|---|---|---|---|"]
for b, r in t["batches"].items():
    s = rows.get(int(b))
    if s:
        lines.append(f"| {b} | {s[0]:.3f} | {r['total']:.3f} | {s[1]:.3f} | {r['transformer']:.3f} | {s[2]:.3f} | {r['decoder']:.3f} | {r['total'] / s[0]:.2f}x |")
open(f"{out}/var_bench.md", "w").write(md + "\n".join(lines) + "\n")
print(open(f"{out}/var_bench.md").read())
PY
