"""Learned mixtures of a family's regions as a start, judged like every other candidate.

A mixture is ``theta = sum_i w_i theta_i`` over the base and the centroids of the family's
dataset regions, with ``w`` on the simplex: it can stay at the base, take a little of every
region, or lean on the few that suit the target. The weights are learned on the target's
examples without gradients (LoraHub, Huang et al. 2023, learns adapter weights the same way):
Nelder-Mead on the weights' logits maximizes the LogME evidence (You et al. 2021) of the
mixed body's features for the target's labels, one forward pass per step.

LogME is a cheap stand-in for fine-tuning, so it only proposes the mixture; the trial
fine-tunes decide, and they must not see what chose the weights. The trial of fold ``f``
therefore starts from weights learned on the other folds only (nested), so the mixture's
paired gain over the base is as honest as any centroid's; the mixture offered as a start
is then learned on all the examples and materialized with its members and weights recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from zoo.domain import env_number
from zoo.errors import ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    from zoo.data import Examples
    from zoo.domain import Family
    from zoo.params import TrainParams
    from zoo.store import Store

MIX_REGIONS = 10       # dataset regions mixed at most (the nearest to the target first)
MIX_BUDGET = 40        # objective evaluations per learning (LoraHub uses 40 steps)
MIX_BYTES = 4 << 30    # the regions' task vectors held in memory at most (ZOO_MIX_BYTES)
BASE_SHARE = 0.5       # the search starts halfway between the base and the regions' average
SPREAD = 2.0           # how far the first steps lean towards each region (in logits)


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

def simplex(logits: np.ndarray) -> np.ndarray:
    """Softmax: weights that are positive and sum to one."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


@dataclass
class Learned:
    """The best weights seen (base first), their objective value and how many evaluations it took."""

    weights: list[float]
    score: float
    evaluations: int
    start_score: float


def check_budget(budget: int, n: int) -> None:
    """Refuse a search budget that cannot even take its first steps over ``n`` components."""
    if n < 2:
        raise ZooValueError(f"a mixture needs the base and at least one region; got {n} component(s)")
    if budget < n:
        raise ZooValueError(f"--mix-budget {budget} is below {n}, the evaluations the first search steps need "
                            f"(the base and {n - 1} region(s)); raise it or lower --mix-regions")


def learn_weights(objective: Callable[[np.ndarray], float], n: int, budget: int = MIX_BUDGET,
                  base_share: float = BASE_SHARE, spread: float = SPREAD) -> Learned:
    """Maximize ``objective(w)`` over weights ``w`` on the simplex of ``n`` components (the
    base first) with at most ``budget`` evaluations, gradient-free (Nelder-Mead on the logits
    of components 1..n-1, the base's fixed at its start). The search starts with the base
    holding ``base_share`` and the rest shared equally; its first steps lean towards each
    component in turn. Deterministic."""
    from scipy.optimize import minimize

    check_budget(budget, n)
    base_logit = float(np.log(base_share * (n - 1) / (1 - base_share)))
    best: dict[str, Any] = {"score": -np.inf, "w": None, "n": 0, "first": None}

    def weights_of(x: np.ndarray) -> np.ndarray:
        return simplex(np.concatenate([[base_logit], x]))

    def f(x: np.ndarray) -> float:
        if best["n"] >= budget:  # scipy may overrun maxfev by a step; never evaluate past the budget
            return -best["score"]
        w = weights_of(x)
        s = float(objective(w))
        best["n"] += 1
        if best["first"] is None:
            best["first"] = s
        if s > best["score"]:
            best.update(score=s, w=w)
        return -s if np.isfinite(s) else np.inf

    x0 = np.zeros(n - 1)
    sim = np.vstack([x0] + [x0 + spread * np.eye(n - 1)[i] for i in range(n - 1)])
    minimize(f, x0, method="Nelder-Mead", options={"maxfev": budget, "initial_simplex": sim,
                                                   "xatol": 1e-2, "fatol": 1e-5})
    if best["w"] is None:
        raise ZooValueError("the mixture's objective was not finite at any weights tried; the target's examples "
                            "give the features no usable signal")
    return Learned([float(v) for v in best["w"]], float(best["score"]), int(best["n"]), float(best["first"]))


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
    members: list[list[dict[str, Any]]]
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
    return RegionDeltas([n for n, _ in regions], [rows for _, rows in regions], base_t, deltas)


@dataclass(frozen=True)
class Blend:
    """A ``ModelRef`` edit: the mixture with these weights (base first) set into a loaded model."""

    deltas: RegionDeltas
    weights: tuple[float, ...]

    def __call__(self, model: Any) -> Any:
        return self.deltas.blend(model, self.weights)


# ---------------------------------------------------------------- the candidate

def logme_objective(deltas: RegionDeltas, body: Any, tok: Any, ex: "Examples", params: "TrainParams",
                    device: str) -> Callable[[np.ndarray], float]:
    """LogME of the mixed body's mean-pooled features for ``ex``'s labels, as a function of the weights."""
    from zoo.finetune import _features

    labels = list(ex.labels)

    def objective(w: np.ndarray) -> float:
        deltas.blend(body, w)
        return logme(_features(body, tok, ex, params, device).numpy(), labels)

    return objective


def logme_of(ref: Any, tok: Any, ex: "Examples", params: "TrainParams") -> float:
    """LogME of a start's frozen body on ``ex`` (evidence shown beside the trials, not deciding)."""
    from zoo.finetune import _features, resolve_device

    return logme(_features(ref.body(), tok, ex, params, resolve_device(params.device)).numpy(), list(ex.labels))


@dataclass
class MixturePlan:
    """What ``trial_mixture`` learned: per-fold weights for the trials and the final weights."""

    regions: list[str]
    fold_weights: list[list[float]]
    weights: list[float]
    score: float
    start_score: float
    evaluations: int
    refs: list[Any]


def plan_mixture(deltas: RegionDeltas, base_path: Path, tok: Any, ex: "Examples", params: "TrainParams",
                 folds: int, budget: int, progress: Callable[[str], None] | None = None) -> MixturePlan:
    """Weights learned without each held-out fold (for its trial) and on all examples (the start)."""
    from zoo.finetune import ModelRef, _load_body, resolve_device, stratified_folds

    device = resolve_device(params.device)
    body = _load_body(base_path)
    fold = stratified_folds(ex.labels, folds, params.seed)
    n = len(deltas.regions) + 1
    fold_w, evals = [], 0
    for f in range(folds):
        if progress:
            progress(f"mixture weights without fold {f + 1}/{folds}")
        sub = ex.subset([i for i, g in enumerate(fold) if g != f])
        got = learn_weights(logme_objective(deltas, body, tok, sub, params, device), n, budget)
        fold_w.append(got.weights)
        evals += got.evaluations
    if progress:
        progress("mixture weights on all examples")
    final = learn_weights(logme_objective(deltas, body, tok, ex, params, device), n, budget)
    refs = [ModelRef(base_path, edit=Blend(deltas, tuple(w))) for w in fold_w]
    return MixturePlan(deltas.regions, fold_w, final.weights, final.score, final.start_score,
                       evals + final.evaluations, refs)


def mix_budget_bytes() -> int:
    return int(env_number("ZOO_MIX_BYTES", MIX_BYTES, int))
