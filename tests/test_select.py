"""Starting-point advice: the base without evidence about the target, another start only on evidence."""
from __future__ import annotations

from pathlib import Path

import pytest

from zoo import catalog
from conftest import write_sentiment
from zoo.select import (PRIORS, RUN_SE, SE_FLOOR, Z, Candidate, Estimate, Outcome, advise, category,
                         category_of_members, observed_gains, paired_estimate, pool, run_estimates)


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
    assert observed_gains(outs, "t", exclude_dataset="x")["task-centroid"] == pytest.approx([-0.01])


def test_gains_compare_runs_of_the_same_setting_only():
    few, full = (("train", "few.jsonl"), ("epochs", 5)), (("train", "all.jsonl"), ("epochs", 1))
    outs = [Outcome("x", "t", "base", 0.40, few), Outcome("x", "t", "base", 0.50, full),
            Outcome("x", "t", "task-centroid", 0.45, few), Outcome("x", "t", "task-centroid", 0.52, full),
            Outcome("x", "t", "family-centroid", 0.60, (("train", "other.jsonl"),))]  # no base run like it
    g = observed_gains(outs, "t")
    assert g["task-centroid"] == pytest.approx([0.05, 0.02]) and "family-centroid" not in g


def test_paired_estimate_and_pooling_are_exact():
    e = paired_estimate([0.8, 0.7, 0.9], [0.6, 0.7, 0.7])
    assert e.gain == pytest.approx(0.2 / 1.5) and e.n == 3 and e.source == "trial"
    assert e.se == pytest.approx(0.11547005 / 3 ** 0.5)
    assert paired_estimate([0.7, 0.7], [0.6, 0.6]).se == SE_FLOOR  # folds that agree still leave doubt
    assert paired_estimate([0.7], [0.6]).se == float("inf")  # one fold says nothing of its spread
    p = pool([Estimate(0.1, 0.1, 2, "runs"), Estimate(0.2, 0.05, 4, "trial")])
    assert p.gain == pytest.approx(0.18) and p.se == pytest.approx(1 / 500 ** 0.5) and p.n == 6 and p.source == "runs+trial"
    assert pool([]) is None
    from zoo.errors import ZooValueError

    with pytest.raises(ZooValueError, match="equal, non-empty"):
        paired_estimate([0.1, 0.2], [0.1])


def test_runs_on_the_target_pair_with_its_base_runs():
    few = (("train", "few.jsonl"),)
    outs = [Outcome("c", "t", "base", 0.60, few, "base"), Outcome("c", "t", "base", 0.62, few, "base"),
            Outcome("c", "t", "task-centroid", 0.75, few, "centroid:task=t,exclude_dataset=c"),
            Outcome("c", "t", "task-centroid", 0.77, few, "centroid:task=t,exclude_dataset=c"),
            Outcome("c", "t", "dataset-centroid", 0.50, few, "centroid:dataset=b"),
            Outcome("a", "t", "base", 0.10, few, "base"), Outcome("a", "t", "dataset-centroid", 0.90, few, "centroid:dataset=b")]
    est = run_estimates(outs, "c")
    task = est["start:centroid:task=t,exclude_dataset=c"]
    assert task.gain == pytest.approx(0.15) and task.se == pytest.approx(SE_FLOOR) and task.n == 2 and task.source == "runs"
    assert est["category:task-centroid"].gain == pytest.approx(0.15)
    b = est["start:centroid:dataset=b"]  # dataset a's +0.80 is not evidence about c
    assert b.gain == pytest.approx(-0.11) and b.se == RUN_SE and b.n == 1
    assert run_estimates(outs, "c", {"train": "other.jsonl"}) == {} and run_estimates(outs, None) == {}


def _cands():
    return [Candidate("base", "base"), Candidate("centroid:task=t", "task-centroid"),
            Candidate("centroid:dataset=b", "dataset-centroid", evidence={"distance": 0.1}),
            Candidate("centroid:dataset=d", "dataset-centroid", evidence={"distance": 0.2})]


def test_advice_without_evidence_is_the_base():
    order, why = advise(_cands(), {})
    assert [c.start for c in order][0] == "base" and order[0].recommended and not any(c.recommended for c in order[1:])
    assert "no evidence about the target" in why and "--train" in why
    assert order[1].start == "centroid:task=t" and order[1].prior_gain == PRIORS["task-centroid"]
    assert all(c.expected_gain is None for c in order[1:]) and order[0].expected_gain == 0.0


