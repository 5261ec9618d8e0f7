"""FAISS indexes, one per sketch space, derived from the catalog and rebuilt when they disagree.

``choose_index`` is a pure function of (count, dim, memory budget), in the manner of
autofaiss: exact search while a scan is cheap, IVF above, IVF-PQ when raw vectors do not
fit the budget. Files are ``index/space_<id>.faiss`` plus a JSON sidecar holding the
catalog fingerprint (count, id checksum, norm checksum) the index was built from; a
mismatch at open means the index is stale (e.g. a process died between the catalog
commit and the index write) and it is rebuilt.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import IndexError_
from zoo.geometry import prepare

FLAT_MAX = 20_000


def _half_of_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # platforms without sysconf
        return 4 << 30


# Memory the index may take by default: half the machine (ZOO_INDEX_MEMORY overrides).
DEFAULT_BUDGET = _half_of_ram()


@dataclass(frozen=True)
class IndexSpec:
    """What to build: a FAISS factory string and its search parameters."""

    kind: str  # flat | ivf | ivfpq
    factory: str
    metric: str
    nlist: int = 0
    nprobe: int = 0

    @property
    def exact(self) -> bool:
        return self.kind == "flat"


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def choose_index(n: int, dim: int, memory_budget: int = DEFAULT_BUDGET, metric: str = "cosine") -> IndexSpec:
    """Index type from size and memory budget (pure; tested on a grid).

    - n <= FLAT_MAX: exact flat scan (a 20k x 1024 scan is a few ms).
    - raw vectors fit in half the budget: IVF-Flat, nlist ~ 4 sqrt(n) (power of two, at
      least 39 training points per list), nprobe sized for recall@10 >= 0.95 on clustered data.
    - otherwise IVF-PQ with m sub-quantizers of 8 bits chosen to fit the budget.
    """
    if n < 0 or dim <= 0:
        raise ValueError(f"bad index size n={n}, dim={dim}")
    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric {metric!r} is not cosine or l2")
    if n <= FLAT_MAX:
        return IndexSpec("flat", "Flat", metric)
    nlist = max(64, min(_pow2_floor(4 * math.sqrt(n)), _pow2_floor(n / 39)))
    nprobe = max(16, nlist // 64)
    raw = n * dim * 4
    if raw <= memory_budget // 2:
        return IndexSpec("ivf", f"IVF{nlist},Flat", metric, nlist, nprobe)
    per_vec = max(8, int(memory_budget // 2 // max(n, 1)))
    m = max(d for d in range(1, dim + 1) if dim % d == 0 and d <= min(per_vec, 64))
    return IndexSpec("ivfpq", f"IVF{nlist},PQ{m}", metric, nlist, nprobe * 2)


def to_distance(scores: np.ndarray, metric: str) -> np.ndarray:
    """FAISS scores to distances: 1 - cos for cosine (IP index), Euclidean for L2."""
    return 1.0 - scores if metric == "cosine" else np.sqrt(np.maximum(scores, 0.0))


def _checksum(data: np.ndarray) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(memoryview(np.ascontiguousarray(data)))


def _file_checksum(path: Path) -> str:
    """``_checksum`` of a file's bytes, read in slices."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(64 << 20):
            h.update(chunk)
    return h.hexdigest()


def gpu_count() -> int:
    import faiss

    try:
        return int(faiss.get_num_gpus())
    except AttributeError:  # faiss-cpu builds have no GPU symbols
        return 0


