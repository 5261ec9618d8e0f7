"""Starting-point selection: the paper's prior without history, learned gains with it."""
from __future__ import annotations

import pytest

from zoo import catalog
from conftest import write_sentiment
from zoo.select import Outcome, category, category_of_members, observed_gains, score, PRIORS, PRIOR_WEIGHT, PROBE_WEIGHT


def test_category_of_start_specs():
    assert category("base", None) == "base"
    assert category("centroid:task=t,exclude_dataset=a", "centroid") == "task-centroid"
    assert category("centroid:all,exclude_dataset=a", "centroid") == "family-centroid"
    assert category("centroid:dataset=b", "centroid") == "dataset-centroid"
    assert category("my-model", "finetune") == "model"
    assert category("minilm", "base") == "base"


def test_category_of_explicit_centroids():
    same_task = [("a", "t"), ("b", "t"), ("b", "t")]
    assert category_of_members("c", "t", same_task) == "task-centroid"
    assert category_of_members("c", "t", [("b", "t"), ("b", "t")]) == "dataset-centroid"
    assert category_of_members("c", "t", same_task + [("x", "u")]) == "family-centroid"
    # A centroid that contains the target dataset, or members without a dataset, is just a model.
    assert category_of_members("a", "t", same_task) == "model"
    assert category_of_members("c", "t", [("a", "t"), (None, None)]) == "model"
    assert category_of_members("c", "t", []) == "model"
    # No task on the run: nothing ties the members to it.
    assert category_of_members("c", None, same_task) == "family-centroid"


def test_gains_are_relative_to_base_on_same_dataset():
    outs = [Outcome("x", "t", "base", 0.70), Outcome("x", "t", "base", 0.72), Outcome("x", "t", "task-centroid", 0.75),
            Outcome("y", "t", "base", 0.50), Outcome("y", "t", "task-centroid", 0.49), Outcome("z", "t", "task-centroid", 0.9)]
    g = observed_gains(outs, "t")
    assert g["task-centroid"] == pytest.approx([0.04, -0.01])  # z has no base run: not comparable
    s, mean, n = score("task-centroid", g)
    assert n == 2 and mean == pytest.approx(0.015)
    assert s == pytest.approx((2 * 0.015 + PRIOR_WEIGHT * PRIORS["task-centroid"]) / (2 + PRIOR_WEIGHT))


def test_gains_compare_runs_of_the_same_setting_only():
    few, full = (("train", "few.jsonl"), ("epochs", 5)), (("train", "all.jsonl"), ("epochs", 1))
    outs = [Outcome("x", "t", "base", 0.40, few), Outcome("x", "t", "base", 0.50, full),
            Outcome("x", "t", "task-centroid", 0.45, few), Outcome("x", "t", "task-centroid", 0.52, full),
            Outcome("x", "t", "family-centroid", 0.60, (("train", "other.jsonl"),))]  # no base run like it
    g = observed_gains(outs, "t")
    assert g["task-centroid"] == pytest.approx([0.05, 0.02]) and "family-centroid" not in g


def test_setting_of_ignores_seed_and_start():
    from zoo.select import setting_of

    a = {"train": "/d/x.jsonl", "epochs": 3.0, "lr": 1e-4, "seed": 0, "start": "base", "start_kind": "base"}
    b = dict(a, seed=7, start="centroid:task=t", start_kind="centroid")
    assert setting_of(a) == setting_of(b) and setting_of(a) != setting_of(dict(a, epochs=1.0))


def test_no_history_follows_paper(filled):
    res = filled.select_start("t", dataset="a")
    starts = [c["start"] for c in res["candidates"]]
    assert starts[0] == "centroid:task=t,exclude_dataset=a"
    assert starts[-1] == "base" and "centroid:dataset=b" in starts
    assert "prior" in res["basis"]
    top = res["candidates"][0]["evidence"]
    assert top["members"] == 3 and top["datasets"] == ["b"]


def _fake_run(conn, model_id, dataset, start, start_kind, acc):
    rid = catalog.insert_run(conn, start_model_id=model_id, result_model_id=model_id, dataset=dataset, method="full",
                             params={"start": start, "start_kind": start_kind, "task": "t"}, device="cpu",
                             status="finished")
    catalog.insert_evaluation(conn, model_id=model_id, dataset=dataset, split="eval", metric="accuracy", value=acc,
                              run_id=rid)


