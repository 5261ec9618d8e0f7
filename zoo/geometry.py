"""Geometry (numpy): distances, regions, membership, clustering, and exact Gram matrices of task vectors."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from zoo.errors import ZooValueError


def prepare(vecs: np.ndarray, metric: str) -> np.ndarray:
    """Vectors as an index or k-means sees them: float32, unit length for cosine (zero stays zero)."""
    x = np.ascontiguousarray(vecs, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return x


def distances(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """Distances from one vector ``q`` to every row of ``x``: 1 - cos (0 vectors: 1) or Euclidean."""
    q = np.asarray(q, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if metric == "l2":
        return np.linalg.norm(x - q, axis=1)
    qn = np.linalg.norm(q)
    xn = np.linalg.norm(x, axis=1)
    denom = qn * xn
    cos = np.divide(x @ q, denom, out=np.zeros(len(x)), where=denom > 0)
    return 1.0 - cos


def brute_force(q: np.ndarray, ids: np.ndarray, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest (ids, distances), ties broken by id."""
    d = distances(q, x, metric)
    order = np.lexsort((ids, d))[:k]
    return ids[order], d[order]


@dataclass
class RegionStats:
    """A region's centroid in sketch space and how its members spread around it."""

    centroid: np.ndarray
    member_dist: np.ndarray  # each member to the centroid of all members
    loo_dist: np.ndarray  # each member to the centroid of the other members
    mean_pairwise_cos: float

    def summary(self) -> dict[str, float]:
        d = self.member_dist
        return {"radius": float(d.max()), "mean_dist": float(d.mean()), "median_dist": float(np.median(d)),
                "p95_dist": float(np.percentile(d, 95)), "loo_radius": float(self.loo_dist.max()),
                "mean_pairwise_cosine": self.mean_pairwise_cos, "centroid_norm": float(np.linalg.norm(self.centroid))}


def region_stats(x: np.ndarray, metric: str) -> RegionStats:
    """Centroid (exact by linearity: the sketch of the weight average) and spread of a region."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    w = np.full(n, 1.0 / n)
    centroid = w @ x
    member = np.array([distances(x[i], centroid[None], metric)[0] for i in range(n)])
    if n > 1:
        total = w @ x
        loo = np.array([distances(x[i], ((total - w[i] * x[i]) / (1 - w[i]))[None], metric)[0] for i in range(n)])
        norms = np.linalg.norm(x, axis=1)
        unit = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
        g = unit @ unit.T
        pair = float((g.sum() - np.trace(g)) / (n * (n - 1)))
    else:
        loo, pair = np.zeros(1), 1.0
    return RegionStats(centroid, member, loo, pair)


def inside_score(x: np.ndarray, stats: RegionStats, metric: str) -> dict[str, float | bool]:
    """Is a point inside a region? Its distance to the centroid against the members' own.

    Threshold: the largest leave-one-out distance of a member to the centroid of the
    others (a member does not pull the centroid it is measured against, as a new point
    would not). ``score = d / threshold``: inside when score <= 1. ``percentile`` is the
    share of members at least as far from the centroid as the point.
    """
    d = float(distances(x, stats.centroid[None], metric)[0])
    thr = float(stats.loo_dist.max())
    score = d / thr if thr > 0 else (0.0 if d == 0 else float("inf"))
    pct = float(np.mean(stats.loo_dist >= d))
    return {"distance": d, "threshold": thr, "score": score, "inside": bool(score <= 1.0), "percentile": pct}


def purity(assign: Sequence[int], labels: Sequence[str | None]) -> float:
    """Share of labelled points whose cluster's majority label is their own."""
    by: dict[int, Counter] = {}
    n = 0
    for a, lab in zip(assign, labels):
        if lab is None:
            continue
        by.setdefault(int(a), Counter())[lab] += 1
        n += 1
    if n == 0:
        return float("nan")
    return sum(c.most_common(1)[0][1] for c in by.values()) / n


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii 2007): each next seed drawn with probability
    proportional to its squared distance from the seeds so far. Rows of ``x`` (float32)."""
    n = len(x)
    seeds = [int(rng.integers(n))]
    d2 = ((x - x[seeds[0]]) ** 2).sum(1).astype(np.float64)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        seeds.append(i)
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    return np.ascontiguousarray(x[seeds], dtype=np.float32)


KMEANS_WORK = 5e10  # multiply-adds all restarts of one clustering may spend (a few seconds)


def kmeans_restarts(n: int, k: int, dim: int, niter: int = 50) -> int:
    """How many seeded runs a clustering affords: as many as ``KMEANS_WORK`` pays for, between
    3 and 100. A zoo of a few hundred models gets 100 (tight regions of two or three seeds
    need them: purity 0.91 with 10 runs, 1.00 with 100 on 10 pairs); 100k models get 3."""
    return int(np.clip(KMEANS_WORK // max(n * k * dim * niter, 1), 3, 100))


def kmeans(x: np.ndarray, k: int, metric: str, seed: int = 0, niter: int = 50, restarts: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means (spherical for cosine); (assignments, centroids). The best of ``restarts``
    runs (default ``kmeans_restarts``), each seeded by k-means++: faiss's own seeding draws k
    points uniformly, and on a zoo of a few seeds per dataset that often puts two seeds in one
    tight region and none in another, which Lloyd's steps cannot undo."""
    import faiss

    data = prepare(x, metric)
    if k > len(data):
        raise ZooValueError(f"-k {k} is more than the {len(data)} models to cluster; use -k {len(data)} or fewer")
    if restarts is None:
        restarts = kmeans_restarts(len(data), k, data.shape[1], niter)
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for r in range(restarts):
        km = faiss.Kmeans(data.shape[1], k, niter=niter, seed=seed + r, spherical=metric == "cosine",
                          min_points_per_centroid=1, max_points_per_centroid=1 << 20, verbose=False)
        km.train(data, init_centroids=kmeans_pp(data, k, rng))
        dist, assign = km.index.search(data, 1)
        # Spherical k-means searches by inner product: a larger sum is the better fit.
        score = -float(dist.sum()) if metric == "cosine" else float(dist.sum())
        if best is None or score < best[0]:
            best = (score, assign[:, 0].copy(), km.centroids.copy())
    return best[1], best[2]


