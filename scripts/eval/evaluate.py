#!/usr/bin/python3
"""Evaluate a folder of generated Fashion-MNIST-like PNGs.

Reports
  * class accuracy of the evaluation classifier against the class each file was generated for;
  * FID-FMNIST: the Frechet distance between the classifier's 128-d penultimate features of the
    images and those of the 10,000 Fashion-MNIST test images (cached in fmnist_test_stats.safetensors).
    It is comparable only between runs with the same number of images (small sets are biased upwards);
  * with --reference DIR (e.g. the full-KV-cache counterparts, same file names): PSNR and SSIM per
    image and their means.

Labels (which class an image was generated for), in this order of precedence:
  1. DIR/labels.json, a JSON object {"file name.png": class id, ...};
  2. the file name: `c{class}_...png`, e.g. `c3_s42.png` (class 3, seed 42) -- the names
     scripts/eval/sample_demo.py --images-dir writes. Files with neither are still used for FID and
     PSNR/SSIM but not for accuracy.

Images: PNG, 32x32 (28x28 is padded by 2 pixels, any other size is resized bilinearly to 32x32),
grey or RGB; the classifier sees the mean of the channels. PSNR/SSIM are computed on 8-bit RGB (grey
images replicated), peak 255; SSIM uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
"valid" filtering, averaged over channels and positions (Wang et al. 2004). Identical images count
as PSNR 100 dB.

    /usr/bin/python3 scripts/eval/evaluate.py SAMPLES_DIR [--reference FULL_DIR] [--json out.json]
"""
import argparse
import json
import math
import os
import re
import sys

THIS_DIR = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(THIS_DIR, ".."))
from vardemo import st  # noqa: E402
from vardemo.classifier import FMNISTClassifier  # noqa: E402
from vardemo.fmnist import CLASS_NAMES  # noqa: E402

NAME_RE = re.compile(r"^c(\d+)_.*\.png$", re.IGNORECASE)
PSNR_IDENTICAL = 100.0


