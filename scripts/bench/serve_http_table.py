#!/usr/bin/env python3
"""serve_http_table.py - the table and the latency plot of scripts/bench/serve.sh (`scalekv serve` over HTTP).

Reads OUT_DIR/machine.json and OUT_DIR/runs/*.json (one scripts/bench/serve_client.py summary each, named
MODEL_POLICY_rRATE, with the server command, its exit status and the load average around the run) and
writes OUT_DIR/serve_http.md and OUT_DIR/serve_http_latency.png (p50 and p99 latency against the offered
load, full cache vs ScaleKV 10 %, one panel per model).
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
    sys.exit(f"serve_http_table.py: no runs in {out}/runs")
machine = {}
if os.path.exists(os.path.join(out, "machine.json")):
    machine = json.load(open(os.path.join(out, "machine.json")))

MiB = 2**20
MODELS = [("demo", "demo model (VAR, 6 layers, 32x32)", "demo model"),
          ("d16", "VAR-d16 shape, random weights, depth reduced to 4, 256x256", "VAR-d16 shape, depth 4")]


def fmt_s(v):
    return "-" if v is None else f"{v:.2f}"


def policy(r):
    return "full" if "scalekv" not in r["name"] else "scalekv 10%"


first = next(r for key in ("demo", "d16", "") for k, r in runs.items() if k.startswith(key))  # the table's first row
md = ["### scalekv serve over HTTP: open-loop Poisson arrivals on loopback", "",
      f"- machine: {machine.get('machine', '?')}, {machine.get('memory_gib', '?')} GiB memory, {machine.get('os', '?')}",
      "- command: `scripts/bench/serve.sh` (each row: one fresh server, `scripts/bench/serve_client.py --rate R "
      "--requests N --seed 1 --labels 0-9`, then SIGTERM); the first row's server: "
      f"`{first['server_command']}`",
      "- latency = client-measured, POST sent to the whole answer read (2xx only; no answer = a transport error, "
      "e.g. the client's timeout, and is in no percentile); queue = the answer's "
      "scalekv.queue_seconds (arrival at the server to admission); images/s = images answered / (last answer - "
      "first send); one run per row (arrivals are a seeded Poisson trace, so rows of one rate see the same trace)",
      "- most in one step = the largest `scalekv.max_batch` of the run's answers (requests sharing a scale step: "
      "the engine's concurrency); most outstanding = requests sent and not yet answered at the client (queued ones "
      "included); KV peak = /metrics scalekv_kv_bytes_peak at the end (the run and the server's warm-up)", ""]

for key, title, _ in MODELS:
    rows = [r for k, r in runs.items() if k.startswith(key + "_")]
    if not rows:
        continue
    cap = rows[0]["kv_cap_bytes"] or 0
    md += [f"**{title}**, KV cap {cap / MiB:.0f} MiB, {rows[0]['requests']} requests per row:", "",
           "| KV policy | rate (req/s) | answered / 429 / 5xx / no answer | images/s | latency p50 s | latency p99 s | queue p50 s "
           "| queue p99 s | most in one step | most outstanding | KV peak / cap | load avg before / after |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows.sort(key=lambda r: (r["rate"], policy(r)))
    for r in rows:
        mb = "-" if r.get("max_batch") is None else str(r["max_batch"])
        kv = "-" if r.get("kv_peak_bytes") is None else f"{r['kv_peak_bytes'] / MiB:.1f} / {r['kv_cap_bytes'] / MiB:.0f} MiB"
        odd = []
        if r.get("server_exit"):
            odd.append(f"server exit {r['server_exit']}")
        if r.get("max_batch_missing"):
            odd.append(f"{r['max_batch_missing']} answers without max_batch")
        note = f" ({'; '.join(odd)})" if odd else ""
        md.append(f"| {policy(r)} | {r['rate']:g} | {r['completed']} / {r['rejected_429']} / {r['status_5xx']} / {r['transport_errors']}{note} | "
                  f"{r['images_per_s']:.2f} | {fmt_s(r['latency_p50_s'])} | {fmt_s(r['latency_p99_s'])} | "
                  f"{fmt_s(r['queue_p50_s'])} | {fmt_s(r['queue_p99_s'])} | {mb} | {r['client_in_flight_max']} | {kv} | "
                  f"{r['loadavg_before'].split()[0]} / {r['loadavg_after'].split()[0]} |")
    md.append("")
open(os.path.join(out, "serve_http.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("serve_http_table.py: matplotlib is missing (scripts/setup.sh --torch installs it); the table is written")
panels = [m for m in MODELS if any(k.startswith(m[0] + "_") for k in runs)]
fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
for ax, (key, _, short) in zip(axes[0], panels):
    cap = None
    for pol, color, label in (("full", "tab:red", "full cache"), ("scalekv 10%", "tab:blue", "ScaleKV 10 %")):
        rs = sorted((r for k, r in runs.items() if k.startswith(key + "_") and policy(r) == pol and r["latency_p50_s"]),
                    key=lambda r: r["rate"])
        if not rs:
            continue
        cap = rs[0]["kv_cap_bytes"]
        x = [r["rate"] for r in rs]
        ax.plot(x, [r["latency_p50_s"] for r in rs], "-", color=color, marker="o", label=f"{label}, p50")
        ax.plot(x, [r["latency_p99_s"] for r in rs], "--", color=color, marker="s", label=f"{label}, p99")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["rate"] for k, r in runs.items() if k.startswith(key + "_")}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered load (requests/s, Poisson)")
    ax.set_ylabel("latency, client-measured (s)")
    ax.set_title(f"{short}, KV cap {cap / MiB:.0f} MiB" if cap else short)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
fig.suptitle("scalekv serve over HTTP (loopback, continuous batching): latency against load, one run per point")
fig.tight_layout()
fig.savefig(os.path.join(out, "serve_http_latency.png"), dpi=100)
print(f"wrote {out}/serve_http.md and {out}/serve_http_latency.png")