def test_history_can_overturn_the_prior(filled):
    ids = {m["name"]: m["id"] for m in filled.ls()}
    with filled.store.write() as conn:
        for ds, mid in (("a", ids["ft-a0"]), ("b", ids["ft-b0"])):
            _fake_run(conn, mid, ds, "base", "base", 0.80)
            _fake_run(conn, mid, ds, "centroid:task=t,exclude_dataset=" + ds, "centroid", 0.70)
            _fake_run(conn, mid, ds, "centroid:task=t,exclude_dataset=" + ds, "centroid", 0.71)
    res = filled.select_start("t", dataset="c")
    by = {c["category"]: c for c in res["candidates"]}
    assert by["task-centroid"]["n_runs"] == 4 and by["task-centroid"]["observed_gain"] == pytest.approx(-0.095)
    assert by["task-centroid"]["score"] < 0 and res["candidates"][0]["category"] != "task-centroid"
    assert "observed" in res["basis"]


def test_select_start_bad_input(filled):
    from zoo.errors import ZooValueError

    with pytest.raises(ZooValueError):
        filled.select_start("t", neighbours=0)


def test_history_counts_explicitly_named_centroids(filled):
    """A run from `zoo centroid ft-b0 ft-b1 ft-b2` (by name) counts as a start from b's region."""
    c = filled.centroid(names=["ft-b0", "ft-b1", "ft-b2"], out="b-mean")
    ids = {m["name"]: m["id"] for m in filled.ls()}
    with filled.store.write() as conn:
        _fake_run(conn, ids["ft-a0"], "a", "base", "base", 0.60)
        rid = catalog.insert_run(conn, start_model_id=c["id"], result_model_id=ids["ft-a1"], dataset="a",
                                 method="full", params={"start": "b-mean", "start_kind": "centroid", "task": "t"},
                                 device="cpu", status="finished")
        catalog.insert_evaluation(conn, model_id=ids["ft-a1"], dataset="a", split="eval", metric="accuracy",
                                  value=0.75, run_id=rid)
    by = {c["category"]: c for c in filled.select_start("t", dataset="c")["candidates"]}
    assert by["dataset-centroid"]["n_runs"] == 1 and by["dataset-centroid"]["observed_gain"] == pytest.approx(0.15)


def test_probe_gain_is_weighted_like_pseudo_runs():
    p = PRIORS["task-centroid"]
    assert score("task-centroid", {}, 0.10)[0] == pytest.approx((PRIOR_WEIGHT * p + PROBE_WEIGHT * 0.10) / (PRIOR_WEIGHT + PROBE_WEIGHT))
    g = {"task-centroid": [0.02, 0.04]}
    assert score("task-centroid", g, -0.05)[0] == pytest.approx(
        (PRIOR_WEIGHT * p + 0.06 - PROBE_WEIGHT * 0.05) / (PRIOR_WEIGHT + 2 + PROBE_WEIGHT))
    assert score("base", {"base": [0.0]}, 0.0)[0] == 0.0  # the reference scores zero whatever the evidence


def test_folds_and_sample_are_stratified_and_deterministic():
    from zoo.data import Examples
    from zoo.finetune import sample_examples, stratified_folds

    labels = ["a"] * 13 + ["b"] * 7 + ["c"] * 2
    fold = stratified_folds(labels, 5, seed=3)
    assert fold == stratified_folds(labels, 5, seed=3) and fold != stratified_folds(labels, 5, seed=4)
    for lab, n in (("a", 13), ("b", 7)):
        per = [sum(1 for l, f in zip(labels, fold) if l == lab and f == k) for k in range(5)]
        assert sum(per) == n and max(per) - min(per) <= 1
    assert sorted(f for l, f in zip(labels, fold) if l == "c") == sorted(set(f for l, f in zip(labels, fold) if l == "c"))
    ex = Examples("x", [str(i) for i in range(len(labels))], None, labels)
    sub = sample_examples(ex, 11, seed=0)
    # Proportional to the labels' shares (13/22, 7/22, 2/22 of 11), up to rounding.
    assert len(sub) == 11 and set(sub.text) <= set(ex.text) and len(set(sub.text)) == 11
    assert sub.labels.count("a") in (6, 7) and sub.labels.count("b") in (3, 4) and sub.labels.count("c") == 1
    assert sample_examples(ex, 100, seed=0) is ex


