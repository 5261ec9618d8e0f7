"""Learned mixtures: LogME, the weight search, the in-memory blend and the candidate select-start offers."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_sentiment
from zoo.errors import ZooValueError
from zoo.mixture import _evidence, _fit_evidence, logme, pick_regions


def _direct_evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """The evidence of t ~ N(F m, 1/beta), m ~ N(0, 1/alpha) from its definition (no SVD)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    return (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - np.linalg.slogdet(a)[1] / 2
            - beta / 2 * np.sum((t - f @ m) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))


def _basis(f: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    z = u.T @ t
    return s ** 2, z * z, float(t @ t - (z * z).sum())


@pytest.mark.parametrize("n,d", [(30, 8), (8, 30)])  # more examples than features, and fewer
def test_evidence_matches_its_definition(n, d):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, d))
    t = (rng.random(n) > 0.5).astype(float)
    sigma, z2, rest = _basis(f, t)
    for alpha, beta in ((1.0, 1.0), (0.3, 7.0), (25.0, 0.2)):
        assert _evidence(sigma, z2, rest, n, d, alpha, beta)[0] == pytest.approx(_direct_evidence(f, t, alpha, beta),
                                                                              rel=1e-9, abs=1e-9)


def test_fitted_precisions_maximize_the_evidence():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(40, 12))
    t = (f[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(float)
    sigma, z2, rest = _basis(f, t)
    ev, alpha, beta = _fit_evidence(sigma, z2, rest, 40, 12)
    for da, db in ((1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)):
        assert _direct_evidence(f, t, alpha * da, beta * db) < ev


def test_logme_prefers_features_that_separate_the_labels():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    noise = rng.normal(size=(60, 16))
    signal = noise.copy()
    signal[:, :3] += 4.0 * (y[:, None] == np.array(["a", "b", "c"]))
    assert logme(signal, y) > logme(noise, y) + 0.1
    perm = rng.permutation(60)  # examples are exchangeable
    assert logme(signal[perm], y[perm]) == pytest.approx(logme(signal, y), rel=1e-9)
    with pytest.raises(ZooValueError, match="one label per example"):
        logme(signal, y[:-1])


def test_design_is_on_the_simplex_and_label_free():
    from zoo.mixture import design

    w = design(3, 20, seed=1)
    assert w.shape == (20, 4) and np.all(w >= 0) and np.allclose(w.sum(1), 1.0)
    assert np.array_equal(w[0], [1, 0, 0, 0])  # the base first: the search can always stay put
    assert np.allclose(w[1:5, 0], [0.75, 0.5, 0.25, 0.0]) and np.allclose(w[4, 1:], 1 / 3)
    assert [list(r) for r in w[5:7]] == [[0.5, 0.5, 0, 0], [0.0, 1.0, 0, 0]]
    assert len({tuple(np.round(r, 9)) for r in w}) == 20  # no mixture scored twice
    assert np.array_equal(design(3, 20, seed=1), w) and not np.array_equal(design(3, 20, seed=2)[-1], w[-1])
    assert np.array_equal(design(3, 3), w[:3])
    # One region: its average is the region itself, kept once.
    one = design(1, 6)
    assert len({tuple(np.round(r, 9)) for r in one}) == 6 and np.allclose(one[:5, 0], [1, 0.75, 0.5, 0.25, 0])
    with pytest.raises(ZooValueError, match="--mix-budget 1 scores no mixture besides the base"):
        design(3, 1)
    with pytest.raises(ZooValueError, match="at least one region"):
        design(0, 10)


def test_choice_per_subset_is_the_best_logme_on_its_labels_only():
    from zoo.mixture import choose

    rng = np.random.default_rng(4)
    y = np.repeat(["a", "b"], 12)
    noise = rng.normal(size=(24, 6))
    first_half = noise.copy()
    first_half[:6, 0] += 5.0  # separates a from b on the first 6 'a's only
    first_half[12:18, 0] -= 5.0
    everywhere = noise.copy()
    everywhere[:, 0] += np.where(y == "a", 5.0, -5.0)
    w = np.eye(3)
    feats = [noise, first_half, everywhere]
    subsets = [list(range(0, 6)) + list(range(12, 18)), list(range(6, 12)) + list(range(18, 24)), list(range(24))]
    got = choose(feats, y, subsets, w)
    for c, idx in zip(got, subsets):
        scores = [logme(f[idx], y[idx]) for f in feats]
        assert c.index == int(np.argmax(scores)) and c.score == scores[c.index] and c.weights == list(w[c.index])
    # On the first subset the second and third features are the same rows: a tie, the first wins;
    # on the second the second features separate nothing; on all, the third are best.
    assert [c.index for c in got] == [1, 2, 2]


def test_regions_beyond_the_cap_are_the_nearest_to_the_target():
    cents = {"far": np.array([10.0, 0]), "near": np.array([1.0, 0]), "mid": np.array([3.0, 0])}
    assert pick_regions(cents, None, "l2", 5) == ["far", "mid", "near"]
    assert pick_regions(cents, np.zeros(2), "l2", 2) == ["mid", "near"]
    assert pick_regions(cents, None, "l2", 1) == ["far"]  # no reference: by name


def test_blend_sets_the_exact_mixture(filled):
    import torch

    from zoo import catalog
    from zoo.adapter import model_params
    from zoo.checkpoint import Reader, read_header
    from zoo.finetune import ModelRef
    from zoo.mixture import Blend, load_deltas

    store = filled.store
    with store.read() as conn:
        fam = store.family(conn, None)
        rows = {d: [catalog.model(conn, f"ft-{d}{i}") for i in range(3)] for d in ("a", "b")}
        base_path = store.base_weights(conn, fam)
    deltas = load_deltas(store, fam, [("a", rows["a"]), ("b", rows["b"])])

    def tensors(row_or_path):
        path = row_or_path if not isinstance(row_or_path, dict) else store.weights(row_or_path)
        with Reader(read_header(path)) as r:
            return {c: np.asarray(r.get(c), dtype=np.float64) for c in fam.body}

    base = tensors(base_path)
    a = [tensors(r) for r in rows["a"]]
    b = [tensors(r) for r in rows["b"]]
    w = (0.2, 0.5, 0.3)
    body = ModelRef(base_path, edit=Blend(deltas, w)).body()
    got = {c: p.detach().double().numpy() for c, p in model_params(body).items()}
    checked = 0
    for c in fam.body:
        if c not in got:
            continue
        want = w[0] * base[c] + w[1] * np.mean([m[c] for m in a], 0) + w[2] * np.mean([m[c] for m in b], 0)
        assert np.allclose(got[c], want, atol=1e-6), c
        checked += 1
    assert checked >= 10
    # A classifier for trials gets the same body under its prefix; its new head is left alone.
    clf = model_params(ModelRef(base_path, edit=Blend(deltas, w)).classifier(["neg", "pos"]))
    same = [c for c in got if c in clf and c in fam.body]
    assert len(same) == checked and all(torch.equal(clf[c].detach().double(), torch.from_numpy(got[c])) for c in same)
    only_base = ModelRef(base_path, edit=Blend(deltas, (1.0, 0.0, 0.0))).body()
    for c, p in model_params(only_base).items():
        if c in base:
            assert torch.equal(p.detach().double(), torch.from_numpy(base[c].astype(np.float32)).double())


def test_select_start_learns_a_mixture_and_judges_it_by_nested_trials(filled, tmp_path):
    from zoo.select import paired_estimate

    train = write_sentiment(tmp_path / "c-train.jsonl", 40, seed=5)
    res = filled.select_start("t", dataset="c", train=train, examples=24, folds=3, max_length=16, epochs=1,
                              batch_size=8, mix_budget=6)
    by = {c["category"]: c for c in res["candidates"]}
    mix, base = by["mixture"], by["base"]
    ev = mix["evidence"]
    assert set(ev["regions"]) == {"(base)", "a", "b"} and sum(ev["regions"].values()) == pytest.approx(1.0)
    assert len(ev["fold_weights"]) == 3 and all(sum(w) == pytest.approx(1.0) for w in ev["fold_weights"])
    assert ev["evaluations"] == 6 and ev["mixed_models"] == 6 and ev["logme"] >= ev["logme_base"]
    assert ev["logme_base"] == pytest.approx(base["evidence"]["logme"], rel=1e-4)  # the design's first row: the base
    want = paired_estimate(ev["trial_fold_accuracy"], base["evidence"]["trial_fold_accuracy"])
    assert mix["expected_gain"] == pytest.approx(want.gain) and mix["gain_se"] == pytest.approx(want.se)
    # Every candidate carries its LogME beside its trials, the base's gain being zero.
    assert all("logme" in c["evidence"] for c in res["candidates"]) and base["evidence"]["logme_gain"] == 0.0
    # The start offered is a real checkpoint: the base and the regions' members, weights recorded.
    lin = filled.lineage(mix["start"])
    parents = {e["parent"]: e["weight"] for e in lin["ancestors"] if e["depth"] == 1}
    assert set(parents) == {"base"} | {f"ft-{d}{i}" for d in "ab" for i in range(3)}
    assert parents["base"] == pytest.approx(ev["regions"]["(base)"])
    assert sum(parents[f"ft-a{i}"] for i in range(3)) == pytest.approx(ev["regions"]["a"])
    assert filled.show(mix["start"])["meta"]["spec"]["mixture"]["regions"] == ["a", "b"]
    # The same examples learn the same weights: the start is reproducible.
    again = filled.select_start("t", dataset="c", train=train, examples=24, folds=3, max_length=16, epochs=1,
                                batch_size=8, mix_budget=6)
    assert next(c for c in again["candidates"] if c["category"] == "mixture")["start"] == mix["start"]


def test_mixture_off_skipped_and_bad_budgets(filled, tmp_path, monkeypatch):
    train = write_sentiment(tmp_path / "c-train.jsonl", 24, seed=5)
    kw = dict(examples=24, folds=2, max_length=16, epochs=1, batch_size=8)
    res = filled.select_start("t", dataset="c", train=train, mixture=False, **kw)
    assert "mixture" not in {c["category"] for c in res["candidates"]}
    assert not [n for n in res["notes"] if "mixture" in n]  # turned off: nothing to explain
    monkeypatch.setenv("ZOO_MIX_BYTES", "1000")
    res = filled.select_start("t", dataset="c", train=train, **kw)
    assert "mixture" not in {c["category"] for c in res["candidates"]}
    assert [n for n in res["notes"] if "mixture" in n] == [n for n in res["notes"] if "ZOO_MIX_BYTES=1000" in n] != []
    monkeypatch.delenv("ZOO_MIX_BYTES")
    before = len(filled.ls(kind="centroid"))
    with pytest.raises(ZooValueError, match="--mix-budget 1 scores no mixture"):
        filled.select_start("t", dataset="c", train=train, mix_budget=1, **kw)
    with pytest.raises(ZooValueError, match="--mix-budget"):
        filled.select_start("t", dataset="c", train=train, mix_budget=0, **kw)
    with pytest.raises(ZooValueError, match="--mix-regions"):
        filled.select_start("t", dataset="c", train=train, mix_regions=0, **kw)
    assert len(filled.ls(kind="centroid")) == before  # refused before any trial or centroid
