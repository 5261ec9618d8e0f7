"""Reading checkpoints: the one streaming reader for everything that touches weights.

Formats: a Hugging Face model directory (``model.safetensors``, a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin``), or a single ``.safetensors``
or ``.bin`` file. ``.bin`` files are read with ``torch.load(weights_only=True)``: a pickle
that holds code is refused, never executed.

``read_header`` reads names, shapes and dtypes without touching tensor data;
``stream`` yields tensors one at a time, shard by shard (safetensors tensors are
memory-mapped, so peak memory is about one tensor).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xxhash

from zoo.errors import CheckpointError, NotFound, UnsafeCheckpoint, ZooError

SAFETENSORS = "safetensors"
SHARDED = "safetensors-sharded"
TORCH_BIN = "pytorch-bin"
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16"}
# Conventional ``base_model_prefix`` values of transformers classes; a task model stores
# its body under one of these (``bert.encoder...``), a bare model does not.
_PREFIXES = ("model", "transformer", "base_model")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    name: str
    canonical: str
    shape: tuple[int, ...]
    dtype: str
    shard: str
    offset: int = -1  # absolute byte offset of the data in a safetensors shard
    nbytes: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)  # Python ints: no overflow, and 50x faster than np.prod on a tuple

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass
class Header:
    """What a checkpoint is, read without its tensor data."""

    path: Path
    format: str
    tensors: list[TensorInfo]
    config: dict[str, Any] | None
    prefix: str
    shards: list[Path] = field(default_factory=list)

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors if t.is_float)

    @property
    def dtype(self) -> str:
        counts: dict[str, int] = {}
        for t in self.tensors:
            if t.is_float:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        return max(counts, key=counts.get) if counts else "none"

    def by_canonical(self) -> dict[str, TensorInfo]:
        return {t.canonical: t for t in self.tensors}

    @property
    def model_dir(self) -> Path | None:
        return self.path if self.path.is_dir() else None


def file_stats(header: Header) -> list[list[Any]]:
    """[path, size, mtime_ns] of each weight file: what a registered checkpoint must still match."""
    out = []
    for f in header.shards:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _load_config(directory: Path) -> dict[str, Any] | None:
    cfg = directory / "config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg}: config.json is not valid JSON ({e}); fix or remove it") from e


def resolve(path: str | os.PathLike) -> tuple[str, list[Path], dict[str, Any] | None]:
    """Find the format, the weight files and the config of a checkpoint path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFound(f"checkpoint path {str(p)!r} does not exist; give a model directory or a .safetensors/.bin file")
    if p.is_file():
        if p.suffix == ".safetensors":
            return SAFETENSORS, [p], _load_config(p.parent) if (p.parent / "config.json").is_file() else None
        if p.suffix in (".bin", ".pt", ".pth"):
            return TORCH_BIN, [p], _load_config(p.parent) if (p.parent / "config.json").is_file() else None
        raise CheckpointError(f"{p}: unknown checkpoint file type {p.suffix!r}; use .safetensors or .bin")
    config = _load_config(p)
    if (p / "model.safetensors").is_file():
        return SAFETENSORS, [p / "model.safetensors"], config
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e}); re-save the model with save_pretrained") from e
        shards = [p / s for s in sorted(set(weight_map.values()))]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{p}: shard(s) listed in the index are missing: {', '.join(missing)}")
        return SHARDED, shards, config
    if (p / "pytorch_model.bin").is_file():
        return TORCH_BIN, [p / "pytorch_model.bin"], config
    raise CheckpointError(f"{p}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin in this directory")


def _prefix(names: list[str], config: dict[str, Any] | None) -> str:
    """The base-model prefix that task models put before body tensors, or ''."""
    if not names:
        return ""
    firsts: dict[str, int] = {}
    for n in names:
        if "." in n:
            f = n.split(".", 1)[0]
            firsts[f] = firsts.get(f, 0) + 1
    if not firsts:
        return ""
    top, count = max(firsts.items(), key=lambda kv: kv[1])
    model_type = str((config or {}).get("model_type", "")).replace("-", "_")
    known = top in _PREFIXES or (model_type and (top == model_type or top in model_type.split("_")))
    return top if known and count * 2 >= len(names) else ""


def _canonical(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name


def _safetensors_header(path: Path) -> list[tuple[str, tuple[int, ...], str, int, int]]:
    from safetensors import safe_open

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n + 8 > size:
                raise CheckpointError(f"{path}: truncated or corrupt safetensors header; re-download or re-save the file")
            meta = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, header needs {8 + n + end}); re-download or re-save it")
        out = []
        with safe_open(str(path), framework="numpy") as f:  # validates the header; torch is not needed
            for k in f.keys():
                sl = f.get_slice(k)
                lo, hi = (int(x) for x in meta[k]["data_offsets"])
                out.append((k, tuple(int(s) for s in sl.get_shape()), str(sl.get_dtype()), 8 + n + lo, hi - lo))
        return out
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types and OSError
        raise CheckpointError(f"{path}: cannot read safetensors header ({type(e).__name__}: {e}); the file is corrupt or truncated") from e


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    import zipfile

    try:
        # mmap keeps memory at one tensor for the zip format; legacy pickles cannot be mapped.
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(
            f"{path}: the pickle holds objects other than tensors and was not loaded (weights_only); "
            "convert the checkpoint to safetensors from a trusted environment") from e
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors; save it with model.save_pretrained or torch.save(model.state_dict())")
    return obj