def test_advice_needs_a_gain_clear_of_its_uncertainty():
    est = {"centroid:task=t": [Estimate(0.03, 0.02, 4, "trial")], "centroid:dataset=b": [Estimate(0.02, 0.025, 4, "trial")]}
    order, why = advise(_cands(), est, z=1.0)
    assert order[0].start == "centroid:task=t" and order[0].lower_bound == pytest.approx(0.01)
    assert "+3.0 +/- 2.0 points" in why and "more than 1 standard error(s)" in why
    # The default bar is 95 % one-sided: +3.0 +/- 2.0 does not clear it; a larger doubt or a
    # higher bar leaves the base too.
    assert Z == 1.645
    for kw in ({}, {"z": 2.0}, {"z": 1.0, "min_gain": 0.02}):
        order, why = advise(_cands(), est, **kw)
        assert order[0].start == "base" and "no start clears its uncertainty" in why and "centroid:task=t" in why
    assert advise(_cands(), {"centroid:task=t": [Estimate(0.04, 0.02, 4, "trial")]})[0][0].start == "centroid:task=t"
    # Ranked by lower bound after the pick; the unevidenced last.
    est = {"centroid:dataset=b": [Estimate(0.10, 0.01, 4, "trial")], "centroid:task=t": [Estimate(-0.2, 0.01, 4, "trial")]}
    order, _ = advise(_cands(), est)
    assert [c.start for c in order] == ["centroid:dataset=b", "base", "centroid:task=t", "centroid:dataset=d"]


def test_advice_pools_trials_with_runs():
    est = {"centroid:task=t": [Estimate(-0.05, 0.03, 1, "runs"), Estimate(0.04, 0.01, 4, "trial")]}
    order, _ = advise(_cands(), est)
    task = next(c for c in order if c.start == "centroid:task=t")
    assert task.expected_gain == pytest.approx((-0.05 / 0.03 ** 2 + 0.04 / 0.01 ** 2) / (1 / 0.03 ** 2 + 1 / 0.01 ** 2))
    assert [s["source"] for s in task.sources] == ["runs", "trial"]


def test_setting_of_ignores_seed_and_start():
    from zoo.select import setting_of

    a = {"train": "/d/x.jsonl", "epochs": 3.0, "lr": 1e-4, "seed": 0, "start": "base", "start_kind": "base"}
    b = dict(a, seed=7, start="centroid:task=t", start_kind="centroid")
    assert setting_of(a) == setting_of(b) and setting_of(a) != setting_of(dict(a, epochs=1.0))


def test_no_evidence_recommends_the_base(filled):
    res = filled.select_start("t", dataset="a")
    starts = [c["start"] for c in res["candidates"]]
    assert res["recommended"] == "base" and starts[0] == "base" and res["candidates"][0]["recommended"]
    assert starts[1] == "centroid:task=t,exclude_dataset=a" and "centroid:dataset=b" in starts
    assert "no evidence" in res["basis"] and "no evidence about the target" in res["reason"]
    task = res["candidates"][1]
    assert task["prior_gain"] == PRIORS["task-centroid"] and task["expected_gain"] is None
    assert task["evidence"]["members"] == 3 and task["evidence"]["datasets"] == ["b"]


def _fake_run(conn, model_id, dataset, start, start_kind, acc):
    rid = catalog.insert_run(conn, start_model_id=model_id, result_model_id=model_id, dataset=dataset, method="full",
                             params={"start": start, "start_kind": start_kind, "task": "t"}, device="cpu",
                             status="finished")
    catalog.insert_evaluation(conn, model_id=model_id, dataset=dataset, split="eval", metric="accuracy", value=acc,
                              run_id=rid)