def test_select_start_with_train_probes_every_candidate(filled, tmp_path):
    from zoo.finetune import TrainParams, probe_cv

    train = write_sentiment(tmp_path / "c-train.jsonl", 40, seed=5)
    res = filled.select_start("t", dataset="c", train=train, probe_examples=30, folds=3, max_length=16)
    assert "linear probe" in res["basis"] and "30 examples" in res["basis"]
    cands = {c["start"]: c for c in res["candidates"]}
    base = cands["base"]
    assert base["probe_gain"] == 0.0 and base["score"] == 0.0
    for c in res["candidates"]:
        ev = c["evidence"]
        assert ev["probe_examples"] == 30 and 0.0 <= ev["probe_accuracy"] <= 1.0
        assert c["probe_gain"] == pytest.approx(ev["probe_accuracy"] - base["evidence"]["probe_accuracy"])
        if c["category"] != "base":
            assert c["score"] == pytest.approx(score(c["category"], {}, c["probe_gain"])[0])
    # The recorded evidence is the probe of the materialized start, reproducible on its own.
    task = cands["centroid:task=t,exclude_dataset=c"]
    from zoo.data import read_examples
    from zoo.finetune import sample_examples

    ex = sample_examples(read_examples(train), 30, 0)
    again = probe_cv(filled.show(task["evidence"]["probe_model"])["uri"], [filled.show("base")["uri"]], ex,
                     TrainParams(max_length=16), folds=3)
    assert again["probe_accuracy"] == task["evidence"]["probe_accuracy"]
    assert [c["score"] for c in res["candidates"]] == sorted((c["score"] for c in res["candidates"]), reverse=True)


def test_probe_can_overturn_the_prior(filled, tmp_path, monkeypatch):
    """A start whose features separate the target's labels far better than the base's outranks
    the paper's default; one that separates them worse falls below the base."""
    import zoo.finetune as ft

    train = write_sentiment(tmp_path / "c-train.jsonl", 40, seed=5)
    b_region = str(filled.centroid(dataset="b")["path"])  # select-start finds this one again (same members)
    base = str(filled.show("base")["uri"])
    before = [c["start"] for c in filled.select_start("t", dataset="c")["candidates"]]
    assert before[0] == "centroid:task=t,exclude_dataset=c"

    def fake_probe(model_dir, tokenizer_dirs, ex, params, folds=5):
        acc = {b_region: 0.95, base: 0.60}.get(str(model_dir), 0.50)
        return {"probe_accuracy": acc, "n_examples": len(ex), "folds": folds}

    monkeypatch.setattr(ft, "probe_cv", fake_probe)
    res = filled.select_start("t", dataset="c", train=train, folds=3)
    order = [c["start"] for c in res["candidates"]]
    by = {c["start"]: c for c in res["candidates"]}
    assert order[0] == "centroid:dataset=b" and by["centroid:dataset=b"]["probe_gain"] == pytest.approx(0.35)
    task = by["centroid:task=t,exclude_dataset=c"]
    assert task["probe_gain"] == pytest.approx(-0.10) and task["score"] < 0
    assert order.index("base") < order.index("centroid:task=t,exclude_dataset=c")


def test_select_start_train_bad_input(filled, tmp_path):
    import json

    from zoo.errors import ZooValueError

    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"w{i}", "label": "x"}) + "\n" for i in range(20)))
    with pytest.raises(ZooValueError, match="one.jsonl.*2\\+ labels"):
        filled.select_start("t", dataset="c", train=one)
    few = write_sentiment(tmp_path / "few.jsonl", 6)
    with pytest.raises(ZooValueError, match="at least 10 examples"):
        filled.select_start("t", dataset="c", train=few)
    ok = write_sentiment(tmp_path / "ok.jsonl", 20)
    with pytest.raises(ZooValueError, match="--folds must be at least 2"):
        filled.select_start("t", dataset="c", train=ok, folds=1)
    with pytest.raises(ZooValueError, match="--probe-examples"):
        filled.select_start("t", dataset="c", train=ok, probe_examples=0)
    assert filled.ls(kind="centroid") == []  # nothing materialized for input that was refused


def test_history_pairs_runs_with_base_runs_of_their_setting(filled):
    """Few-shot runs from the base and the centroid, and a full-data run from the base, on one
    dataset: the centroid's gain is against the few-shot base (pooled with the full-data
    base it would read 0.45 - 0.60 = -0.15)."""
    ids = {m["name"]: m["id"] for m in filled.ls()}
    with filled.store.write() as conn:
        for train, base_acc, cen_acc in (("few.jsonl", 0.40, 0.45), ("full.jsonl", 0.80, None)):
            for start, kind, acc in (("base", "base", base_acc), ("centroid:task=t,exclude_dataset=a", "centroid", cen_acc)):
                if acc is None:
                    continue
                rid = catalog.insert_run(conn, start_model_id=ids["ft-a0"], result_model_id=ids["ft-a0"], dataset="a",
                                         method="full", params={"start": start, "start_kind": kind, "task": "t",
                                                                "train": train, "epochs": 1.0}, device="cpu",
                                         status="finished")
                catalog.insert_evaluation(conn, model_id=ids["ft-a0"], dataset="a", split="eval", metric="accuracy",
                                          value=acc, run_id=rid)
    by = {c["category"]: c for c in filled.select_start("t", dataset="c")["candidates"]}
    assert by["task-centroid"]["n_runs"] == 1 and by["task-centroid"]["observed_gain"] == pytest.approx(0.05)


