"""safetensors_io.py - read and write safetensors files with PyTorch alone.

Debian's PyTorch (python3-torch) ships without the `safetensors` package, so the converters and tests
use this ~80-line implementation of the format: 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the raw little-endian data.
Tensors keep their dtype (bfloat16 included: written through a same-size int16 view).
Outputs are written atomically (atomic_write): a temporary name in the same folder, fsync, then a rename,
so a file under its final name is complete; a failed write exits naming the file and the OS error.
"""
import contextlib
import json
import os
import struct
import tempfile

import torch

_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}


def _raw_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """`with atomic_write(p) as f:` writes p under a temporary name in its folder and renames it into place
    only when the block completes (after flush and fsync). On an OS error (full disk, read-only folder) the
    temporary is removed and SystemExit names the file and the error; on any other error it is removed too."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp.", dir=folder)
    except OSError as e:
        raise SystemExit(f"{path}: cannot create a file in {folder} ({e.strerror or e})") from e
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make converted models unreadable to others
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SystemExit(f"{path}: write failed ({e.strerror or e})") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path, text):
    """Writes a text file (a config, a report) atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def save(path, tensors, metadata=None):
    """Writes {name: tensor} (any order; stored sorted by name) with optional {str: str} metadata."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {t.dtype}")
        b = _raw_bytes(t)
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # keep the data region 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path, with_metadata=False):
    """Returns {name: tensor} (and the metadata dict when with_metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        dt = _FROM_NAME.get(e["dtype"])
        if dt is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {e['dtype']}")
        a, b = e["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        if len(buf) == 0:
            t = torch.empty(e["shape"], dtype=dt)
        else:
            t = torch.frombuffer(buf, dtype=dt).reshape(e["shape"])
        out[name] = t
    return (out, meta) if with_metadata else out