def test_gains_on_other_datasets_do_not_decide(filled):
    """The paper's default won on datasets a and b: shown, but c is another dataset."""
    ids = {m["name"]: m["id"] for m in filled.ls()}
    with filled.store.write() as conn:
        for ds, mid in (("a", ids["ft-a0"]), ("b", ids["ft-b0"])):
            _fake_run(conn, mid, ds, "base", "base", 0.70)
            _fake_run(conn, mid, ds, "centroid:task=t,exclude_dataset=" + ds, "centroid", 0.80)
    res = filled.select_start("t", dataset="c")
    by = {c["category"]: c for c in res["candidates"]}
    assert res["recommended"] == "base" and by["task-centroid"]["expected_gain"] is None
    assert by["task-centroid"]["other_datasets_gain"] == pytest.approx(0.10) and by["task-centroid"]["other_datasets_runs"] == 2


def test_runs_on_the_target_decide(filled):
    ids = {m["name"]: m["id"] for m in filled.ls()}
    spec = "centroid:task=t,exclude_dataset=c"
    with filled.store.write() as conn:
        for acc in (0.60, 0.62):
            _fake_run(conn, ids["ft-a0"], "c", "base", "base", acc)
        for acc in (0.75, 0.77):
            _fake_run(conn, ids["ft-a0"], "c", spec, "centroid", acc)
    res = filled.select_start("t", dataset="c")
    top = res["candidates"][0]
    assert res["recommended"] == spec and top["start"] == spec and top["recommended"]
    assert top["expected_gain"] == pytest.approx(0.15) and top["gain_se"] == pytest.approx(SE_FLOOR)
    assert top["sources"] == [{"gain": pytest.approx(0.15), "se": pytest.approx(SE_FLOOR), "n": 2, "source": "runs"}]
    assert "the store's fine-tunes on c" in res["basis"] and "+15.0" in res["reason"]
    # Losses on the target put the base back on top.
    with filled.store.write() as conn:
        for _ in range(4):
            _fake_run(conn, ids["ft-a0"], "c", spec, "centroid", 0.50)
    res = filled.select_start("t", dataset="c")
    assert res["recommended"] == "base" and "no start clears" in res["reason"]


def test_select_start_bad_input(filled):
    from zoo.errors import ZooValueError

    with pytest.raises(ZooValueError, match="--neighbours must be an integer of at least 0"):
        filled.select_start("t", neighbours=-1)
    assert [c["category"] for c in filled.select_start("t", dataset="a", neighbours=0)["candidates"]] == \
        ["base", "task-centroid", "family-centroid"]
    for bad in (float("nan"), 1.5, -2.0, float("inf"), "0.1", None):
        with pytest.raises(ZooValueError, match="--min-gain"):
            filled.select_start("t", min_gain=bad)


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
    assert by["dataset-centroid"]["other_datasets_runs"] == 1
    assert by["dataset-centroid"]["other_datasets_gain"] == pytest.approx(0.15)


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


def test_select_start_with_train_runs_paired_trials(filled, tmp_path):
    from zoo.data import read_examples
    from zoo.finetune import TrainParams, sample_examples, trial_cv

    train = write_sentiment(tmp_path / "c-train.jsonl", 40, seed=5)
    res = filled.select_start("t", dataset="c", train=train, examples=24, folds=3, max_length=16, epochs=1, batch_size=8)
    assert "trial fine-tunes on 24 examples of c-train.jsonl in 3 folds" in res["basis"]
    assert [n for n in res["notes"] if "the trials used 24 of the 40 examples in c-train.jsonl" in n
            and "--examples 40" in n and "2x" in n]
    cands = {c["start"]: c for c in res["candidates"]}
    base = cands["base"]
    assert base["expected_gain"] == 0.0 and base["gain_se"] == 0.0 and len(base["evidence"]["trial_fold_accuracy"]) == 3
    for c in res["candidates"]:
        ev = c["evidence"]
        assert ev["trial_examples"] == 24 and all(0.0 <= a <= 1.0 for a in ev["trial_fold_accuracy"])
        if c["category"] != "base":
            want = paired_estimate(ev["trial_fold_accuracy"], base["evidence"]["trial_fold_accuracy"])
            assert c["expected_gain"] == pytest.approx(want.gain) and c["gain_se"] == pytest.approx(want.se)
            assert c["lower_bound"] == pytest.approx(want.gain - Z * want.se)
    # The recommendation follows the rule; the trial is reproducible on its own.
    rivals = [c for c in res["candidates"] if c["category"] != "base"]
    best = max(rivals, key=lambda c: (c["lower_bound"], c["expected_gain"]))
    assert res["recommended"] == (best["start"] if best["lower_bound"] > 0 else "base")
    # When the base was kept, the answer says what the trials could have confirmed.
    if res["recommended"] == "base":
        r = res["resolution"]
        assert r["start"] == best["start"] and r["confirmable_gain"] == pytest.approx(Z * best["gain_se"])
        assert r["trial_examples"] == 24 and [n for n in res["notes"] if "the evidence confirms gains above" in n]
    else:
        assert res["resolution"] is None
    task = cands["centroid:task=t,exclude_dataset=c"]
    ex = sample_examples(read_examples(train), 24, 0)
    again = trial_cv(filled.show(task["evidence"]["trial_model"])["uri"], [filled.show("base")["uri"]], ex,
                     TrainParams(max_length=16, epochs=1, batch_size=8), folds=3)
    assert again["fold_accuracy"] == task["evidence"]["trial_fold_accuracy"]


