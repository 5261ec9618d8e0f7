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

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from zoo.domain import check_k, parse_start
from zoo.errors import ZooValueError
from zoo.geometry import distances, region_stats
from zoo.results import Starts

if TYPE_CHECKING:  # pragma: no cover
    from zoo.store import Store

PRIORS = {"task-centroid": 0.0306, "family-centroid": 0.020, "dataset-centroid": 0.010, "base": 0.0, "model": 0.0}
PRIOR_WEIGHT = 2.0
PROBE_WEIGHT = 2.0
SETTING_KEYS = ("train", "eval", "method", "epochs", "lr", "batch_size", "max_length", "warmup_ratio", "weight_decay")


def category(start: str, start_kind: str | None) -> str:
    """The category of a start spec, as recorded in a run's params."""
    if start_kind == "base":
        return "base"
    try:
        return parse_start(start).category
    except ZooValueError:  # a spec recorded by an older zoo: count it as a plain model
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


# ---------------------------------------------------------------- candidates (pure)

@dataclass
class Point:
    """A fine-tuned model as select-start sees it: its labels and its task-vector sketch."""

    id: int
    dataset: str | None
    task: str | None
    vec: np.ndarray


def build_candidates(base_name: str, points: Sequence[Point], task: str, dataset: str | None, metric: str,
                     neighbours: int) -> list[Candidate]:
    """The starts worth ranking: the base, the task region without the target dataset, the
    family without it, and the ``neighbours`` dataset regions of the task nearest to the
    target's own region (or to the task centroid when the target has no models yet)."""
    def ids(pred: Any) -> list[int]:
        return [p.id for p in points if pred(p)]

    by_id = {p.id: p for p in points}

    def stats(mids: list[int]) -> tuple[dict[str, Any], np.ndarray]:
        st = region_stats(np.stack([by_id[i].vec for i in mids]), metric)
        return {"members": len(mids), "datasets": sorted({by_id[i].dataset for i in mids if by_id[i].dataset}),
                "radius": st.summary()["radius"]}, st.centroid

    excl = f",exclude_dataset={dataset}" if dataset else ""
    cands = [Candidate("base", "base", evidence={"model": base_name})]
    task_ids = ids(lambda p: p.task == task and p.dataset != dataset)
    ref = None
    if task_ids:
        ev, ref = stats(task_ids)
        cands.append(Candidate(f"centroid:task={task}{excl}", "task-centroid", evidence=ev))
    all_ids = ids(lambda p: p.dataset != dataset)
    if all_ids:
        cands.append(Candidate(f"centroid:all{excl}", "family-centroid", evidence=stats(all_ids)[0]))
    own = ids(lambda p: dataset is not None and p.dataset == dataset)
    if own:
        ref = stats(own)[1]
    regions = []
    for d in sorted({by_id[i].dataset for i in task_ids if by_id[i].dataset}):
        ev, c = stats(ids(lambda p, d=d: p.dataset == d))
        ev["distance"] = float(distances(c, ref[None], metric)[0]) if ref is not None else 0.0
        ev["distance_to"] = f"dataset {dataset} region" if own else f"task {task} centroid"
        regions.append(Candidate(f"centroid:dataset={d}", "dataset-centroid", evidence=ev))
    regions.sort(key=lambda c: c.evidence["distance"])
    return cands + regions[:neighbours]


def history(runs: Iterable[dict[str, Any]], start_members: dict[int, list[tuple[str | None, str | None]]]) -> list[Outcome]:
    """The store's finished runs as outcomes; a run from an explicitly named centroid counts by
    its members' datasets and tasks."""
    out = []
    for r in runs:
        p = r["params"] or {}
        cat = category(p.get("start", ""), p.get("start_kind"))
        if cat == "model" and r["id"] in start_members:
            cat = category_of_members(r["dataset"], p.get("task"), start_members[r["id"]])
        out.append(Outcome(r["dataset"], p.get("task"), cat, r["accuracy"], setting_of(p)))
    return out


# ---------------------------------------------------------------- the verb

def select_start(store: "Store", task: str, dataset: str | None = None, family: str | None = None,
                 neighbours: int = 3, train: str | os.PathLike | None = None, probe_examples: int = 256,
                 folds: int = 5, **params: Any) -> Starts:
    """Rank starting points for fine-tuning on ``dataset`` of ``task`` (see ``Zoo.select_start``)."""
    from zoo import catalog

    check_k(neighbours, "--neighbours")
    probe = _probe_input(train, probe_examples, folds, params) if train is not None else None
    with store.read() as conn:
        fam = store.family(conn, family)
        sp = fam.space()
        base = catalog.model_by_id(conn, fam.base_model_id)
        fts = catalog.list_models(conn, family=fam.name, kind="finetune")
        outcomes = history(catalog.finished_runs(conn, fam.id), catalog.run_start_members(conn, fam.id))
        ids, x = catalog.sketch_vectors(conn, sp.id, [m["id"] for m in fts])
    vec = {int(i): v.astype(np.float64) for i, v in zip(ids, x)}
    points = [Point(m["id"], m["dataset"], m["task"], vec[m["id"]]) for m in fts if m["id"] in vec]
    cands = build_candidates(base["name"], points, task, dataset, sp.metric, neighbours)
    if probe is not None:
        probe_candidates(store, cands, *probe, folds, family, store.weights(base))
    gains = observed_gains(outcomes, task)
    ranked = rank(cands, gains)
    basis = "observed runs and the paper's prior" if any(gains.get(c.category) for c in ranked if c.category != "base") \
        else "the paper's prior (no comparable runs in the store yet)"
    if probe is not None:
        basis += f", with a linear probe of each start on {len(probe[0])} examples of {Path(train).name}"
    return Starts(task, dataset, fam.name, basis, len(outcomes), [dict(c.as_dict(), rank=i + 1) for i, c in enumerate(ranked)])


def _probe_input(train: str | os.PathLike, probe_examples: int, folds: int, params: dict[str, Any]) -> tuple[Any, Any]:
    """(examples, train params) for the probe, checked before any centroid is materialized."""
    from zoo.data import read_examples
    from zoo.finetune import TrainParams, check_probe_input, sample_examples

    check_k(probe_examples, "--probe-examples")
    check_k(folds, "--folds")
    tp = TrainParams(**params)
    ex = sample_examples(read_examples(train), probe_examples, tp.seed)
    check_probe_input(ex, folds)
    return ex, tp


def probe_candidates(store: "Store", cands: list[Candidate], ex: Any, tp: Any, folds: int, family: str | None,
                     base_dir: Path) -> None:
    """Set each candidate's probe evidence and its gain over the base's probe (materializing centroids)."""
    from zoo.finetune import probe_cv
    from zoo.materialize import resolve_start

    accs = {}
    for c in store.bar(cands, "probing starts", unit="start"):
        row = resolve_start(store, c.start, family)
        res = probe_cv(store.weights(row), [base_dir], ex, tp, folds=folds)
        accs[c.start] = res["probe_accuracy"]
        c.evidence.update(probe_accuracy=res["probe_accuracy"], probe_model=row["name"], probe_examples=res["n_examples"])
    ref = next(accs[c.start] for c in cands if c.category == "base")
    for c in cands:
        c.probe_gain = accs[c.start] - ref
