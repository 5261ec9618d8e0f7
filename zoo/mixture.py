"""Learned mixtures of a family's regions as a start, judged like every other candidate.

A mixture is ``theta = sum_i w_i theta_i`` over the base and the centroids of the family's
dataset regions, with ``w`` on the simplex: it can stay at the base, take a little of every
region, or lean on the few that suit the target. The weights are learned on the target's
examples without gradients (LoraHub, Huang et al. 2023, learns adapter weights the same way):
a search over mixtures chosen without looking at labels (``design``) keeps the one whose
mixed body gives features of the highest LogME evidence (You et al. 2021) for the labels.

LogME is a cheap stand-in for fine-tuning, so it only proposes the mixture; the trial
fine-tunes decide, and they must not see what chose the weights. The trial of fold ``f``
therefore starts from the mixture best on the other folds only (nested), so the mixture's
paired gain over the base is as honest as any centroid's; the mixture offered as a start is
the best on all the examples, materialized with its members and weights recorded. Because
the design ignores labels, one forward pass per mixture serves every fold: an adaptive
search (Nelder-Mead was the first version) needs a search per fold, five times the passes,
and cost more than the candidate's trials on MiniLM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from zoo.domain import env_number
from zoo.errors import ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    from zoo.data import Examples
    from zoo.domain import Family
    from zoo.params import TrainParams
    from zoo.store import Store

MIX_REGIONS = 10       # dataset regions mixed at most (the nearest to the target first)
MIX_BUDGET = 40        # mixtures scored (one forward pass of the examples each)
MIX_BYTES = 4 << 30    # the regions' task vectors held in memory at most (ZOO_MIX_BYTES)


# ---------------------------------------------------------------- LogME (pure)

def _evidence(sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int, alpha: float, beta: float
              ) -> tuple[float, float, float, float]:
    """(log evidence, gamma, |m|^2, |t - F m|^2) of a Bayesian linear model ``t ~ N(F m, 1/beta)``,
    ``m ~ N(0, 1/alpha)``, in the basis of F's singular vectors (sigma: squared singular values,
    z2: squared projections of t on them, rest: the part of |t|^2 outside their span)."""
    lam = alpha / beta
    gamma = float((sigma / (sigma + lam)).sum())
    m2 = float((sigma * z2 / (sigma + lam) ** 2).sum())
    res2 = float((z2 * (lam / (sigma + lam)) ** 2).sum()) + rest
    logdet = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - logdet / 2 - beta / 2 * res2 - alpha / 2 * m2
          - n / 2 * np.log(2 * np.pi))
    return float(ev), gamma, m2, res2


def _fit_evidence(sigma: np.ndarray, z2: np.ndarray, rest: float, n: int, d: int) -> tuple[float, float, float]:
    """MacKay's fixed point for the alpha, beta that maximize the evidence; (evidence, alpha, beta)."""
    alpha, beta = 1.0, 1.0
    for _ in range(100):
        _, gamma, m2, res2 = _evidence(sigma, z2, rest, n, d, alpha, beta)
        alpha_new = gamma / (m2 + 1e-12)
        beta_new = max(n - gamma, 1e-12) / (res2 + 1e-12)
        done = abs(alpha_new / beta_new - alpha / beta) <= 1e-6 * (alpha / beta)
        alpha, beta = alpha_new, beta_new
        if done:
            break
    return _evidence(sigma, z2, rest, n, d, alpha, beta)[0], alpha, beta