_DT = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
       "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8", "torch.uint8": "U8",
       "torch.bool": "BOOL"}


def read_header(path: str | os.PathLike) -> Header:
    """Names, shapes, dtypes, format and config of a checkpoint, without reading tensor data."""
    fmt, files, config = resolve(path)
    raw: list[tuple[str, tuple[int, ...], str, str, int, int]] = []
    if fmt == TORCH_BIN:
        for k, v in _torch_load(files[0]).items():
            raw.append((k, tuple(v.shape), _DT.get(str(v.dtype), str(v.dtype).replace("torch.", "")), files[0].name, -1, 0))
    else:
        for shard in files:
            raw.extend((k, s, d, shard.name, off, nb) for k, s, d, off, nb in _safetensors_header(shard))
    if not raw:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    names = [r[0] for r in raw]
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: a tensor name appears in more than one shard; the checkpoint is inconsistent")
    prefix = _prefix(names, config)
    tensors = [TensorInfo(n, _canonical(n, prefix), s, d, sh, off, nb) for n, s, d, sh, off, nb in raw]
    canon = [t.canonical for t in tensors]
    if len(set(canon)) != len(canon):  # stripping would merge two tensors: keep full names
        prefix = ""
        tensors = [TensorInfo(n, n, s, d, sh, off, nb) for n, s, d, sh, off, nb in raw]
    tensors.sort(key=lambda t: t.name)
    return Header(Path(path).expanduser().resolve(), fmt, tensors, config, prefix, files)


def stream(header: Header, names: set[str] | None = None) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """Yield (info, array in stored dtype) one tensor at a time, shard by shard.

    ``names`` restricts to those tensor names (original names). Arrays are read-only views
    valid until the next step; their pages are released after it: peak memory is about
    one tensor.
    """
    wanted = [t for t in header.tensors if names is None or t.name in names]
    wanted.sort(key=lambda t: (t.shard, t.offset, t.name))  # file order: sequential reads
    with Reader(header) as r:
        for t in wanted:
            yield t, r.read(t)
            r.release(t)


_NP_DT = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def as_float(info: TensorInfo, arr: np.ndarray) -> np.ndarray:
    """A float32/float64 view or copy of a tensor read by ``Reader`` (bf16 and fp16 widened)."""
    if info.dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if arr.dtype in (np.float32, np.float64):
        return arr
    return arr.astype(np.float32)


class Reader:
    """Random access to a checkpoint's tensors by canonical name, for reading several in lockstep.

    Safetensors shards are memory-mapped (``safe_open`` has parsed and validated the
    header, which gives the offsets) and tensors come back as zero-copy numpy views. After
    a tensor is used, ``release`` tells the kernel to drop its pages from this process
    (``MADV_DONTNEED``; the page cache keeps them), so the resident set stays at the
    tensors in hand, not the files read: merging 16 checkpoints of 232 MB peaks at about
    0.5 GB (bench/bench_merge.py). Arrays come back in their stored dtype; bf16 comes back
    as its uint16 bit pattern (numpy has no bf16): use ``as_float`` for arithmetic. torch is
    imported only for ``.bin`` checkpoints.
    """

    def __init__(self, header: Header, fallback: "Reader | None" = None):
        self.header = header
        self._by_canon = header.by_canonical()
        self._maps: dict[str, tuple[Any, Any]] = {}
        self._sd: dict[str, Any] | None = None
        # Tensors this checkpoint lacks come from ``fallback`` (its base): delta zero.
        self.fallback = fallback

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fh, mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a caller still holds a view: the map goes when the view does
                pass
            fh.close()
        self._maps.clear()
        self._sd = None

    def _owner(self, canonical: str) -> "Reader":
        if canonical in self._by_canon or self.fallback is None:
            return self
        return self.fallback._owner(canonical)

    def info(self, canonical: str) -> TensorInfo:
        owner = self._owner(canonical)
        try:
            return owner._by_canon[canonical]
        except KeyError:
            raise CheckpointError(f"{self.header.path}: no tensor {canonical!r}") from None

    def get(self, canonical: str) -> np.ndarray:
        """The tensor with this canonical name as a float32/float64 array."""
        info = self.info(canonical)
        return as_float(info, self._owner(canonical).read(info))

    def release_name(self, canonical: str) -> None:
        """``release`` by canonical name, in whichever checkpoint holds it."""
        owner = self._owner(canonical)
        if canonical in owner._by_canon:
            owner.release(owner._by_canon[canonical])

    def _map(self, info: TensorInfo) -> Any:
        import mmap

        got = self._maps.get(info.shard)
        if got is None:
            shard = next(s for s in self.header.shards if s.name == info.shard)
            try:
                fh = open(shard, "rb")
                need = max(t.offset + t.nbytes for t in self.header.tensors if t.shard == info.shard)
                if os.fstat(fh.fileno()).st_size < need:  # shrunk since its header was read
                    fh.close()
                    raise CheckpointError(f"{shard}: file is shorter than its header says; it is truncated")
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as e:
                raise CheckpointError(f"{shard}: cannot open ({e})") from e
            got = self._maps[info.shard] = (fh, mm)
        return got[1]

    def read(self, info: TensorInfo) -> np.ndarray:
        """The tensor described by ``info``, in its stored dtype (bf16 as uint16 bits), read-only."""
        if self.header.format == TORCH_BIN:
            if self._sd is None:
                self._sd = _torch_load(self.header.shards[0])
            return _torch_to_numpy(self._sd[info.name])
        dt = _NP_DT.get(info.dtype)
        if dt is None:
            raise CheckpointError(f"{info.shard}: tensor {info.name!r} has unsupported dtype {info.dtype}")
        mm = self._map(info)
        count = info.nbytes // np.dtype(dt).itemsize
        return np.frombuffer(mm, dtype=dt, count=count, offset=info.offset).reshape(info.shape)

    def release(self, info: TensorInfo) -> None:
        """Drop the tensor's pages from this process's resident set (they stay in the page cache)."""
        import mmap

        got = self._maps.get(info.shard)
        if got is None or info.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        lo = info.offset // mmap.PAGESIZE * mmap.PAGESIZE
        got[1].madvise(mmap.MADV_DONTNEED, lo, info.offset + info.nbytes - lo)


