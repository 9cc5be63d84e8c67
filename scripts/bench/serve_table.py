#!/usr/bin/env python3
"""serve_table.py - the tables and the latency plot of scripts/bench/serve_bench.sh.

Reads OUT_DIR/runs/*.json (one `scalekv bench serve --json` each, named MODEL_MODE_POLICY_rRATE or
MODEL_burst_POLICY) and writes OUT_DIR/serve_bench.md and OUT_DIR/serve_latency.png (p50 and p99
latency against the arrival rate, full cache vs ScaleKV 10 %, static vs continuous, demo model).
"""
import glob
import json
import os
import sys

out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
    runs[os.path.basename(path)[:-5]] = json.load(open(path))
if not runs:
    sys.exit(f"serve_table.py: no runs in {out}/runs")

MiB = 2**20
first = next(iter(runs.values()))
md = ["### scalekv bench serve: scale-level batching under one KV cap", "",
      f"- machine: {first['machine']}",
      "- command: `scripts/bench/serve_bench.sh` (each row one `scalekv bench serve` run; the first row's: "
      f"`{first['command']}`)",
      "- latency = finish (PNG ready) - arrival; queue = admission - arrival; one run per row (arrivals are a "
      "seeded Poisson trace, so rows of one rate see the same trace)", ""]

MODELS = [("demo", "demo model (VAR, 6 layers, 32x32, 40 requests)"),
          ("d16", "VAR-d16 shape, random weights, depth reduced to 4, 256x256 (20 requests)")]
for key, title in MODELS:
    rows = [(k, r) for k, r in runs.items() if k.startswith(key + "_") and "_burst_" not in k]
    if not rows:
        continue
    cap = rows[0][1]["kv_cap_bytes"]
    md += [f"**{title}**, KV cap {cap / MiB:.0f} MiB:", "",
           "| mode | KV policy | rate (req/s) | images/s | latency p50 s | latency p99 s | queue p50 s | most in flight "
           "| KV peak / cap |", "|---|---|---|---|---|---|---|---|---|"]
    rows.sort(key=lambda kr: (kr[1]["rate"], ["sequential", "static", "continuous"].index(kr[1]["mode"]),
                              kr[1]["kv_policy"]))
    for _, r in rows:
        pol = "full" if r["kv_policy"] == "full" else f"{r['kv_policy']} {r['kv_budget']}"
        md.append(f"| {r['mode']} | {pol} | {r['rate']:g} | {r['images_per_s']:.2f} | {r['latency_p50_s']:.2f} | "
                  f"{r['latency_p99_s']:.2f} | {r['queue_p50_s']:.2f} | {r['max_in_flight']} | "
                  f"{r['kv_peak_bytes'] / MiB:.1f} / {r['kv_cap_bytes'] / MiB:.0f} MiB |")
    md.append("")

md += ["**Concurrency at one cap** (every request arrives at once; continuous mode):", "",
       "| model | KV cap | full cache: most in flight | ScaleKV 10 %: most in flight | ratio | KV peak full / ScaleKV "
       "| images/s full / ScaleKV |", "|---|---|---|---|---|---|---|"]
for key, title in [("demo", "demo model"), ("d16full", "VAR-d16 shape, depth 16, 256x256"),
                   ("d16", "VAR-d16 shape, depth 4")]:
    f, s = runs.get(f"{key}_burst_full"), runs.get(f"{key}_burst_scalekv")
    if not f or not s:
        continue
    md.append(f"| {title} ({f['images']} requests) | {f['kv_cap_bytes'] / MiB:.0f} MiB | {f['max_in_flight']} | "
              f"{s['max_in_flight']} | {s['max_in_flight'] / f['max_in_flight']:.1f}x | "
              f"{f['kv_peak_bytes'] / MiB:.1f} / {s['kv_peak_bytes'] / MiB:.1f} MiB | "
              f"{f['images_per_s']:.2f} / {s['images_per_s']:.2f} |")
md.append("")
open(os.path.join(out, "serve_bench.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("serve_table.py: matplotlib is missing (scripts/setup.sh --torch installs it); the table is written")
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, q in zip(axes, ("latency_p50_s", "latency_p99_s")):
    for mode, style in (("continuous", "-"), ("static", "--")):
        for pol, color in (("full", "tab:red"), ("scalekv", "tab:blue")):
            pts = sorted((r["rate"], r[q]) for k, r in runs.items()
                         if k.startswith("demo_") and r["mode"] == mode and r["kv_policy"] == pol and r["rate"] > 0)
            if pts:
                label = f"{mode}, {'full cache' if pol == 'full' else 'ScaleKV 10 %'}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_title(q.replace("latency_", "").replace("_s", "") + " latency")
    ax.grid(True, alpha=0.3)
axes[0].set_ylabel("seconds")
axes[1].legend()
cap = next(r["kv_cap_bytes"] for k, r in runs.items() if k.startswith("demo_"))
fig.suptitle(f"scalekv bench serve, demo model, KV cap {cap / MiB:.0f} MiB")
fig.tight_layout()
fig.savefig(os.path.join(out, "serve_latency.png"), dpi=100)
print(f"wrote {out}/serve_bench.md and {out}/serve_latency.png")
