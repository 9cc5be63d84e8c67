#!/usr/bin/python3
"""Train the evaluation classifier (scripts/vardemo/classifier.py) on Fashion-MNIST, CPU, fixed seed.

Writes next to this script: fmnist_classifier.safetensors (fp32 weights, a few hundred kB) and
fmnist_test_stats.safetensors (mean `mu` [128] and covariance `sigma` [128, 128], float64, of the
classifier's penultimate features over the 10,000 test images: the reference of FID-FMNIST).

    /usr/bin/python3 scripts/eval/train_classifier.py            # ~3 epochs, a few minutes on 2 cores
"""
import argparse
import math
import os
import sys
import time

THIS_DIR = os.path.dirname(os.path.abspath(__file__))

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--out-dir", default=THIS_DIR)
p.add_argument("--epochs", type=float, default=3.0)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--max-train", type=int, default=0, help="use only the first N training images (tests)")
args = p.parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(THIS_DIR, ".."))
from vardemo import fmnist, st  # noqa: E402
from vardemo.classifier import FMNISTClassifier  # noqa: E402


@torch.no_grad()
def predict(model, u8, batch=1000):
    logits, feats = [], []
    for i in range(0, u8.shape[0], batch):
        x = fmnist.to_model_input(u8[i:i + batch], rgb=False)
        f = model.features(x)
        feats.append(f.double())
        logits.append(model.fc2(f))
    return torch.cat(logits), torch.cat(feats)


def main():
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train = fmnist.load_split("train")
    x_test, y_test = fmnist.load_split("t10k")
    if args.max_train:
        x_train, y_train = x_train[:args.max_train], y_train[:args.max_train]
    model = FMNISTClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    N = x_train.shape[0]
    steps = max(1, int(args.epochs * N / args.batch))
    y_t = torch.from_numpy(y_train)
    t0 = time.time()
    perm, pos = torch.randperm(N, generator=g), 0
    model.train()
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        if pos + args.batch > N:
            perm, pos = torch.randperm(N, generator=g), 0
        bi = perm[pos:pos + args.batch]
        pos += args.batch
        x = fmnist.to_model_input(x_train[bi.numpy()], rgb=False)
        # light augmentation: shifts of up to 2 pixels (the padding) so generated samples that are
        # slightly off-centre are still classified on their content
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), y_t[bi])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    logits, feats = predict(model, x_test)
    acc = (logits.argmax(1).numpy() == y_test).mean()
    mu = feats.mean(0)
    d = feats - mu
    sigma = d.T @ d / (feats.shape[0] - 1)
    os.makedirs(args.out_dir, exist_ok=True)
    meta = {"test_accuracy": f"{acc:.4f}", "epochs": str(args.epochs), "seed": str(args.seed),
            "source": "scalekv scripts/eval/train_classifier.py"}
    st.save_file(model.state_dict(), os.path.join(args.out_dir, "fmnist_classifier.safetensors"), meta)
    st.save_file({"mu": mu, "sigma": sigma}, os.path.join(args.out_dir, "fmnist_test_stats.safetensors"),
                 {"what": "classifier penultimate features of the 10000 Fashion-MNIST test images"})
    print(f"test accuracy {acc * 100:.2f}% ({time.time() - t0:.0f}s); wrote fmnist_classifier.safetensors "
          f"and fmnist_test_stats.safetensors to {args.out_dir}")


if __name__ == "__main__":
    main()
