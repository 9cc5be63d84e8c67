#!/usr/bin/python3
"""Sample the demo VAR model with the PyTorch reference code (KV-cached, CFG, top-k/top-p).

Writes a grid PNG (one row per class) and, with --images-dir, one PNG per sample named
`c{class}_s{seed}.png` -- the convention scripts/eval/evaluate.py reads. Sample k of class c uses the
torch generator seeded with seed = --seed + k (all classes of one k are drawn in one batch).

    /usr/bin/python3 scripts/eval/sample_demo.py --model models/demo --grid /tmp/grid.png
    /usr/bin/python3 scripts/eval/sample_demo.py --per-class 50 --images-dir /tmp/samples --grid ''
"""
import argparse
import os
import sys

THIS_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(THIS_DIR, "..", "..", "models", "demo"))
    p.add_argument("--name", default="var-fmnist")
    p.add_argument("--grid", default="demo_grid.png", help="grid PNG path ('' = none)")
    p.add_argument("--images-dir", default="", help="also write c{class}_s{seed}.png files here")
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--classes", default="", help="comma-separated class ids (default: all)")
    p.add_argument("--cfg", type=float, default=None, help="default: the config's cfg")
    p.add_argument("--top-k", type=int, default=None, help="default: the config's top_k (1 = greedy)")
    p.add_argument("--top-p", type=float, default=None, help="default: the config's top_p")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoom", type=int, default=2, help="grid upscaling factor")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--self-check", action="store_true",
                   help="also check that the KV-cached sampler reproduces the teacher-forcing graph")
    return p.parse_args()


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(THIS_DIR, ".."))
from vardemo.models import load_demo  # noqa: E402


def to_u8(img):
    """[3, H, W] in [0, 1] -> uint8 [H, W, 3]."""
    return img.permute(1, 2, 0).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


def self_check(vae, var, labels):
    """Greedy, cfg 0: the cached logits of every scale must equal the training forward fed the same tokens."""
    trace = []
    var.autoregressive_infer_cfg(vae, labels, cfg=0.0, top_k=1, trace=trace)
    with torch.no_grad():
        tf = var(labels, vae.quantize.idx_to_var_input([idx for _, idx in trace]))
    err = (tf - torch.cat([lg for lg, _ in trace], 1)).abs().max().item()
    print(f"self-check: max |cached - teacher-forced logits| = {err:.2e}")
    if not err < 1e-3:
        sys.exit("self-check failed: the KV-cached sampler disagrees with the training graph")


def main():
    torch.set_num_threads(args.threads)
    cfg, vae, var = load_demo(args.model, args.name)
    if args.self_check:
        self_check(vae, var, torch.tensor([0, cfg["num_classes"] - 1]))
    cfg_s = cfg["cfg"] if args.cfg is None else args.cfg
    top_k = cfg["top_k"] if args.top_k is None else args.top_k
    top_p = cfg["top_p"] if args.top_p is None else args.top_p
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(cfg["num_classes"]))
    print(f"sampling {args.per_class} x {len(classes)} classes, cfg {cfg_s}, top_k {top_k}, top_p {top_p}")
    if args.images_dir:
        os.makedirs(args.images_dir, exist_ok=True)
    rows = {c: [] for c in classes}
    labels = torch.tensor(classes)
    for k in range(args.per_class):
        seed = args.seed + k
        g = torch.Generator().manual_seed(seed)
        imgs = var.autoregressive_infer_cfg(vae, labels, cfg=cfg_s, top_k=top_k, top_p=top_p, generator=g)
        for c, img in zip(classes, imgs):
            u8 = to_u8(img)
            rows[c].append(u8)
            if args.images_dir:
                Image.fromarray(u8).save(os.path.join(args.images_dir, f"c{c}_s{seed}.png"))
    if args.grid:
        pad = 2
        H, W = rows[classes[0]][0].shape[:2]
        grid = np.full((len(classes) * (H + pad) + pad, args.per_class * (W + pad) + pad, 3), 255, np.uint8)
        for r, c in enumerate(classes):
            for j, u8 in enumerate(rows[c]):
                y, x = pad + r * (H + pad), pad + j * (W + pad)
                grid[y:y + H, x:x + W] = u8
        im = Image.fromarray(grid)
        if args.zoom > 1:
            im = im.resize((im.width * args.zoom, im.height * args.zoom), Image.NEAREST)
        im.save(args.grid)
        print(f"wrote {args.grid} (rows: {', '.join(cfg['class_names'][c] for c in classes)})")


if __name__ == "__main__":
    main()