def logme(features: np.ndarray, labels: Sequence[Any]) -> float:
    """LogME: the log marginal evidence per example of a linear model from ``features`` (n x d)
    to each label's indicator, maximized over its two precisions and averaged over labels.
    Higher means the features already separate the labels with a simple, well-fitting map."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(y) or len(f) < 2:
        raise ZooValueError(f"LogME needs an (examples x features) matrix and one label per example; got {f.shape} "
                            f"and {len(y)} labels")
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2
    out = []
    for k in np.unique(y):
        t = (y == k).astype(np.float64)
        z = u.T @ t
        z2 = z * z
        rest = max(float(t @ t - z2.sum()), 0.0)
        out.append(_fit_evidence(sigma, z2, rest, n, d)[0] / n)
    return float(np.mean(out))


# ---------------------------------------------------------------- weights on the simplex (pure)

def design(regions: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` mixtures of the base and ``regions`` regions (rows on the simplex, the base first),
    chosen without looking at any label: the base; the regions' average at a quarter, half,
    three quarters and all of the way from the base; each region alone, half and all of the
    way; then random mixtures (a share from the base drawn uniformly in [0.2, 1], split over
    the regions by a Dirichlet(0.5) draw) to fill ``n``. The first rows are kept when ``n`` is
    smaller. Deterministic in ``seed``."""
    if regions < 1:
        raise ZooValueError(f"a mixture needs at least one region besides the base; got {regions}")
    check_budget(n)
    rows: list[np.ndarray] = []

    def put(w: np.ndarray) -> None:
        if not any(np.allclose(w, r, rtol=0, atol=1e-12) for r in rows):  # one region: its average is itself
            rows.append(w)

    put(np.eye(regions + 1)[0])
    for share in (0.25, 0.5, 0.75, 1.0):
        put(np.concatenate([[1 - share], np.full(regions, share / regions)]))
    for j in range(regions):
        for share in (0.5, 1.0):
            w = np.zeros(regions + 1)
            w[0], w[j + 1] = 1 - share, share
            put(w)
    rng = np.random.default_rng(seed)
    while len(rows) < n:
        share = rng.uniform(0.2, 1.0)
        put(np.concatenate([[1 - share], share * rng.dirichlet(np.full(regions, 0.5))]))
    return np.array(rows[:n])


def check_budget(n: int) -> None:
    """Refuse a design too small to hold anything but the base."""
    if n < 2:
        raise ZooValueError(f"--mix-budget {n} scores no mixture besides the base; give 2 or more")


@dataclass
class Choice:
    """The best design row for one set of examples: its index, weights and LogME."""

    index: int
    weights: list[float]
    score: float


def choose(features: Sequence[np.ndarray], labels: Sequence[Any], subsets: Sequence[Sequence[int]],
           weights: np.ndarray) -> list[Choice]:
    """For each subset of the examples, the design row whose features have the highest LogME
    on that subset's labels (the first on ties). ``features[i]`` holds every example's
    features at ``weights[i]``: computed once, they serve every subset."""
    y = np.asarray(labels)
    out = []
    for idx in subsets:
        idx = np.asarray(idx, dtype=int)
        scores = [logme(np.asarray(f)[idx], y[idx]) for f in features]
        i = int(np.argmax(scores))
        out.append(Choice(i, [float(v) for v in weights[i]], float(scores[i])))
    return out


def pick_regions(centroids: dict[str, np.ndarray], ref: np.ndarray | None, metric: str, cap: int) -> list[str]:
    """The dataset regions to mix: all of them up to ``cap``; beyond it the nearest to ``ref``
    (the target's region, else its task's centroid; by name without one)."""
    from zoo.geometry import distances

    names = sorted(centroids)
    if len(names) <= cap:
        return names
    if ref is None:
        return names[:cap]
    d = distances(np.stack([centroids[k] for k in names]), ref[None], metric)
    order = sorted(range(len(names)), key=lambda i: (float(d[i]), names[i]))
    return sorted(names[i] for i in order[:cap])


# ---------------------------------------------------------------- weights in memory

@dataclass
class RegionDeltas:
    """The base's body tensors and each region's average task vector, float32, by canonical name."""

    regions: list[str]
    base: dict[str, Any] = field(repr=False)
    deltas: dict[str, Any] = field(repr=False)   # name -> (regions, numel)

    def blend(self, model: Any, weights: Sequence[float]) -> Any:
        """Set ``model``'s body to the mixture (base first in ``weights``), in place."""
        import torch

        from zoo.adapter import model_params

        w = torch.tensor([float(x) for x in weights[1:]], dtype=torch.float32)
        params = model_params(model)
        with torch.no_grad():
            for c, d in self.deltas.items():
                p = params.get(c)
                if p is None or tuple(p.shape) != tuple(self.base[c].shape):
                    continue
                p.copy_((self.base[c].reshape(-1) + w @ d).reshape(p.shape).to(p.dtype))
        return model