def _torch_to_numpy(t: "Any") -> np.ndarray:
    import torch

    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def tensor_bytes(arr: np.ndarray) -> memoryview:
    """The raw bytes of an array as stored."""
    return memoryview(np.ascontiguousarray(arr)).cast("B")


class ContentHash:
    """Hash over tensor names, shapes, dtypes and bytes, independent of order and sharding.

    Each tensor gets its own xxh3-128 digest; the checkpoint's hash combines the digests
    in name order. xxh3 runs at memory speed; a cryptographic hash would cost more than
    the sketch itself (see bench/RESULTS.md).
    """

    def __init__(self) -> None:
        self._parts: dict[str, bytes] = {}

    def update(self, info: TensorInfo, tensor: np.ndarray) -> None:
        h = xxhash.xxh3_128()
        h.update(f"{info.name}|{info.shape}|{info.dtype}|".encode())
        h.update(tensor_bytes(tensor))
        self._parts[info.name] = h.digest()

    def hexdigest(self) -> str:
        h = xxhash.xxh3_128()
        for name in sorted(self._parts):
            h.update(self._parts[name])
        return h.hexdigest()


def arch_signature(body: list[tuple[str, tuple[int, ...]]]) -> str:
    """Signature of a family: a digest of the sorted (canonical name, shape) body list."""
    h = xxhash.xxh3_128()
    for name, shape in sorted(body):
        h.update(f"{name}:{','.join(map(str, shape))};".encode())
    return h.hexdigest()


def is_model_dir_like(p: Path) -> bool:
    """Whether a directory is itself a checkpoint or a PEFT adapter (rather than a folder of them)."""
    return any((p / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                            "adapter_config.json"))


def weight_bytes(path: Path) -> int:
    """Bytes of the weight files ``resolve`` finds at ``path``: the size of the work reading it
    is; 0 for what is no checkpoint (reading it reports why)."""
    try:
        if (Path(path) / "adapter_config.json").is_file():
            return sum(f.stat().st_size for f in Path(path).glob("adapter_model.*"))
        return sum(f.stat().st_size for f in resolve(path)[1])
    except (ZooError, OSError):
        return 0


def expand_paths(paths: list[str]) -> list[Path]:
    """Expand a list of paths: a folder that is not itself a checkpoint yields its checkpoints."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir() and not is_model_dir_like(p):
            found = sorted(c for c in p.iterdir() if (c.is_dir() and is_model_dir_like(c)) or c.suffix == ".safetensors")
            if not found:
                raise NotFound(f"{p}: no checkpoints in this directory (looked for model folders and .safetensors files)")
            out.extend(found)
        else:
            out.append(p)
    return out


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def default_name(path: Path) -> str:
    """A model name from a path: the folder name, or the file stem."""
    p = path.expanduser().resolve()
    stem = p.name if p.is_dir() else (p.parent.name if p.stem in ("model", "pytorch_model") else p.stem)
    return _SAFE_NAME.sub("-", stem).strip("-") or "model"
