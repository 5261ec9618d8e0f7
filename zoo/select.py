"""Advice on where a fine-tune should start: the base, unless evidence about the target says otherwise.

Candidates are start specs that ``zoo finetune --from`` accepts: ``base``, the task-region
centroid without the target dataset, the family centroid without it, and the centroids of
the nearest dataset regions of the task.

The paper's finding (Gueta et al. 2023: centroids of other datasets' models beat the base
in 11 of 12 datasets, +3.06 points) holds near the region it was measured on; off it,
centroid starts have lost up to 24 points to the base, and neither the prior, nor gains
observed on *other* datasets, nor a linear probe of the frozen body predicted that (the
probe scored such a start +4.7 points and the fine-tune lost 23.9). So a start other than
the base is recommended only on evidence about the target itself:

* ``trial``: with the target's examples (``--train``), short real fine-tunes of every
  candidate on the same label-stratified folds, scored on the held-out fold; the paired
  fold differences against the base give a gain and its standard error;
* ``runs``: finished fine-tunes on the target dataset already in the store, each against
  the mean of the base's runs in the same setting (data and hyperparameters, seed aside).

With the target's examples, one more candidate is learned from them (``zoo.mixture``): a
mixture of the base and the family's dataset regions, the one of a label-free design whose
features have the highest LogME evidence; its trials start from the mixture chosen without
their held-out fold. Every candidate's LogME is shown beside its trials.

Estimates from both are pooled by inverse variance. The recommendation is the candidate
whose gain clears ``Z`` standard errors above ``MIN_GAIN``; with no evidence, or none that
clears it, the base, and the answer says why. The prior and the gains seen on other
datasets are shown, never used to decide.
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
from zoo.mixture import MIX_BUDGET, MIX_REGIONS
from zoo.results import Starts

if TYPE_CHECKING:  # pragma: no cover
    from zoo.store import Store

PRIORS = {"task-centroid": 0.0306, "family-centroid": 0.020, "dataset-centroid": 0.010, "mixture": 0.0, "base": 0.0,
          "model": 0.0}
# Standard errors a gain must clear: 95 % one-sided. A start that loses costs more than one
# that is missed (centroid starts have lost 24 points off-region; the gains on-region are a few),
# and four folds of a few dozen examples make noisy estimates: at 1.0 (84 %), the real zoo's
# off-region few-shot advice followed a trial gain of +3.1 +/- 2.2 to a 1.3-point loss.
Z = 1.645
MIN_GAIN = 0.0     # ... above this gain over the base (a fraction: 0.01 = one point)
SE_FLOOR = 0.01    # folds that happen to agree still leave a point of doubt
RUN_SE = 0.03      # one fine-tune against the base: seed-to-seed spread of a few points
SETTING_KEYS = ("train", "eval", "method", "epochs", "lr", "batch_size", "max_length", "warmup_ratio", "weight_decay",
                "head_init")
SETTING_DEFAULTS = {"head_init": "random"}  # runs recorded before the key existed


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
    return tuple((k, params.get(k, SETTING_DEFAULTS.get(k))) for k in SETTING_KEYS)


@dataclass
class Outcome:
    """One finished run: its dataset, task, start category and spec, accuracy and setting."""

    dataset: str
    task: str | None
    category: str
    accuracy: float
    setting: tuple = ()
    start: str = ""


def _base_means(outs: Sequence[Outcome]) -> dict[tuple, float]:
    acc: dict[tuple, list[float]] = defaultdict(list)
    for o in outs:
        if o.category == "base":
            acc[o.dataset, o.setting].append(o.accuracy)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def observed_gains(outcomes: Iterable[Outcome], task: str | None = None,
                   exclude_dataset: str | None = None) -> dict[str, list[float]]:
    """Per category, the gains over the base on datasets and settings where both were run
    (same task first; ``exclude_dataset``'s runs left out): context, not evidence about a target."""
    outs = [o for o in outcomes if exclude_dataset is None or o.dataset != exclude_dataset]
    same = [o for o in outs if task is not None and o.task == task]
    pool = same if any(o.category == "base" for o in same) else outs
    ref = _base_means(pool)
    gains: dict[str, list[float]] = defaultdict(list)
    for o in pool:
        if o.category != "base" and (o.dataset, o.setting) in ref:
            gains[o.category].append(o.accuracy - ref[o.dataset, o.setting])
    return dict(gains)


@dataclass
class Estimate:
    """An expected accuracy gain over the base (a fraction), its standard error and support."""

    gain: float
    se: float
    n: int
    source: str

    def lower(self, z: float = Z) -> float:
        return self.gain - z * self.se

    def as_dict(self) -> dict[str, Any]:
        return {"gain": self.gain, "se": self.se, "n": self.n, "source": self.source}


def paired_estimate(cand: Sequence[float], base: Sequence[float], source: str = "trial") -> Estimate:
    """The mean of paired differences ``cand[i] - base[i]`` (the same fold, seed and head for
    both) with its standard error, floored at ``SE_FLOOR``."""
    if len(cand) != len(base) or not cand:
        raise ZooValueError(f"paired scores need equal, non-empty lists; got {len(cand)} and {len(base)}")
    d = np.asarray(cand, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("inf")
    return Estimate(float(d.mean()), max(se, SE_FLOOR), len(d), source)


def run_estimates(outcomes: Iterable[Outcome], dataset: str | None, match: dict[str, Any] | None = None
                  ) -> dict[str, Estimate]:
    """Evidence from the store's fine-tunes on the target ``dataset`` itself, per start spec and
    per category: each run against the mean of the base's runs in its setting (settings
    agreeing with ``match`` only, when given). One run counts with ``RUN_SE``; several with
    their spread."""
    if dataset is None:
        return {}
    outs = [o for o in outcomes if o.dataset == dataset
            and (match is None or all(dict(o.setting).get(k) == v for k, v in match.items()))]
    ref = _base_means(outs)
    by: dict[str, list[float]] = defaultdict(list)
    for o in outs:
        if o.category != "base" and (o.dataset, o.setting) in ref:
            g = o.accuracy - ref[o.dataset, o.setting]
            by[f"start:{o.start}"].append(g)
            by[f"category:{o.category}"].append(g)
    out = {}
    for k, g in by.items():
        se = float(np.std(g, ddof=1) / np.sqrt(len(g))) if len(g) > 1 else RUN_SE
        out[k] = Estimate(float(np.mean(g)), max(se, SE_FLOOR), len(g), "runs")
    return out


def pool(estimates: Sequence[Estimate]) -> Estimate | None:
    """Inverse-variance pooling of independent estimates (None for none)."""
    if not estimates:
        return None
    w = np.array([1.0 / e.se ** 2 for e in estimates])
    g = np.array([e.gain for e in estimates])
    return Estimate(float((w * g).sum() / w.sum()), float(1.0 / np.sqrt(w.sum())), sum(e.n for e in estimates),
                    "+".join(e.source for e in estimates))


@dataclass
class Candidate:
    """A starting point with the evidence about the target for it."""

    start: str
    category: str
    prior_gain: float = 0.0
    expected_gain: float | None = None
    gain_se: float | None = None
    lower_bound: float | None = None
    recommended: bool = False
    sources: list[dict[str, Any]] = field(default_factory=list)
    other_datasets_gain: float | None = None
    other_datasets_runs: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def best_rival(cands: Iterable[Candidate]) -> Candidate | None:
    """The evidenced candidate other than the base with the highest lower bound (then gain)."""
    rivals = [c for c in cands if c.category != "base" and c.lower_bound is not None]
    return max(rivals, key=lambda c: (c.lower_bound, c.expected_gain), default=None)


def advise(cands: list[Candidate], estimates: dict[str, list[Estimate]], z: float = Z,
           min_gain: float = MIN_GAIN) -> tuple[list[Candidate], str]:
    """Pool each candidate's estimates, recommend one, and order them: the recommendation
    first, then by lower confidence bound, then the unevidenced in the paper's order.

    The base is the reference (gain 0, no uncertainty) and the recommendation unless another
    candidate's gain clears ``z`` standard errors above ``min_gain``. Returns the ordered
    candidates and the reason for the recommendation."""
    order = ["task-centroid", "family-centroid", "dataset-centroid", "mixture", "model", "base"]
    for c in cands:
        c.prior_gain = PRIORS.get(c.category, 0.0)
        est = Estimate(0.0, 0.0, 0, "reference") if c.category == "base" else pool(estimates.get(c.start, []))
        c.sources = [e.as_dict() for e in estimates.get(c.start, [])]
        if est is not None:
            c.expected_gain, c.gain_se, c.lower_bound = est.gain, est.se, est.lower(z)
    base = next(c for c in cands if c.category == "base")
    best = best_rival(cands)
    if best is not None and best.lower_bound > min_gain:
        pick = best
        reason = (f"gains {best.expected_gain * 100:+.1f} +/- {best.gain_se * 100:.1f} points over the base on "
                  f"evidence about the target ({'+'.join(s['source'] for s in best.sources)}), more than {z:g} "
                  f"standard error(s) above {min_gain * 100:+.1f}")
    else:
        pick = base
        if best is None:
            reason = ("no evidence about the target: the base is the safe start. The paper's prior (shown) holds near "
                      "the region it was measured on and has lost up to 24 points off it; pass --train FILE to run "
                      "short trial fine-tunes of each start on the target's examples")
        else:
            reason = (f"no start clears its uncertainty: the best, {best.start}, gains {best.expected_gain * 100:+.1f} "
                      f"+/- {best.gain_se * 100:.1f} points (needs {z:g} standard error(s) above "
                      f"{min_gain * 100:+.1f}); the base is the safe start")
    pick.recommended = True
    rest = sorted((c for c in cands if c is not pick),
                  key=lambda c: (c.lower_bound is None, -(c.lower_bound if c.lower_bound is not None else c.prior_gain),
                                 order.index(c.category), c.evidence.get("distance", 0.0)))
    return [pick, *rest], reason


def resolution(ordered: Sequence[Candidate], z: float = Z, min_gain: float = MIN_GAIN,
               trial_examples: int | None = None) -> dict[str, Any] | None:
    """What the evidence could tell, when it left the base recommended: the smallest gain of
    the best-evidenced rival it could confirm and, where that rival's gain is positive but
    below it, about how many trial examples would confirm it. None when a rival was
    recommended or none has evidence.

    A trial gain's standard error shrinks about as one over the square root of the examples
    scored, down to ``SE_FLOOR``; a gain under ``min_gain + z * SE_FLOOR`` is never confirmed,
    however many examples the trials get."""
    best = best_rival(ordered) if ordered and ordered[0].category == "base" else None
    if best is None:
        return None
    out: dict[str, Any] = {"start": best.start, "gain": best.expected_gain, "se": best.gain_se,
                           "confirmable_gain": min_gain + z * best.gain_se, "floor_gain": min_gain + z * SE_FLOOR,
                           "trial_examples": trial_examples, "examples_needed": None}
    margin = best.expected_gain - min_gain
    if margin <= 0:
        out["why"] = "no gain"
    elif margin <= z * SE_FLOOR:
        out["why"] = "below the floor"
    elif trial_examples and any(s["source"] == "trial" for s in best.sources):
        out["why"] = "more examples"
        out["examples_needed"] = int(np.ceil(trial_examples * (z * best.gain_se / margin) ** 2))
    else:
        out["why"] = "more evidence"
    return out


def resolution_note(res: dict[str, Any], file_examples: int | None = None) -> str:
    """RES (from ``resolution``) in a sentence for the answer's notes."""
    head = (f"the evidence confirms gains above {res['confirmable_gain'] * 100:+.1f} points; the best, "
            f"{res['start']}, shows {res['gain'] * 100:+.1f} +/- {res['se'] * 100:.1f}")
    if res["why"] == "no gain":
        return head + ": no gain to confirm"
    if res["why"] == "below the floor":
        return (head + f", under the {res['floor_gain'] * 100:.1f}-point floor that even many examples leave "
                "(folds that agree still leave a point of doubt): no trial on more examples would confirm it")
    if res["why"] == "more examples":
        need = res["examples_needed"]
        where = (f"--examples {need} (the file has {file_examples})" if file_examples and need <= file_examples
                 else f"more labelled examples than {file_examples}" if file_examples else f"{need} examples")
        return (head + f": confirming it would take trials on about {need} examples, {where}; "
                "its standard error shrinks about as one over the square root of the examples")
    return head + ": more runs on the target would narrow it"


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
        out.append(Outcome(r["dataset"], p.get("task"), cat, r["accuracy"], setting_of(p), p.get("start", "")))
    return out


# ---------------------------------------------------------------- the verb

def select_start(store: "Store", task: str, dataset: str | None = None, family: str | None = None,
                 neighbours: int = 3, train: str | os.PathLike | None = None, examples: int = 128,
                 folds: int = 4, min_gain: float = MIN_GAIN, mixture: bool = True, mix_budget: int = MIX_BUDGET,
                 mix_regions: int = MIX_REGIONS, **params: Any) -> Starts:
    """Recommend a starting point for fine-tuning on ``dataset`` of ``task`` (see ``Zoo.select_start``)."""
    from zoo import catalog

    check_k(neighbours, "--neighbours", least=0)  # 0: no dataset regions, only the task and family centroids
    check_k(mix_budget, "--mix-budget")
    check_k(mix_regions, "--mix-regions")
    if not (isinstance(min_gain, (int, float)) and np.isfinite(min_gain) and -1.0 <= min_gain <= 1.0):
        shown = f"{min_gain * 100:g}" if isinstance(min_gain, (int, float)) else repr(min_gain)
        raise ZooValueError(f"--min-gain {shown} must be accuracy points between -100 and 100 "
                            "(the library takes a fraction: 0.01 is one point)")
    trial, total = _trial_input(train, examples, folds, params) if train is not None else (None, 0)
    with store.read() as conn:
        fam = store.family(conn, family)
        sp = fam.space()
        base = catalog.model_by_id(conn, fam.base_model_id)
        fts = catalog.list_models(conn, family=fam.name, kind="trained")
        outcomes = history(catalog.finished_runs(conn, fam.id), catalog.run_start_members(conn, fam.id))
        ids, x = catalog.sketch_vectors(conn, sp.id, [m["id"] for m in fts])
    vec = {int(i): v.astype(np.float64) for i, v in zip(ids, x)}
    points = [Point(m["id"], m["dataset"], m["task"], vec[m["id"]]) for m in fts if m["id"] in vec]
    cands = build_candidates(base["name"], points, task, dataset, sp.metric, neighbours)
    others = {p.dataset for p in points if p.dataset is not None and p.dataset != dataset}
    if trial is not None and mixture and others:
        from zoo.mixture import check_budget

        check_budget(mix_budget)  # before any trial runs
    # The runs that speak for this fine-tune: its data and hyperparameters (any eval file).
    match = ({k: v for k, v in setting_of(dict(trial[1].as_dict(), train=str(Path(train).resolve()))) if k != "eval"}
             if trial is not None else None)
    by_run = run_estimates(outcomes, dataset, match)
    estimates: dict[str, list[Estimate]] = {}
    for c in cands:
        e = by_run.get(f"start:{c.start}") or (by_run.get(f"category:{c.category}")
                                                if c.category in ("task-centroid", "family-centroid") else None)
        estimates[c.start] = [e] if e is not None else []
    notes: list[str] = []
    if trial is not None and total > len(trial[0]):
        # On the real zoo, few-shot gains of +7 points became -1 with the whole training set
        # (docs/REPRODUCTION-NOTES.md): the trials speak for the regime they ran in.
        notes.append(f"the trials used {len(trial[0])} of the {total} examples in {Path(train).name}: a start's gain "
                     f"on few examples can shrink, or turn into a loss, with the whole set; --examples {total} runs "
                     f"the trials on all of them (about {total / len(trial[0]):.0f}x their time)")
    if trial is not None:
        for start, est in trial_candidates(store, cands, *trial, folds, family, store.weights(base)).items():
            estimates[start].append(est)
        if mixture:
            got = mixture_candidate(store, fam, base, points, task, dataset, sp.metric, cands[0], *trial, folds,
                                    mix_budget, mix_regions, train)
            if isinstance(got, str):
                notes.append(got)
            else:
                cands.append(got[0])
                estimates[got[0].start] = [got[1]]
    other = observed_gains(outcomes, task, exclude_dataset=dataset)
    for c in cands:
        g = other.get(c.category, [])
        c.other_datasets_gain, c.other_datasets_runs = (float(np.mean(g)) if g else None), len(g)
    ordered, reason = advise(cands, estimates, Z, min_gain)
    res = resolution(ordered, Z, min_gain, len(trial[0]) if trial is not None else None)
    if res is not None:
        notes.append(resolution_note(res, total if trial is not None else None))
    sources = sorted({s["source"] for c in ordered for s in c.sources})
    basis = ("evidence about the target: " + ", ".join(
        {"trial": f"trial fine-tunes on {len(trial[0]) if trial else 0} examples of "
                  f"{Path(train).name if train else ''} in {folds} folds",
         "runs": f"the store's fine-tunes on {dataset}"}[s] for s in sources)) if sources else "no evidence about the target"
    return Starts(task, dataset, fam.name, basis, len(outcomes), ordered[0].start, reason,
                  [dict(c.as_dict(), rank=i + 1) for i, c in enumerate(ordered)], notes, res)


def _trial_input(train: str | os.PathLike, examples: int, folds: int, params: dict[str, Any]
                 ) -> tuple[tuple[Any, Any], int]:
    """((examples, train params), examples in the file) for the trials, checked before any
    centroid is materialized."""
    from zoo.data import read_examples
    from zoo.finetune import check_folds_input, sample_examples
    from zoo.params import TrainParams

    check_k(examples, "--examples")
    check_k(folds, "--folds")
    tp = TrainParams(**params)
    ex = read_examples(train)
    ex.label_space()  # trials score classifiers: plain text is refused here, before any work
    total = len(ex)
    ex = sample_examples(ex, examples, tp.seed)
    check_folds_input(ex, folds)
    return (ex, tp), total


def trial_candidates(store: "Store", cands: list[Candidate], ex: Any, tp: Any, folds: int, family: str | None,
                     base_dir: Path) -> dict[str, Estimate]:
    """Run the trials of every candidate (materializing centroids); each one's paired gain
    over the base's trials, keyed by start spec. Fold accuracies go into its evidence."""
    from zoo.finetune import load_tokenizer, trial_cv
    from zoo.materialize import resolve_start
    from zoo.mixture import logme_of
    from zoo.sources import model_ref

    accs = {}
    for c in store.bar(cands, "trial fine-tunes", unit="start"):
        row = resolve_start(store, c.start, family)
        ref = model_ref(store, row)
        res = trial_cv(ref, [base_dir], ex, tp, folds=folds)
        accs[c.start] = res["fold_accuracy"]
        c.evidence.update(trial_accuracy=res["accuracy"], trial_fold_accuracy=res["fold_accuracy"],
                          trial_model=row["name"], trial_examples=res["n_examples"],
                          logme=logme_of(ref, load_tokenizer([ref.path, base_dir]), ex, tp))
    base = next(c for c in cands if c.category == "base")
    for c in cands:
        c.evidence["logme_gain"] = c.evidence["logme"] - base.evidence["logme"]
    return {c.start: paired_estimate(accs[c.start], accs[base.start]) for c in cands if c.category != "base"}


def mixture_candidate(store: "Store", fam: Any, base: dict[str, Any], points: Sequence[Point], task: str,
                      dataset: str | None, metric: str, base_cand: Candidate, ex: Any, tp: Any, folds: int,
                      budget: int, cap: int, train: str | os.PathLike) -> tuple[Candidate, Estimate] | str:
    """The learned mixture as a candidate with its nested trials' paired gain over the base,
    or the reason it was not learned."""
    from zoo import catalog
    from zoo.finetune import load_tokenizer, trial_cv
    from zoo.materialize import materialize
    from zoo.mixture import load_deltas, member_bytes, mix_budget_bytes, pick_regions, plan_mixture

    groups: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        if p.dataset is not None and p.dataset != dataset:
            groups[p.dataset].append(p)
    if not groups:
        return "no learned mixture: the family has no fine-tuned models of other datasets to mix"
    cents = {d: np.mean([p.vec for p in ps], axis=0) for d, ps in groups.items()}
    own = [p.vec for p in points if dataset is not None and p.dataset == dataset]
    near = [p.vec for p in points if p.task == task and p.dataset != dataset]
    ref = np.mean(own, axis=0) if own else np.mean(near, axis=0) if near else None
    picked = pick_regions(cents, ref, metric, cap)
    need, limit = member_bytes(fam, len(picked)), mix_budget_bytes()
    if need > limit:
        return (f"no learned mixture: {len(picked)} regions' task vectors need {need / 2 ** 30:.2f} GiB, more than "
                f"ZOO_MIX_BYTES={limit}; raise it or lower --mix-regions")
    with store.read() as conn:
        regions = [(d, [catalog.model_by_id(conn, p.id) for p in groups[d]]) for d in picked]
    deltas = load_deltas(store, fam, regions)
    base_dir = store.weights(base)
    plan = plan_mixture(deltas, base_dir, load_tokenizer([base_dir]), ex, tp, folds, budget)
    res = trial_cv(plan.refs, [base_dir], ex, tp, folds=folds)
    rows = [base] + [r for _, rs in regions for r in rs]
    w = [plan.weights[0]] + [plan.weights[j + 1] / len(rs) for j, (_, rs) in enumerate(regions) for _ in rs]
    spec = {"mixture": {"regions": plan.regions, "weights": plan.weights, "objective": "logme",
                        "learned_on": str(Path(train).resolve()), "examples": len(ex), "seed": tp.seed}}
    made = materialize(store, fam, rows, w, None, "centroid", "averaged_from", spec, prefix="mixture")
    ev = {"regions": dict(zip(["(base)", *plan.regions], plan.weights)), "mixed_models": len(rows) - 1,
          "fold_weights": plan.fold_weights, "logme": plan.score, "logme_base": plan.base_score,
          "logme_gain": plan.score - base_cand.evidence["logme"], "evaluations": plan.evaluations,
          "trial_accuracy": res["accuracy"], "trial_fold_accuracy": res["fold_accuracy"], "trial_model": made.name,
          "trial_examples": res["n_examples"],
          "trial_note": "each fold's trial starts from weights learned without that fold"}
    est = paired_estimate(res["fold_accuracy"], base_cand.evidence["trial_fold_accuracy"])
    return Candidate(made.name, "mixture", evidence=ev), est
