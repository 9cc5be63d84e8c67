"""The demo scripts' names for scripts/safetensors_io.py, the project's one safetensors reader/writer
(the `safetensors` package is not a dependency): save_file(tensors, path, metadata) and
load_file(path, dtype), which casts floating tensors to `dtype` when given.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import safetensors_io  # noqa: E402


def save_file(tensors, path, metadata=None):
    """Write {name: tensor} to `path`. Tensors keep their dtype (convert before calling)."""
    safetensors_io.save(path, tensors, metadata)


def load_file(path, dtype=None):
    """Read a safetensors file into {name: torch tensor}; float tensors are cast to `dtype` if given."""
    out = safetensors_io.load(path)
    if dtype is not None:
        out = {k: t.to(dtype) if t.is_floating_point() else t for k, t in out.items()}
    return out