def test_trials_can_recommend_a_region(filled, tmp_path, monkeypatch):
    """A start whose trials beat the base's on every fold is recommended; one that loses falls below the base."""
    import zoo.finetune as ft

    train = write_sentiment(tmp_path / "c-train.jsonl", 40, seed=5)
    b_region = str(filled.centroid(dataset="b")["path"])  # select-start finds this one again (same members)
    base = str(filled.show("base")["uri"])

    def fake_trial(model, tokenizer_dirs, ex, params, folds=4):
        if isinstance(model, list):  # the learned mixture: one start per fold, the base with weights set in
            assert len(model) == folds and all(m.edit is not None and str(m.path) == base for m in model)
            model = model[0].__class__(Path("mixture"))
        assert model.adapter is None  # a zoo of full checkpoints: plain model references
        accs = {b_region: [0.9, 0.85, 0.95], base: [0.6, 0.55, 0.65]}.get(str(model.path), [0.5, 0.45, 0.55])
        return {"fold_accuracy": accs, "fold_loss": [0.5] * 3, "accuracy": sum(accs) / 3, "n_examples": len(ex),
                "folds": folds}

    monkeypatch.setattr(ft, "trial_cv", fake_trial)
    res = filled.select_start("t", dataset="c", train=train, folds=3)
    assert not [n for n in res["notes"] if "the trials used" in n]  # all 40 examples (at most 128): no caveat
    order = [c["start"] for c in res["candidates"]]
    by = {c["start"]: c for c in res["candidates"]}
    assert res["recommended"] == order[0] == "centroid:dataset=b" and by[order[0]]["expected_gain"] == pytest.approx(0.30)
    task = by["centroid:task=t,exclude_dataset=c"]
    assert task["expected_gain"] == pytest.approx(-0.10) and order.index("base") < order.index(task["start"])
    [mix] = [c for c in res["candidates"] if c["category"] == "mixture"]
    assert mix["expected_gain"] == pytest.approx(-0.10) and order.index("base") < order.index(mix["start"])


def test_select_start_train_bad_input(filled, tmp_path):
    import json

    from zoo.errors import ZooValueError

    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"w{i}", "label": "x"}) + "\n" for i in range(20)))
    with pytest.raises(ZooValueError, match="one.jsonl.*2\\+ labels"):
        filled.select_start("t", dataset="c", train=one)
    few = write_sentiment(tmp_path / "few.jsonl", 6)
    with pytest.raises(ZooValueError, match="at least 8 examples"):
        filled.select_start("t", dataset="c", train=few)
    ok = write_sentiment(tmp_path / "ok.jsonl", 20)
    with pytest.raises(ZooValueError, match="--folds must be at least 2"):
        filled.select_start("t", dataset="c", train=ok, folds=1)
    with pytest.raises(ZooValueError, match="--examples"):
        filled.select_start("t", dataset="c", train=ok, examples=0)
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
    by = {c["category"]: c for c in filled.select_start("t", dataset="a")["candidates"]}
    assert by["task-centroid"]["expected_gain"] == pytest.approx(0.05) and by["task-centroid"]["sources"][0]["n"] == 1


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


