#!/usr/bin/python3
"""The demo's picture: two runs of the same labels and seeds side by side, one line of figures each.

    /usr/bin/python3 scripts/eval/side_by_side.py OUT_DIR [--runs full,scalekv] [--zoom 3]

Reads, for every run NAME: OUT_DIR/NAME/*.png with OUT_DIR/NAME/labels.json (written by `scalekv
generate`), OUT_DIR/NAME.log (its stdout: time and KV peak) and OUT_DIR/NAME.eval.json (from
scripts/eval/evaluate.py; PSNR/SSIM against the first run when it was given --reference). Images are
laid out one column per class, one row per repeat of the class, in generation order. Writes
OUT_DIR/demo.png and OUT_DIR/report.md and prints the report.
"""
import argparse
import json
import os
import re
import sys

from PIL import Image, ImageDraw, ImageFont


def parse_log(path):
    text = open(path).read()
    t = re.search(r"generated (\d+) images \((\d+)x(\d+)\) in ([\d.]+) s", text)
    kv = re.search(r"KV cache \(([^)]+)\): planned peak [^,]+, measured peak [^(]+\((\d+) bytes\), "
                   r"([\d.]+)% of the full", text)
    ranks = re.search(r"x (\d+) tensor-parallel ranks", text)
    if not t or not kv:
        sys.exit(f"side_by_side.py: {path}: no 'generated ...' / 'KV cache ...' lines (is it a scalekv generate log?)")
    return dict(images=int(t.group(1)), seconds=float(t.group(4)), policy=kv.group(1), kv_mib=int(kv.group(2)) / 2**20,
                kv_share=float(kv.group(3)), ranks=int(ranks.group(1)) if ranks else 1)


def grid(folder, zoom):
    labels = json.load(open(os.path.join(folder, "labels.json")))
    cols = {}
    for name in sorted(labels):
        cols.setdefault(labels[name], []).append(name)
    classes = sorted(cols)
    rows = max(len(v) for v in cols.values())
    first = Image.open(os.path.join(folder, next(iter(labels))))
    w, h = first.size[0] * zoom, first.size[1] * zoom
    g = Image.new("RGB", (len(classes) * w, rows * h), "black")
    for ci, c in enumerate(classes):
        for ri, name in enumerate(cols[c]):
            im = Image.open(os.path.join(folder, name)).convert("RGB").resize((w, h), Image.NEAREST)
            g.paste(im, (ci * w, ri * h))
    return g


def text_block(lines, width, scale=2):
    font = ImageFont.load_default()
    line_h = 12
    small = Image.new("RGB", (width // scale, line_h * len(lines) + 4), "white")
    d = ImageDraw.Draw(small)
    for i, line in enumerate(lines):
        d.text((2, 2 + i * line_h), line, fill="black", font=font)
    return small.resize((small.width * scale, small.height * scale), Image.NEAREST)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--runs", default="full,scalekv")
    p.add_argument("--titles", default="full KV cache,ScaleKV 10 % budget")
    p.add_argument("--zoom", type=int, default=3)
    a = p.parse_args()
    runs, titles = a.runs.split(","), a.titles.split(",")
    panels, report = [], ["| run | images | time (s) | s / image | peak KV per rank (MiB) | share of full | "
                          "class accuracy | FID-FMNIST (few images: biased up) | PSNR vs full (dB) | SSIM vs full |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
    for run, title in zip(runs, titles):
        log = parse_log(os.path.join(a.out, run + ".log"))
        ev = json.load(open(os.path.join(a.out, run + ".eval.json")))
        g = grid(os.path.join(a.out, run), a.zoom)
        acc = f"{100 * ev['accuracy']:.1f}%" if "accuracy" in ev else "n/a"
        fid = f"{ev['fid_fmnist']:.1f}" if "fid_fmnist" in ev else "n/a"
        psnr = f"{ev['psnr_mean']:.2f} dB" if "psnr_mean" in ev else "(reference)"
        ssim = f"{ev['ssim_mean']:.4f}" if "ssim_mean" in ev else "(reference)"
        lines = [f"{title} ({log['policy']}, {log['ranks']} rank{'s' if log['ranks'] > 1 else ''})",
                 f"peak KV per rank: {log['kv_mib']:.2f} MiB ({log['kv_share']:.1f}% of full)",
                 f"time: {log['seconds']:.2f} s for {log['images']} images",
                 f"PSNR vs full: {psnr}   SSIM: {ssim}",
                 f"class accuracy: {acc}"]
        panel = Image.new("RGB", (g.width, g.height), "white")
        panel.paste(g, (0, 0))
        tb = text_block(lines, g.width)
        both = Image.new("RGB", (g.width, g.height + tb.height), "white")
        both.paste(tb, (0, 0))
        both.paste(g, (0, tb.height))
        panels.append(both)
        report.append(f"| {title} | {log['images']} | {log['seconds']:.2f} | {log['seconds'] / log['images']:.3f} | "
                      f"{log['kv_mib']:.2f} | {log['kv_share']:.1f}% | {acc} | {fid} | {psnr} | {ssim} |")
    gap = 16
    W = sum(p.width for p in panels) + gap * (len(panels) - 1)
    H = max(p.height for p in panels)
    fig = Image.new("RGB", (W, H), "white")
    x = 0
    for pnl in panels:
        fig.paste(pnl, (x, 0))
        x += pnl.width + gap
    fig.save(os.path.join(a.out, "demo.png"))
    md = "\n".join(report) + "\n\nColumns: classes 0-9 (" + \
         "T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot); rows: seeds.\n"
    open(os.path.join(a.out, "report.md"), "w").write(md)
    print(md)
    print(f"wrote {os.path.join(a.out, 'demo.png')} and report.md")


if __name__ == "__main__":
    main()