def exact_gram(base: Any, readers: Sequence[Any], body: dict[str, tuple[int, ...]], chunk: int = 1 << 20) -> np.ndarray:
    """Exact Gram matrix G[i, j] = <delta_i, delta_j> of task vectors over the body, in float64.

    ``readers`` give each model's dense weights (``zoo.sources``); ``base`` the family base's.
    Reads all models in lockstep, one tensor (in chunks) at a time: memory holds N + 1
    tensors, never N models. When every model is an adapter straight on the base, the Gram
    comes from the adapters' factors alone (``adapter.factor_gram``): r x r work per module.
    """
    from zoo.adapter import AdapterReader, factor_gram

    if readers and all(isinstance(r, AdapterReader) and r.parent is base for r in readers):
        views = [r.factor_view(body) for r in readers]
        if all(v is not None for v in views):
            return factor_gram(views)
    n = len(readers)
    g = np.zeros((n, n), dtype=np.float64)
    buf = np.empty((n, chunk), dtype=np.float64)  # the chunk's task vectors, written in place
    for name in sorted(body):
        b = base.get(name).reshape(-1)
        ts = [r.get(name).reshape(-1) for r in readers]
        for lo in range(0, b.size, chunk):
            bb = b[lo:lo + chunk].astype(np.float64)
            d = buf[:, :bb.size]
            # float32 - float64 into float64 rows: the same values as widening first, without
            # the temporaries and the stacking copy (2.5 -> 0.9 s for 10 MiniLM fine-tunes).
            for i, t in enumerate(ts):
                np.subtract(t[lo:lo + chunk], bb, out=d[i])
            g += d @ d.T
        del b, ts
        for r in (base, *readers):
            r.release_name(name)
    return g


def gram_distances(g: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise distance matrix from a Gram matrix: 1 - cos or Euclidean."""
    diag = np.diag(g)
    if metric == "l2":
        return np.sqrt(np.maximum(diag[:, None] + diag[None, :] - 2 * g, 0.0))
    norms = np.sqrt(np.maximum(diag, 0.0))
    denom = norms[:, None] * norms[None, :]
    cos = np.divide(g, denom, out=np.zeros_like(g), where=denom > 0)
    return 1.0 - cos


def neighbour_agreement(d_est: np.ndarray, d_true: np.ndarray, k: int, labels: Sequence[str | None],
                        rerank: int = 0) -> dict[str, float]:
    """How far the neighbours by ``d_est`` (a pairwise distance matrix) agree with those by
    ``d_true``: the mean share of each point's k nearest that are its true k nearest, the share
    of points whose nearest has the same label, and the Spearman rank correlation of the
    pairwise distances. ``rerank`` > 0: the ``max(k, rerank)`` nearest by ``d_est`` are put in
    ``d_true`` order first (what an exact re-rank of sketch candidates returns)."""
    n = len(d_est)
    if n < k + 1:
        raise ZooValueError(f"{n} models cannot have {k} neighbours each; lower -k")
    overlap, same = 0.0, 0
    for i in range(n):
        est = [j for j in np.argsort(d_est[i], kind="stable") if j != i]
        if rerank:
            est = sorted(est[:max(k, rerank)], key=lambda j: d_true[i, j])
        true = [j for j in np.argsort(d_true[i], kind="stable") if j != i][:k]
        overlap += len(set(est[:k]) & set(true)) / k
        same += labels[est[0]] is not None and labels[est[0]] == labels[i]
    iu = np.triu_indices(n, 1)
    return {"knn_overlap": overlap / n, "nn1_same_dataset": same / n,
            "spearman": None if rerank else _spearman(d_est[iu], d_true[iu])}


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])