def member_bytes(fam: "Family", regions: int) -> int:
    """Memory the regions' task vectors take (float32), plus the base's copy."""
    import math

    return 4 * (regions + 1) * sum(math.prod(s) for s in fam.body.values())


def load_deltas(store: "Store", fam: "Family", regions: list[tuple[str, list[dict[str, Any]]]]) -> RegionDeltas:
    """Read each region's members once, streaming tensor by tensor, into average task vectors."""
    import torch

    from zoo.sources import open_readers, source

    with store.read() as conn:
        base_path = store.base_weights(conn, fam)
        srcs = [[source(store, conn, fam, r) for r in rows] for _, rows in regions]
    flat = [s for group in srcs for s in group]
    base_t, deltas = {}, {}
    with open_readers(base_path, flat, fam) as (base, readers):
        for c in store.bar(sorted(fam.body), "reading regions", unit="tensor"):
            b = np.asarray(base.get(c), dtype=np.float32).reshape(-1)
            rows, i = [], 0
            for group in srcs:
                acc = np.zeros(b.size, dtype=np.float64)
                for r in readers[i:i + len(group)]:
                    acc += np.asarray(r.get(c), dtype=np.float64).reshape(-1)
                    r.release_name(c)
                i += len(group)
                rows.append((acc / len(group) - b).astype(np.float32))
            base_t[c] = torch.from_numpy(b.copy()).reshape(fam.body[c])
            deltas[c] = torch.from_numpy(np.stack(rows))
    return RegionDeltas([n for n, _ in regions], base_t, deltas)


@dataclass(frozen=True)
class Blend:
    """A ``ModelRef`` edit: the mixture with these weights (base first) set into a loaded model."""

    deltas: RegionDeltas
    weights: tuple[float, ...]

    def __call__(self, model: Any) -> Any:
        return self.deltas.blend(model, self.weights)


# ---------------------------------------------------------------- the candidate

def logme_of(ref: Any, tok: Any, ex: "Examples", params: "TrainParams") -> float:
    """LogME of a start's frozen body on ``ex`` (evidence shown beside the trials, not deciding)."""
    from zoo.finetune import _features, resolve_device

    return logme(_features(ref.body(), tok, ex, params, resolve_device(params.device)).numpy(), list(ex.labels))


@dataclass
class MixturePlan:
    """What ``plan_mixture`` chose: weights per fold for the trials and on all examples for the start."""

    regions: list[str]
    fold_weights: list[list[float]]
    weights: list[float]
    score: float
    base_score: float
    evaluations: int
    refs: list[Any]


def plan_mixture(deltas: RegionDeltas, base_path: Path, tok: Any, ex: "Examples", params: "TrainParams",
                 folds: int, budget: int) -> MixturePlan:
    """Score ``budget`` mixtures of the design by LogME: the features of every example at each
    mixture are computed once (one forward pass a mixture; features need no label), then each
    fold's trial gets the best mixture on the other folds' labels and the start the best on all.
    So no weight a trial starts from has seen its held-out fold, at the cost of one search."""
    from zoo.finetune import ModelRef, _features, _load_body, resolve_device, stratified_folds

    device = resolve_device(params.device)
    body = _load_body(base_path)
    w = design(len(deltas.regions), budget, params.seed)
    feats = []
    for row in w:
        deltas.blend(body, row)
        feats.append(_features(body, tok, ex, params, device).numpy())
    fold = stratified_folds(ex.labels, folds, params.seed)
    subsets = [[i for i, g in enumerate(fold) if g != f] for f in range(folds)] + [list(range(len(ex)))]
    *per_fold, final = choose(feats, ex.labels, subsets, w)
    refs = [ModelRef(base_path, edit=Blend(deltas, tuple(c.weights))) for c in per_fold]
    return MixturePlan(deltas.regions, [c.weights for c in per_fold], final.weights, final.score,
                       logme(feats[0], ex.labels), len(w), refs)


def mix_budget_bytes() -> int:
    return int(env_number("ZOO_MIX_BYTES", MIX_BYTES, int))
