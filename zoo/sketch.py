"""The sketch operator: a linear, seeded, hashed CountSketch of weight tensors.

Element ``k`` of a tensor whose canonical name is ``name`` has the 64-bit key
``name_key(name) ^ seed_key(seed)`` advanced ``k`` steps along the splitmix64 sequence;
the splitmix64 finaliser of that state gives the bucket (high 32 bits, scaled to ``dim``)
and the sign (low bit). Values are accumulated in float64.

Because the operator is linear, ``S(theta - theta_base) = S(theta) - S(theta_base)``
exactly up to float64 rounding. zoo stores each space's base sketch once and sketches a
new checkpoint's raw weights, so registering a fine-tune never reads the base's tensors.

Two kernels compute the same buckets and signs: a numba kernel on CPU (parallel over
chunks, one accumulator per chunk) and a torch kernel used when the tensor lives on CUDA.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Below this many elements a tensor is sketched on one thread: thread start-up costs more.
_PARALLEL_MIN = 1 << 17
# Chunks of a fixed size (not one per thread) keep float64 summation order, and so the
# sketch bits, the same on every machine whatever its core count.
_CHUNK = 1 << 17


def _mix(z: int) -> int:
    z &= (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return z ^ (z >> 31)


def name_key(name: str, seed: int) -> int:
    """The 64-bit key of a tensor name in the space of ``seed`` (stable across platforms)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") ^ _mix(int(seed) * 0x9E3779B97F4A7C15 + 1)


def sketch_array(x: np.ndarray, name: str, seed: int, dim: int, out: np.ndarray, offset: int = 0) -> None:
    """Add the sketch of one float array ``x`` (canonical tensor ``name``) into ``out``.

    ``out`` is a float64 vector of length ``dim``; the addition is in place so a whole
    checkpoint is sketched by calling this tensor by tensor. ``offset``: ``x`` holds the
    tensor's flat elements from that index on, so a tensor computed block by block (an
    adapter's B·A) is sketched without being whole in memory. Large tensors go to the
    torch kernel on CUDA when a GPU is present, else to the numba kernel.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float32)
    if flat.size >= _PARALLEL_MIN and cuda_available():
        import torch

        out += sketch_torch(torch.from_numpy(flat).to("cuda", non_blocking=False), name, seed, dim,
                            offset=offset).cpu().numpy()
        return
    from zoo.kernels import sketch_parallel, sketch_serial

    # Element k of the block is element offset + k of the tensor: advance the key offset steps.
    key = np.uint64(_shift(name_key(name, seed), offset))
    if flat.size >= _PARALLEL_MIN:
        sketch_parallel(flat, key, dim, out, (flat.size + _CHUNK - 1) // _CHUNK)
    else:
        sketch_serial(flat, key, dim, out)


def _shift(key: int, offset: int) -> int:
    """The key whose k-th step is step ``offset + k`` of ``key`` (the splitmix64 state is key + k * GAMMA)."""
    return (key + offset * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)


_CUDA: bool | None = None


def cuda_available() -> bool:
    """Whether to sketch on CUDA: ``ZOO_SKETCH_DEVICE`` (auto|cpu|cuda), auto = a visible NVIDIA GPU.

    torch is imported only when the machine shows an NVIDIA device, so CPU-only runs do
    not pay for the import.
    """
    global _CUDA
    if _CUDA is None:
        want = os.environ.get("ZOO_SKETCH_DEVICE", "auto")
        if want == "cpu":
            _CUDA = False
        elif want == "cuda" or os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"):
            import torch

            _CUDA = bool(torch.cuda.is_available())
            if want == "cuda" and not _CUDA:
                raise ZooValueError("ZOO_SKETCH_DEVICE=cuda but torch sees no CUDA device; unset it or use cpu")
        else:
            _CUDA = False
    return _CUDA


def _lsr(z: "torch.Tensor", s: int) -> "torch.Tensor":
    """Logical right shift of int64 bit patterns (torch shifts int64 arithmetically)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _wrap(v: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return v - (1 << 64) if v >= 1 << 63 else v


def sketch_torch(t: "torch.Tensor", name: str, seed: int, dim: int, chunk: int = 1 << 24,
                 offset: int = 0) -> "torch.Tensor":
    """The torch kernel: same buckets and signs as the numba kernel, on the tensor's device.

    int64 multiplication wraps modulo 2**64 like uint64, and shifts are made logical, so
    the bit patterns equal the numba kernel's.
    """
    import torch

    flat = t.reshape(-1)
    dev = flat.device
    out = torch.zeros(dim, dtype=torch.float64, device=dev)
    key = _wrap(_shift(name_key(name, seed), offset))
    from zoo.kernels import C1, C2, GAMMA

    gamma, c1, c2 = _wrap(int(GAMMA)), _wrap(int(C1)), _wrap(int(C2))
    for lo in range(0, flat.numel(), chunk):
        part = flat[lo:lo + chunk].to(torch.float64)
        k = torch.arange(lo, lo + part.numel(), dtype=torch.int64, device=dev)
        z = k * gamma + key
        z = (z ^ _lsr(z, 30)) * c1
        z = (z ^ _lsr(z, 27)) * c2
        z = z ^ _lsr(z, 31)
        b = (_lsr(z, 32) * dim) >> 32 if dim < (1 << 31) else None
        if b is None:  # pragma: no cover - MAX_DIM keeps dim far below 2**31
            raise ZooValueError(f"sketch dimension {dim} too large for the torch kernel")
        sign = 1.0 - 2.0 * (z & 1).to(torch.float64)
        out.index_add_(0, b, sign * part)
    return out