def load_rgb(path):
    """PNG -> uint8 [H, W, 3]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_classifier_input(rgb_u8):
    grey = rgb_u8.astype(np.float32).mean(axis=2)
    h, w = grey.shape
    if (h, w) == (28, 28):
        grey = np.pad(grey, 2)
    elif (h, w) != (32, 32):
        grey = np.asarray(Image.fromarray(grey).resize((32, 32), Image.BILINEAR), dtype=np.float32)
    return torch.from_numpy(grey / 127.5 - 1.0).float().view(1, 32, 32)


def read_labels(folder, files):
    manifest = os.path.join(folder, "labels.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            table = json.load(f)
        return {name: int(table[name]) if name in table else None for name in files}
    out = {}
    for name in files:
        m = NAME_RE.match(name)
        out[name] = int(m.group(1)) if m else None
    return out


def frechet_distance(mu1, s1, mu2, s2):
    """|mu1 - mu2|^2 + Tr(s1 + s2 - 2 (s1 s2)^(1/2)); the trace of the square root is taken from the
    eigenvalues of the symmetric s1^(1/2) s2 s1^(1/2) (no scipy needed)."""
    w, U = np.linalg.eigh(s1)
    r1 = (U * np.sqrt(np.clip(w, 0, None))) @ U.T
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_IDENTICAL if mse == 0 else min(PSNR_IDENTICAL, 10 * math.log10(255.0 ** 2 / mse))


def _gauss_filter_valid(x, win):
    """Separable 'valid' filtering of [H, W] with the 1-D window `win`."""
    k = len(win)
    h = sum(win[i] * x[:, i:x.shape[1] - k + 1 + i] for i in range(k))
    return sum(win[i] * h[i:h.shape[0] - k + 1 + i, :] for i in range(k))


def ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03, peak=255.0):
    if min(a.shape[:2]) < size:
        raise ValueError(f"images of {a.shape[:2]} are smaller than the {size}x{size} SSIM window")
    t = np.arange(size) - (size - 1) / 2
    win = np.exp(-t ** 2 / (2 * sigma ** 2))
    win /= win.sum()
    c1, c2 = (k1 * peak) ** 2, (k2 * peak) ** 2
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = _gauss_filter_valid(x, win), _gauss_filter_valid(y, win)
        sxx = _gauss_filter_valid(x * x, win) - mx * mx
        syy = _gauss_filter_valid(y * y, win) - my * my
        sxy = _gauss_filter_valid(x * y, win) - mx * my
        smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(smap.mean())
    return float(np.mean(vals))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="folder of generated PNGs")
    p.add_argument("--reference", default="", help="folder of reference PNGs with the same file names")
    p.add_argument("--json", default="", help="also write the results (and per-image numbers) here")
    p.add_argument("--classifier", default=os.path.join(THIS_DIR, "fmnist_classifier.safetensors"))
    p.add_argument("--stats", default=os.path.join(THIS_DIR, "fmnist_test_stats.safetensors"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    files = sorted(f for f in os.listdir(a.dir) if f.lower().endswith(".png"))
    if not files:
        sys.exit(f"evaluate.py: no PNG files in {a.dir}")
    labels = read_labels(a.dir, files)
    images = {f: load_rgb(os.path.join(a.dir, f)) for f in files}

    model = FMNISTClassifier()
    model.load_state_dict(st.load_file(a.classifier, torch.float32))
    model.eval()
    with torch.no_grad():
        x = torch.stack([to_classifier_input(images[f]) for f in files])
        feats = model.features(x)
        preds = model.fc2(feats).argmax(1).tolist()
    feats = feats.double().numpy()

    res = {"dir": a.dir, "num_images": len(files)}
    per_image = {f: {"label": labels[f], "pred": int(pr)} for f, pr in zip(files, preds)}
    lines = [f"images: {len(files)} in {a.dir}"]

    labelled = [f for f in files if labels[f] is not None]
    if labelled:
        correct = [per_image[f]["pred"] == labels[f] for f in labelled]
        res["accuracy"] = float(np.mean(correct))
        per_class = {}
        for c in sorted({labels[f] for f in labelled}):
            sel = [per_image[f]["pred"] == c for f in labelled if labels[f] == c]
            per_class[str(c)] = float(np.mean(sel))
        res["per_class_accuracy"] = per_class
        lines.append(f"class accuracy: {res['accuracy'] * 100:.2f}% ({sum(correct)}/{len(labelled)} labelled images)")
        lines.append("  per class: " + ", ".join(
            f"{CLASS_NAMES[int(c)] if int(c) < len(CLASS_NAMES) else c} {v * 100:.0f}%" for c, v in per_class.items()))
    else:
        lines.append("class accuracy: n/a (no labels.json and no c{class}_*.png names)")

    if len(files) >= 2:
        ref = st.load_file(a.stats)
        mu = feats.mean(0)
        sigma = np.cov(feats, rowvar=False)
        res["fid_fmnist"] = frechet_distance(mu, sigma, ref["mu"].numpy(), ref["sigma"].numpy())
        lines.append(f"FID-FMNIST: {res['fid_fmnist']:.3f} (vs the 10k test set; {len(files)} images)")
    else:
        lines.append("FID-FMNIST: n/a (needs at least 2 images)")

    if a.reference:
        ps, ss, missing = [], [], []
        for f in files:
            rp = os.path.join(a.reference, f)
            if not os.path.exists(rp):
                missing.append(f)
                continue
            r = load_rgb(rp)
            if r.shape != images[f].shape:
                sys.exit(f"evaluate.py: {f}: shape {images[f].shape} differs from the reference's {r.shape}")
            per_image[f]["psnr"] = psnr(images[f], r)
            per_image[f]["ssim"] = ssim(images[f], r)
            ps.append(per_image[f]["psnr"])
            ss.append(per_image[f]["ssim"])
        if not ps:
            sys.exit(f"evaluate.py: no file of {a.dir} has a counterpart in {a.reference}")
        res.update(reference=a.reference, psnr_mean=float(np.mean(ps)), ssim_mean=float(np.mean(ss)),
                   num_compared=len(ps), missing_in_reference=missing)
        lines.append(f"vs reference {a.reference}: PSNR {res['psnr_mean']:.2f} dB, SSIM {res['ssim_mean']:.4f} "
                     f"(mean of {len(ps)} images{', ' + str(len(missing)) + ' without counterpart' if missing else ''})")
        for f in files:
            if "psnr" in per_image[f]:
                lines.append(f"  {f}: PSNR {per_image[f]['psnr']:.2f} dB, SSIM {per_image[f]['ssim']:.4f}")

    res["per_image"] = per_image
    print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