def test_a_cached_answer_decided_again_under_another_rule_is_the_answer_advise_gives(reproduce_script):
    """scripts/reproduce.py re-reads an answer cached under another decision rule through the
    same pure ``advise``: the same rule gives back the answer, a stricter one its own pick."""
    rep = reproduce_script
    est = {"centroid:task=t": [Estimate(0.03, 0.02, 4, "trial")], "centroid:dataset=b": [Estimate(-0.01, 0.01, 4, "trial")]}
    order, why = advise(_cands(), est, z=1.0)
    sel = {"task": "t", "notes": ["kept"], "recommended": order[0].start, "reason": why,
           "candidates": [dict(c.as_dict(), rank=i + 1) for i, c in enumerate(order)]}
    assert rep.redecide(sel, 1.0) == sel
    strict = rep.redecide(sel, 1.645)
    assert strict["recommended"] == "base" and strict["notes"] == ["kept"] and "needs 1.645" in strict["reason"]
    assert [(c["start"], c["rank"], c["recommended"]) for c in strict["candidates"]][:2] == [
        ("base", 1, True), ("centroid:task=t", 2, False)]
    assert strict["candidates"][1]["lower_bound"] == pytest.approx(0.03 - 1.645 * 0.02)


def test_resolution_says_what_the_evidence_could_confirm():
    from zoo.select import SE_FLOOR, resolution, resolution_note

    def decided(est):
        return advise(_cands(), est)[0]

    # A rival recommended, or no rival with evidence: nothing to say.
    assert resolution(decided({"centroid:task=t": [Estimate(0.05, 0.01, 4, "trial")]})) is None
    assert resolution(decided({})) is None
    # +2.0 +/- 2.0 from 256 trial examples: confirmable above 1.645 * 2.0 = 3.29 points; the
    # error shrinks as 1/sqrt(n), so (3.29 / 2.0)^2 = 2.706x the examples: ceil(692.7) = 693.
    res = resolution(decided({"centroid:task=t": [Estimate(0.02, 0.02, 4, "trial")]}), trial_examples=256)
    assert res["start"] == "centroid:task=t" and res["why"] == "more examples"
    assert res["confirmable_gain"] == pytest.approx(Z * 0.02) and res["floor_gain"] == pytest.approx(Z * SE_FLOOR)
    assert res["examples_needed"] == 693
    note = resolution_note(res, file_examples=2000)
    assert "above +3.3 points" in note and "+2.0 +/- 2.0" in note and "--examples 693 (the file has 2000)" in note
    assert "more labelled examples than 500" in resolution_note(res, file_examples=500)
    # min_gain raises the bar: +4.0 +/- 2.0 over a 1-point minimum needs (1.645 * 2.0 / (4.0 - 1.0))^2
    # = 1.2027x the examples: ceil(307.9) = 308.
    res = resolution(advise(_cands(), {"centroid:task=t": [Estimate(0.04, 0.02, 4, "trial")]}, min_gain=0.01)[0],
                     min_gain=0.01, trial_examples=256)
    assert res["confirmable_gain"] == pytest.approx(0.01 + Z * 0.02) and res["examples_needed"] == 308
    # A gain under z * SE_FLOOR (1.6 points) is never confirmed, whatever the examples.
    res = resolution(decided({"centroid:task=t": [Estimate(0.012, 0.012, 4, "trial")]}), trial_examples=2000)
    assert res["why"] == "below the floor" and res["examples_needed"] is None
    assert "no trial on more examples would confirm it" in resolution_note(res, 2000)
    # No gain at all; or a gain from runs only (no trial examples to scale).
    res = resolution(decided({"centroid:task=t": [Estimate(-0.01, 0.02, 4, "trial")]}), trial_examples=256)
    assert res["why"] == "no gain" and "no gain to confirm" in resolution_note(res, 256)
    res = resolution(decided({"centroid:task=t": [Estimate(0.04, 0.03, 1, "runs")]}))
    assert res["why"] == "more evidence" and res["examples_needed"] is None
    assert "more runs on the target" in resolution_note(res)
    # The best-evidenced rival is the one described: the highest lower bound.
    res = resolution(decided({"centroid:task=t": [Estimate(0.03, 0.03, 4, "trial")],
                              "centroid:dataset=b": [Estimate(0.02, 0.015, 4, "trial")]}), trial_examples=100)
    assert res["start"] == "centroid:dataset=b"
