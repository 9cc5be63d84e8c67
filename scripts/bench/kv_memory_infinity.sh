#!/usr/bin/env bash
# kv_memory_infinity.sh - issue 4's memory criterion on a real run of Infinity-2B's shape:
# random weights, the 512x512 (1:1) schedule, batch 1 with CFG, all 32 blocks. `scalekv bench` runs
# the full cache and ScaleKV at 10 % and reports the allocator's measured KV peak (persistent store plus
# transient buffers); `scalekv plan` predicts both. Passes (exit 0) when ScaleKV's measured peak is at
# most 12.5 % of the full cache's and both plans are within 1 % of the measurements.
#   scripts/bench/kv_memory_infinity.sh [CONFIG] [RESOLUTION] [OUT_DIR]
# About 10 minutes per run on 2 cores; ~9 GB of memory for the fp32 random weights.
set -euo pipefail
cd "$(dirname "$0")/../.."
cfg=${1:-configs/infinity-2b.json}
res=${2:-512}
out=${3:-bench-results/kv_memory_infinity}
mkdir -p "$out"
bin=build/bin/scalekv
export SKV_PROGRESS=0
for p in full scalekv; do
  "$bin" bench --model "$cfg" --resolution "$res" --batch 1 --repeats 1 --warmup 0 --no-decode \
    --kv-policy "$p" --kv-budget 10% --md "$out/$p.md" > /dev/null
  "$bin" plan --model "$cfg" --resolution "$res" --batch 1 --kv-policy "$p" --kv-budget 10% --json > "$out/$p.plan.json"
done
/usr/bin/python3 - "$out" "$cfg" "$res" <<'PY'
import json, re, sys
out, cfg, res = sys.argv[1:]
m, plan = {}, {}
for p in ("full", "scalekv"):
    md = open(f"{out}/{p}.md").read()
    m[p] = int(re.search(r"^KV measured peak: (\d+) bytes", md, re.M).group(1)) / 2**20
    plan[p] = json.load(open(f"{out}/{p}.plan.json"))["kv_bytes_peak"] / 2**20
share = m["scalekv"] / m["full"]
err = {p: abs(plan[p] - m[p]) / m[p] for p in m}
machine = re.search(r"^machine: (.*)$", open(f"{out}/full.md").read(), re.M).group(1)
lines = [f"KV memory, {cfg} shape (all blocks, random weights), {res}x{res} 1:1, batch 1 + CFG, fp32 K and V; {machine}",
         "Command: `scripts/bench/kv_memory_infinity.sh` (scalekv bench + scalekv plan per policy).", "",
         "| policy | measured KV peak (MiB) | planned (MiB) | plan error | share of full (measured) |", "|---|---|---|---|---|"]
for p in ("full", "scalekv"):
    lines.append(f"| {p}{' 10 %' if p == 'scalekv' else ''} | {m[p]:.2f} | {plan[p]:.2f} | {100 * err[p]:.2f}% | "
                 f"{100 * m[p] / m['full']:.2f}% |")
ok = share <= 0.125 and max(err.values()) <= 0.01
lines += ["", f"criterion (scalekv <= 12.5 % of full, plans within 1 %): {'PASS' if ok else 'FAIL'}"]
open(f"{out}/kv_memory.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if ok else 1)
PY
