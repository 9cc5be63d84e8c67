"""Fashion-MNIST from Debian's dataset-fashion-mnist package, as 32x32 tensors in [-1, 1].

The 28x28 images are zero-padded by 2 pixels on each side (background = -1 after scaling), which is
the layout every model of the demo (VQ-VAE, VAR, evaluation classifier) is trained on.
"""
import gzip
import os

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split, data_dir=DEFAULT_DIR):
    """Return (images uint8 [N,32,32], labels int64 [N]) for split 'train' or 't10k'."""
    imgs = _read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz")).astype(np.int64)
    padded = np.zeros((imgs.shape[0], 32, 32), dtype=np.uint8)
    padded[:, 2:30, 2:30] = imgs
    return padded, labels


def to_model_input(u8, rgb=True):
    """uint8 [N,32,32] -> float [N,3,32,32] (or [N,1,32,32]) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(u8)).float().div_(127.5).sub_(1.0).unsqueeze(1)
    return x.expand(-1, 3, -1, -1).contiguous() if rgb else x
