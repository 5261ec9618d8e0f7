"""Ranking starting points for a new fine-tuning run: the paper's prior, updated by the zoo's own runs.

Candidates are start specs that ``zoo finetune --from`` accepts: ``base``, the task-region
centroid without the target dataset, the family centroid without it, and the centroids of
the nearest dataset regions of the task. Each category carries a prior accuracy gain over
starting from the base (Gueta et al. 2023: centroids of other datasets' models beat the
base in 11 of 12 datasets, +3.06 points on average); the store's finished runs give
observed gains: a run's accuracy minus the mean accuracy of runs from the base on the same
dataset in the same setting (training and eval files, method, hyperparameters; the seed
aside), so a few-shot run is never measured against a full-data base run. The score
shrinks the observed mean towards the prior with ``PRIOR_WEIGHT`` pseudo-runs, so a few
outcomes move the ranking and many outcomes decide it.

With the target's training data (``select-start --train FILE``), each candidate is also
probed: the cross-validated accuracy of a linear probe on its frozen body, minus the
base's. That gain is specific to the target dataset, where the prior and the observed
gains come from other datasets, so it enters the same weighted mean as ``PROBE_WEIGHT``
pseudo-runs of its own.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

PRIORS = {"task-centroid": 0.0306, "family-centroid": 0.020, "dataset-centroid": 0.010, "base": 0.0, "model": 0.0}
PRIOR_WEIGHT = 2.0
PROBE_WEIGHT = 2.0
SETTING_KEYS = ("train", "eval", "method", "epochs", "lr", "batch_size", "max_length", "warmup_ratio", "weight_decay")


def category(start: str, start_kind: str | None) -> str:
    """The category of a start spec, as recorded in a run's params."""
    if start == "base" or start_kind == "base":
        return "base"
    if start.startswith("centroid:"):
        body = start.split(":", 1)[1]
        keys = {p.split("=", 1)[0].strip() for p in body.split(",") if p.strip()}
        if "task" in keys:
            return "task-centroid"
        if "all" in keys:
            return "family-centroid"
        if "dataset" in keys:
            return "dataset-centroid"
    return "model"


def category_of_members(dataset: str | None, task: str | None, members: Iterable[tuple[str | None, str | None]]) -> str:
    """The category of a centroid start named explicitly, from its members' (dataset, task):
    what the start was, not how it was spelled (``zoo centroid a b c`` then ``--from`` its name)."""
    members = list(members)
    if not members or any(d is None or d == dataset for d, _ in members):
        return "model"
    if task is not None and all(t == task for _, t in members):
        return "task-centroid" if len({d for d, _ in members}) > 1 else "dataset-centroid"
    return "family-centroid"


def setting_of(params: dict[str, Any]) -> tuple:
    """What must match for two runs' accuracies to be compared: data and hyperparameters."""
    return tuple((k, params.get(k)) for k in SETTING_KEYS)


@dataclass
class Outcome:
    """One finished run: its dataset, task, start category, accuracy and setting."""

    dataset: str
    task: str | None
    category: str
    accuracy: float
    setting: tuple = ()


def observed_gains(outcomes: Iterable[Outcome], task: str | None = None) -> dict[str, list[float]]:
    """Per category, the gains over the base on datasets and settings where both were run
    (same task first)."""
    outs = list(outcomes)
    same = [o for o in outs if task is not None and o.task == task]
    pool = same if any(o.category == "base" for o in same) else outs
    base_acc: dict[tuple, list[float]] = defaultdict(list)
    for o in pool:
        if o.category == "base":
            base_acc[o.dataset, o.setting].append(o.accuracy)
    gains: dict[str, list[float]] = defaultdict(list)
    for o in pool:
        ref = base_acc.get((o.dataset, o.setting))
        if o.category != "base" and ref:
            gains[o.category].append(o.accuracy - sum(ref) / len(ref))
    for d, accs in base_acc.items():
        gains["base"].extend([0.0] * len(accs))
    return dict(gains)


def score(cat: str, gains: dict[str, list[float]], probe_gain: float | None = None) -> tuple[float, float | None, int]:
    """(score, observed mean gain or None, number of observations): the weighted mean of the
    prior (``PRIOR_WEIGHT``), the observed gains (one each) and the probe gain (``PROBE_WEIGHT``)."""
    obs = gains.get(cat, [])
    prior = PRIORS.get(cat, 0.0)
    mean = sum(obs) / len(obs) if obs else None
    if cat == "base":  # the reference: every gain is measured against it
        return 0.0, mean, len(obs)
    num, den = PRIOR_WEIGHT * prior + sum(obs), PRIOR_WEIGHT + len(obs)
    if probe_gain is not None:
        num, den = num + PROBE_WEIGHT * probe_gain, den + PROBE_WEIGHT
    return num / den, mean, len(obs)


@dataclass
class Candidate:
    """A ranked starting point with the evidence for its place."""

    start: str
    category: str
    score: float = 0.0
    prior_gain: float = 0.0
    observed_gain: float | None = None
    n_runs: int = 0
    probe_gain: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rank(cands: list[Candidate], gains: dict[str, list[float]]) -> list[Candidate]:
    """Score and sort candidates (their ``probe_gain`` counts where set): best first; ties keep
    the paper's order (task, family, dataset, base)."""
    order = ["task-centroid", "family-centroid", "dataset-centroid", "model", "base"]
    for c in cands:
        c.score, c.observed_gain, c.n_runs = score(c.category, gains, c.probe_gain)
        c.prior_gain = PRIORS.get(c.category, 0.0)
    return sorted(cands, key=lambda c: (-c.score, order.index(c.category), c.evidence.get("distance", 0.0)))
