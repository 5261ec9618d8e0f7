"""Starting-point selection: the paper's prior without history, learned gains with it."""
from __future__ import annotations

import pytest

from zoo import catalog
from zoo.select import Outcome, category, category_of_members, observed_gains, score, PRIORS, PRIOR_WEIGHT


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
    with filled._write() as conn:
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
    with filled._write() as conn:
        _fake_run(conn, ids["ft-a0"], "a", "base", "base", 0.60)
        rid = catalog.insert_run(conn, start_model_id=c["id"], result_model_id=ids["ft-a1"], dataset="a",
                                 method="full", params={"start": "b-mean", "start_kind": "centroid", "task": "t"},
                                 device="cpu", status="finished")
        catalog.insert_evaluation(conn, model_id=ids["ft-a1"], dataset="a", split="eval", metric="accuracy",
                                  value=0.75, run_id=rid)
    by = {c["category"]: c for c in filled.select_start("t", dataset="c")["candidates"]}
    assert by["dataset-centroid"]["n_runs"] == 1 and by["dataset-centroid"]["observed_gain"] == pytest.approx(0.15)