class SpaceIndex:
    """The FAISS index of one sketch space, with the fingerprint it was built from."""

    def __init__(self, directory: Path, space_id: int):
        self.dir = Path(directory)
        self.space_id = space_id
        self.index: Any = None
        self.meta: dict[str, Any] = {}
        self._gpu: Any = None
        self.persisted = False  # whether the files on disk hold this index

    @property
    def path(self) -> Path:
        return self.dir / f"space_{self.space_id}.faiss"

    @property
    def meta_path(self) -> Path:
        return self.dir / f"space_{self.space_id}.json"

    def load(self) -> bool:
        """Read the index from disk; False when missing or unreadable."""
        import faiss

        if not (self.path.exists() and self.meta_path.exists()):
            return False
        try:
            self.meta = json.loads(self.meta_path.read_text())
            data = np.fromfile(self.path, dtype=np.uint8)
            # Flipped bytes inside the vectors are still a valid index to FAISS: the checksum tells.
            if self.meta.get("checksum") != _checksum(data):
                raise ValueError("index file checksum mismatch")
            self.index = faiss.deserialize_index(data)
        except Exception:
            self.index, self.meta = None, {}
            return False
        return True

    def matches(self, fingerprint: dict[str, Any], spec: IndexSpec) -> bool:
        return self.index is not None and self.meta.get("fingerprint") == fingerprint and \
            self.meta.get("spec", {}).get("factory") == spec.factory and self.index.ntotal == fingerprint["count"]

    def build(self, ids: np.ndarray, vecs: np.ndarray, spec: IndexSpec, fingerprint: dict[str, Any]) -> None:
        """Build from scratch and write atomically (temp name, then rename)."""
        import faiss

        d = vecs.shape[1]
        x = prepare(vecs, spec.metric)
        mt = faiss.METRIC_INNER_PRODUCT if spec.metric == "cosine" else faiss.METRIC_L2
        if spec.exact:
            index = faiss.IndexIDMap2(faiss.IndexFlat(d, mt))
        else:
            index = faiss.index_factory(d, spec.factory, mt)
            rng = np.random.default_rng(0)
            # 64 points a list train k-means well (faiss warns below 39) at a fraction of the cost.
            train = x if len(x) <= 64 * spec.nlist else x[rng.choice(len(x), 64 * spec.nlist, replace=False)]
            index.train(train)
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
        if len(x):
            index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))
        del x  # the index holds its own copy
        self.index, self._gpu = index, None
        self.meta = {"fingerprint": fingerprint, "spec": asdict(spec), "dim": d,
                     "max_id": int(ids.max()) if len(ids) else 0}
        self.save()

    def append(self, ids: np.ndarray, vecs: np.ndarray, fingerprint: dict[str, Any]) -> None:
        """Add rows newer than the index (ids above its ``max_id``) and save: no rebuild."""
        if len(ids):
            self.index.add_with_ids(prepare(vecs, self.meta["spec"]["metric"]), np.ascontiguousarray(ids, dtype=np.int64))
            self.meta["max_id"] = max(int(self.meta["max_id"]), int(ids.max()))
        self.meta["fingerprint"] = fingerprint
        self._gpu = None
        self.save()

    def coarse(self, ids: np.ndarray, vecs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(centroids, the list of each of ``ids``) of an IVF index, for the SQL probes
        (migration 0003); None for an exact index. Without ``vecs`` the lists are read from
        the index's own inverted lists (no distance computed: a quantizer pass over 1M
        sketches took ~40 s); with them, the rows are assigned by the quantizer."""
        if self.meta["spec"]["kind"] == "flat":
            return None
        import faiss

        ivf = faiss.extract_index_ivf(self.index)
        cents = ivf.quantizer.reconstruct_n(0, ivf.nlist)
        ids = np.asarray(ids, dtype=np.int64)
        lists = np.full(len(ids), -1, dtype=np.int64)
        if vecs is None:
            order = np.argsort(ids)
            for li in range(ivf.nlist):
                n = ivf.invlists.list_size(li)
                if n:
                    got = faiss.rev_swig_ptr(ivf.invlists.get_ids(li), n).astype(np.int64)
                    pos = np.searchsorted(ids, got, sorter=order)
                    hit = pos < len(ids)
                    pos = order[pos[hit]]
                    lists[pos[ids[pos] == got[hit]]] = li
        else:
            step = 1 << 16  # normalised in slices: no second copy of a million vectors
            for lo in range(0, len(vecs), step):
                _, li = ivf.quantizer.search(prepare(vecs[lo:lo + step], self.meta["spec"]["metric"]), 1)
                lists[lo:lo + step] = li[:, 0]
        if (lists < 0).any():
            raise ValueError(f"{int((lists < 0).sum())} id(s) are in no list of the index")
        return cents, lists

    def save(self) -> None:
        """Write the index and its sidecar whole. The files are a cache of the catalog: when the
        home cannot take them (read-only, full) the index is used from memory and ``persisted``
        says so; the next command that can write rebuilds it."""
        import faiss

        tmp, tmp_meta = self.path.with_suffix(".faiss.tmp"), self.meta_path.with_suffix(".json.tmp")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Straight to the file: serializing in memory first held a second copy (4 GB at 1M).
            faiss.write_index(self.index, str(tmp))
            self.meta["checksum"] = _file_checksum(tmp)
            os.replace(tmp, self.path)
            tmp_meta.write_text(json.dumps(self.meta))
            os.replace(tmp_meta, self.meta_path)
            self.persisted = True
        except (OSError, RuntimeError):  # faiss reports a file it cannot write as RuntimeError
            for p in (tmp, tmp_meta):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
            self.persisted = False

    def remove(self) -> None:
        for p in (self.path, self.meta_path):
            p.unlink(missing_ok=True)

    def _searcher(self) -> Any:
        """The GPU copy of the index when faiss sees a GPU, else the CPU index.

        Filtered searches stay on the CPU index: GPU indexes take no ID selectors.
        """
        if self._gpu is None:
            self._gpu = self.index
            if gpu_count() > 0:
                import faiss

                try:
                    self._gpu = faiss.index_cpu_to_all_gpus(self.index)
                except Exception:  # a GPU that cannot take the index: search on CPU
                    self._gpu = self.index
        return self._gpu

    def search(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, distances) of the k nearest to each query row, optionally among ``allowed`` ids."""
        import faiss

        spec = self.meta["spec"]
        x = prepare(np.atleast_2d(q), spec["metric"])
        params = None
        searcher = self.index if allowed is not None else self._searcher()
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            if spec["kind"] == "flat":
                params = faiss.SearchParameters(sel=sel)
            else:
                params = faiss.SearchParametersIVF(sel=sel, nprobe=spec["nprobe"])
            self._keep = sel  # the selector must outlive the search call
        try:
            scores, ids = searcher.search(x, k, params=params) if params is not None else searcher.search(x, k)
        except Exception as e:
            raise IndexError_(f"FAISS search failed on space {self.space_id} ({e}); rebuild with `zoo reindex`") from e
        return ids, to_distance(scores, spec["metric"])
