"""Materializing points of weight space: weighted averages (centroids) and interpolations.

Tensors stream across members one name at a time into a streaming safetensors writer, so
peak memory is one float64 accumulator plus one input tensor, not N models. The output
is a Hugging Face model folder (safetensors, config, tokenizer files of the base),
written under a temporary name and renamed when whole.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo.checkpoint import Header
from zoo.errors import ZooValueError
from zoo.files import atomic_dir

_ST_DTYPE = {"F32": (np.float32, "F32"), "F16": (np.float16, "F16"), "F64": (np.float64, "F64"), "BF16": (None, "BF16")}


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor: the header is known up front from shapes."""

    def __init__(self, path: Path, layout: list[tuple[str, tuple[int, ...], str]]):
        self.path = Path(path)
        self.layout = layout
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        self._sizes = {}
        for name, shape, dtype in layout:
            nbytes = int(np.prod(shape, dtype=np.int64)) * (2 if dtype in ("F16", "BF16") else 8 if dtype == "F64" else 4)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._sizes[name] = nbytes
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((8 - len(raw) % 8) % 8)
        self._fh = open(self.path, "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)
        self._next = 0

    def write(self, name: str, data: np.ndarray) -> None:
        """Write the next tensor (in layout order), converted to its layout dtype."""
        want, shape, dtype = self.layout[self._next]
        if name != want:
            raise RuntimeError(f"writer expected tensor {want!r}, got {name!r}")
        if dtype == "BF16":
            f32 = np.ascontiguousarray(data, dtype=np.float32).view(np.uint32)
            # round to nearest even, as torch does
            arr = ((f32 + 0x7FFF + ((f32 >> 16) & 1)) >> 16).astype(np.uint16)
        else:
            arr = np.ascontiguousarray(data, dtype=_ST_DTYPE[dtype][0])
        b = memoryview(arr).cast("B")
        if b.nbytes != self._sizes[name]:
            raise RuntimeError(f"tensor {name!r}: {b.nbytes} bytes, header says {self._sizes[name]}")
        self._fh.write(b)
        self._next += 1

    def close(self) -> None:
        self._fh.close()
        if self._next != len(self.layout):
            raise RuntimeError(f"{self.path}: wrote {self._next} of {len(self.layout)} tensors")


@dataclass
class MergePlan:
    """What a merge writes: canonical names with their output names, and whether heads come along."""

    names: list[tuple[str, str]]  # (canonical, output name)
    with_head: bool
    note: str
    config_from: Path | None


def plan_merge(members: Sequence[Header], body: dict[str, tuple[int, ...]], base: Header,
               id2labels: Sequence[dict | None]) -> MergePlan:
    """Average the body; average heads only when every member has the same head and label space."""
    first = members[0]
    heads = [{t.canonical: t.shape for t in h.tensors if t.is_float and body.get(t.canonical) != t.shape} for h in members]
    same_head = bool(heads[0]) and all(h == heads[0] for h in heads) and all(
        (lab or None) == (id2labels[0] or None) for lab in id2labels)
    prefix = first.prefix

    def out_name(c: str) -> str:
        return f"{prefix}.{c}" if prefix and c in body else c

    names = [(c, out_name(c)) for c in sorted(body)]
    if same_head:
        names += [(c, c) for c in sorted(heads[0])]
        note = f"body and head averaged ({len(heads[0])} head tensors, same label space)"
        cfg = first.model_dir
    else:
        differ = "no head" if not any(heads) else "heads differ in shape or labels"
        note = f"body averaged; {differ}: output has the base's config and no head"
        cfg = base.model_dir
    return MergePlan(names, same_head, note, cfg)


def weighted_merge(readers: Sequence[Any], weights: Sequence[float], plan: MergePlan, base: Any, out_dir: Path,
                   progress: bool = False) -> Path:
    """Write sum_i w_i theta_i (float64 accumulation, stored in the base's dtype) as a model folder.

    ``readers`` give each member's dense weights (``zoo.sources``: a checkpoint, or an
    adapter's parent plus B·A); ``base`` is the family base's reader (config, tokenizer).
    """
    from tqdm.auto import tqdm

    if len(readers) != len(weights) or not readers:
        raise ZooValueError(f"{len(readers)} members but {len(weights)} weights")
    w = [float(x) for x in weights]
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        shapes = {c: readers[0].info(c).shape for c, _ in plan.names}
        layout = []
        for c, name in plan.names:
            dt = readers[0].info(c).dtype
            layout.append((name, shapes[c], dt if dt in _ST_DTYPE else "F32"))
        writer = SafetensorsWriter(tmp / "model.safetensors", layout)
        for c, name in tqdm(plan.names, desc="merging", unit="tensor", disable=not progress, leave=False):
            acc = np.zeros(int(np.prod(shapes[c], dtype=np.int64)), dtype=np.float64)
            for r, wi in zip(readers, w):
                axpy(acc, r.get(c).reshape(-1), wi)
                r.release_name(c)
            writer.write(name, acc.reshape(shapes[c]))
            del acc
        writer.close()
        _copy_support_files(plan, base.header, tmp)
    return out_dir


def axpy(acc: np.ndarray, x: np.ndarray, w: float) -> None:
    """acc += w * x with float64 accumulation (x float32 or float64). One core: the loop is
    memory-bound and two threads measured no faster."""
    if acc.size != x.size:
        raise ValueError(f"size mismatch: {acc.size} vs {x.size}")
    from zoo.kernels import axpy_f64

    axpy_f64(acc, x, float(w))


def _copy_support_files(plan: MergePlan, base: Header, dest: Path) -> None:
    """The config (the first member's with a shared head, else the base's without labels) and
    every support file of the base: tokenizer, sentence-transformers modules, generation config."""
    from zoo.cards import copy_support

    cfg_dir = plan.config_from or base.model_dir
    if cfg_dir is not None and (cfg_dir / "config.json").is_file():
        cfg = json.loads((cfg_dir / "config.json").read_text())
        if not plan.with_head:
            for k in ("id2label", "label2id", "num_labels", "problem_type"):
                cfg.pop(k, None)
        (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    copy_support(base.model_dir, base.shards, dest)


# How far past an endpoint an extrapolation may go, in units of the A-B distance: beyond
# that the weights overflow float32 checkpoints long before they mean anything.
MAX_EXTRAPOLATION = 100.0


def dirichlet_weights(n: int, concentration: float, seed: int) -> list[float]:
    """Weights of a random point in the members' convex hull."""
    if not (np.isfinite(concentration) and concentration > 0):
        raise ZooValueError(f"--dirichlet {concentration} must be a positive number (1.0 samples the hull uniformly)")
    w = np.random.default_rng(seed).dirichlet([concentration] * n)
    if not np.all(np.isfinite(w)):
        raise ZooValueError(f"--dirichlet {concentration} is too small to sample from; use 0.01 or more")
    return w.tolist()


def interpolation_weights(alpha: float, extrapolate: bool) -> list[float]:
    """(1 - alpha, alpha) for A, B; alpha outside [0, 1] only with extrapolation allowed."""
    if not np.isfinite(alpha):
        raise ZooValueError(f"--alpha {alpha} is not a finite number")
    if not 0.0 <= alpha <= 1.0 and not extrapolate:
        raise ZooValueError(f"--alpha {alpha} lies outside [0, 1]; pass --extrapolate to go past the endpoints")
    if not -MAX_EXTRAPOLATION <= alpha <= 1.0 + MAX_EXTRAPOLATION:
        raise ZooValueError(f"--alpha {alpha} goes more than {MAX_EXTRAPOLATION:g} times the distance past an endpoint; "
                            f"use a value in [{-MAX_EXTRAPOLATION:g}, {1 + MAX_EXTRAPOLATION:g}]")
    return [1.0 - alpha, alpha]
