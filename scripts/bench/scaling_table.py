#!/usr/bin/env python3
"""scaling_table.py TP1.json TP2.json ... - the markdown tables of scripts/bench/scaling.sh from the
JSON files `scalekv bench-scaling --json` writes (one per TP size). Speed-up is relative to the
smallest TP size given. Plain python3, no third-party modules."""
import json
import sys


def mib(b):
    return f"{b / 2**20:,.0f} MiB"


def human(b):
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= f:
            return f"{b / f:.2f} {unit}"
    return f"{b} B"


def main(paths):
    runs = sorted((json.load(open(p)) for p in paths), key=lambda j: j["tp"])
    if not runs:
        sys.exit("scaling_table.py: no JSON files given")
    base = runs[0]
    m = base
    print(f"Model: {m['model']} (depth {m['depth']}, width {m['embed_dim']}, {m['num_heads']} heads, "
          f"{m['tokens']} tokens), random weights, {m['images']} image(s) per run (2 rows with CFG each), F32, "
          f"MPI communicator (rank-order all-reduce)")
    print()
    print("| TP | ranks x threads | wall s/image | transformer s | decoder s | speed-up | comm share "
          "| transformer CPU s/rank | all-reduced/image | weights/rank | file read/rank | peak RSS/rank |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        ar = sum(s["allreduce_bytes"] for s in r["scales"]) / r["images"]
        w = r["weights_bytes_per_rank"]
        rss = r["peak_rss_bytes_per_rank"]
        print(f"| {r['tp']} | {r['tp']} x {r['threads_per_rank']} | {r['wall_per_image_s']:.2f} "
              f"| {r['transformer_s']:.2f} | {r['decode_s']:.2f} "
              f"| {base['wall_per_image_s'] / r['wall_per_image_s']:.2f}x | {100 * r['comm_share']:.1f}% "
              f"| {max(r['transformer_cpu_s_per_rank']):.1f} | {human(ar)} | {mib(max(w))} "
              f"| {mib(max(r['file_read_bytes_per_rank']))} of {mib(r['file_bytes'])} | {mib(max(rss))} |")
    print()
    head = "| scale | tokens | " + " | ".join(f"TP {r['tp']} s" for r in runs) + " | " + \
        " | ".join(f"TP {r['tp']} all-reduced" for r in runs if r["tp"] > 1) + " |"
    print(head)
    print("|" + "---:|" * (2 + len(runs) + sum(1 for r in runs if r["tp"] > 1)))
    for i, s in enumerate(base["scales"]):
        cells = [str(s["scale"]), str(s["tokens"])]
        cells += [f"{r['scales'][i]['seconds']:.3f}" for r in runs]
        cells += [human(r["scales"][i]["allreduce_bytes"]) for r in runs if r["tp"] > 1]
        print("| " + " | ".join(cells) + " |")
    print()
    print("Weights per rank = replicated + sharded / TP: " + "; ".join(
        f"TP {r['tp']}: {mib(r['weights_bytes_replicated'])} + {mib(r['weights_bytes_sharded_total'])} / {r['tp']}"
        for r in runs) + f"; the VAE ({mib(base['vae_weights_bytes'])}) is on every rank besides. Comm share = time "
        "inside collectives (waiting for the slowest rank included) / transformer time, mean over ranks. CPU s/rank "
        "= the transformer's CPU time on the busiest rank: the work each rank does, whatever else runs on the machine. "
        "File read/rank = resident pages of the memory-mapped checkpoint after loading (/proc/self/smaps): the shard, "
        "rounded out to pages, plus the replicated tensors; an upper bound, as the kernel maps up to 64 KiB of cached "
        "pages around each fault and row-parallel column slices touch every page of rows shorter than a page.")


if __name__ == "__main__":
    main(sys.argv[1:])