def test_candidates_are_built_from_points_without_a_zoo():
    import numpy as np

    from zoo.select import Point, build_candidates

    e = np.eye(4)
    pts = [Point(1, "a", "t", e[0]), Point(2, "a", "t", e[0] + 0.1 * e[1]), Point(3, "b", "t", e[1]),
           Point(4, "c", "t", e[2]), Point(5, "x", "u", e[3]), Point(6, "tgt", "t", e[0] + 0.2 * e[2])]
    cands = build_candidates("minilm", pts, "t", "tgt", "cosine", neighbours=2)
    assert [c.start for c in cands] == ["base", "centroid:task=t,exclude_dataset=tgt", "centroid:all,exclude_dataset=tgt",
                                        "centroid:dataset=a", "centroid:dataset=c"]
    assert cands[0].evidence == {"model": "minilm"}
    task, fam = cands[1].evidence, cands[2].evidence
    assert task["members"] == 4 and task["datasets"] == ["a", "b", "c"] and fam["members"] == 5
    # Dataset regions are ordered by cosine distance of their centroid to the target's own region (model 6).
    own = e[0] + 0.2 * e[2]
    want_a = 1 - (e[0] + 0.05 * e[1]) @ own / (np.linalg.norm(e[0] + 0.05 * e[1]) * np.linalg.norm(own))
    assert cands[3].evidence["distance"] == pytest.approx(want_a) and cands[3].evidence["distance_to"] == "dataset tgt region"
    assert cands[3].evidence["distance"] < cands[4].evidence["distance"]
    # Without the target's models the reference is the task centroid; with no dataset, nothing is left out.
    nodata = build_candidates("minilm", pts[:5], "t", None, "cosine", neighbours=3)
    assert nodata[1].start == "centroid:task=t" and nodata[2].start == "centroid:all"
    assert all(c.evidence.get("distance_to", "task t centroid") == "task t centroid" for c in nodata)
    assert [c.start for c in build_candidates("minilm", [], "t", "tgt", "cosine", 3)] == ["base"]


def test_history_counts_runs_by_what_they_started_from():
    from zoo.select import history

    runs = [{"id": 1, "dataset": "d", "accuracy": 0.5, "params": {"start": "base", "start_kind": "base", "task": "t"}},
            {"id": 2, "dataset": "d", "accuracy": 0.6, "params": {"start": "centroid:all,exclude_dataset=d",
                                                                  "start_kind": "centroid", "task": "t"}},
            {"id": 3, "dataset": "d", "accuracy": 0.7, "params": {"start": "my-cen", "start_kind": "centroid", "task": "t"}},
            {"id": 4, "dataset": "d", "accuracy": 0.4, "params": {"start": "centroid:colour=red", "task": "t"}},
            {"id": 5, "dataset": "d", "accuracy": 0.3, "params": None}]
    outs = history(runs, {3: [("a", "t"), ("b", "t")]})
    assert [o.category for o in outs] == ["base", "family-centroid", "task-centroid", "model", "model"]
    assert [o.accuracy for o in outs] == [0.5, 0.6, 0.7, 0.4, 0.3] and outs[0].task == "t" and outs[4].task is None


def test_one_parser_for_start_specs():
    from zoo.domain import parse_start
    from zoo.errors import ZooValueError

    assert parse_start("base").kind == "base" and parse_start("my-model").kind == "model"
    s = parse_start("centroid:task=t, exclude-dataset=d")
    assert s.kind == "centroid" and s.region == {"task": "t", "exclude_dataset": "d"} and s.category == "task-centroid"
    assert parse_start("centroid:all").region == {"all_models": True} and parse_start("centroid:all").category == "family-centroid"
    assert parse_start("centroid:dataset=b").category == "dataset-centroid"
    for bad, msg in (("centroid:colour=red", "bad start spec"), ("centroid:", "names no region"),
                     ("centroid:exclude_dataset=d", "names no region"), ("centroid:task=", "bad start spec")):
        with pytest.raises(ZooValueError, match=msg):
            parse_start(bad)
