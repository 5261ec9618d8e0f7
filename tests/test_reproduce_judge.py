"""scripts/reproduce.py's judge stage: more seeds for the starts select-start is judged against."""
from __future__ import annotations

from pathlib import Path

import pytest

REAL = [{"name": f"{d}-s{s}", "dataset": d, "task": t, "seed": s}
        for d, t in (("a1", "A"), ("a2", "A"), ("b1", "B")) for s in (0, 1)]
HP = {"epochs": 1.0, "lr": 1e-4, "batch_size": 32, "max_length": 64}


def _results() -> dict:
    """A two-seed report: on a1, select-start picked the mixture (fine-tuned at 0.70 and 0.74)."""
    row = {"task": "A", "runs": {"base": [0.60, 0.62], "all-centroid": [0.60, 0.60], "task-centroid": [0.70, 0.66],
                                 "off-centroid": [0.58, 0.60]}}
    row["accuracy"] = {k: sum(v) / 2 for k, v in row["runs"].items()}
    row["best"] = "task-centroid"
    pick_on = {"task": "A", "recommended": "mixture", "expected_gain": {}, "mixture_accuracy": 0.72,
               "mixture_weights": {"(base)": 0.25, "a2": 0.75, "b1": 0.0}}
    pick_off = {"task": "A", "recommended": "base", "expected_gain": {}}
    return {"start": {"seeds": 2, "tie": 0.005, "per_dataset": {"full": {"a1": row}}},
            "advice": {"picks": {"on": {"full": {"a1": pick_on}}, "off": {"full": {"a1": pick_off}}}}}


def _cache(rp, tmp_path: Path, accs: dict[str, float]):
    """A cache that already holds every zoo call the stage makes: nothing runs."""
    cache = rp.Cache(tmp_path / "cache.json", only_cached=True)
    for key in ("make:loo-all-a1", "make:loo-task-a1", "make:lot-all-A"):
        cache.data[key] = {"stage": "start", "seconds": 0.0, "result": {"name": key.split(":", 1)[1]}}
    names, w = rp.mixture_members(REAL, "base-model", {"(base)": 0.25, "a2": 0.75, "b1": 0.0})
    sig = rp.mixture_key(names, w)
    cache.data[f"make:judge-mix-{sig}"] = {"stage": "judge", "seconds": 1.0, "result": {"name": "mix"}}
    for start, acc in accs.items():
        start = start.replace("mixture", f"mixture-{sig}")
        for seed in (2, 3):
            cache.data[f"finetune:sp-full-a1-{start}-s{seed}"] = {
                "stage": "judge", "seconds": 2.0, "result": {"eval_accuracy": acc + (seed - 2) * 0.02}}
    return cache


def test_mixture_members_spread_each_region_over_its_fine_tunes(reproduce_script):
    rp = reproduce_script
    names, w = rp.mixture_members(REAL, "base-model", {"(base)": 0.25, "a2": 0.75, "b1": 0.0})
    assert names == ["base-model", "a2-s0", "a2-s1"]
    assert w == [0.25, 0.375, 0.375]
    names, w = rp.mixture_members(REAL, "base-model", {"(base)": 0.0, "b1": 1.0})
    assert names == ["b1-s0", "b1-s1"] and w == [0.5, 0.5]
    with pytest.raises(ValueError, match="'zz'"):
        rp.mixture_members(REAL, "base-model", {"zz": 1.0})


def test_judge_adds_seeds_and_judges_again(reproduce_script, tmp_path):
    rp = reproduce_script
    results = _results()
    cache = _cache(rp, tmp_path, {"base": 0.64, "all-centroid": 0.60, "task-centroid": 0.70, "off-centroid": 0.60,
                              "mixture": 0.60})
    out = rp.stage_judge(tmp_path, tmp_path, REAL, "base-model", cache, {"full": HP}, 4, ("on", "off"), results)
    row = results["start"]["per_dataset"]["full"]["a1"]
    assert row["runs"]["base"] == [0.60, 0.62, 0.64, 0.66]
    assert row["accuracy"]["base"] == pytest.approx(0.63)
    assert row["accuracy"]["task-centroid"] == pytest.approx((0.70 + 0.66 + 0.70 + 0.72) / 4)
    pick = results["advice"]["picks"]["on"]["full"]["a1"]
    # The report kept only the two seeds' mean (0.72): pooled with seeds 2 and 3 (0.60, 0.62).
    assert pick["mixture_accuracy"] == pytest.approx((0.72 * 2 + 0.60 + 0.62) / 4)
    assert pick["mixture_seeds"] == 4 and pick["mixture_added_runs"] == pytest.approx([0.60, 0.62])
    assert out["added"]["full"]["a1"] == {"base": [2, 3], "all-centroid": [2, 3], "task-centroid": [2, 3],
                                          "on:mixture": [2, 3], "off-centroid": [2, 3]}
    # Two seeds: the mixture (0.72) beat the task centroid (0.68). Four: 0.665 against 0.695.
    assert out["before"]["on"]["full"]["select_start_best"] == 1
    judged = rp.judge_advice(results["advice"], results["start"])
    assert judged["on"]["full"]["rows"]["a1"]["was_best"] is False
    assert judged["on"]["full"]["rows"]["a1"]["best"] == "task-centroid"
    assert judged["off"]["full"]["rows"]["a1"]["loss_to_base"] == 0.0
    assert out["seconds"] == pytest.approx(1.0 + 2.0 * 10) and out["not_done"] == {}
    assert out["seeds"] == {"full": 4} and out["regions"] == ["off", "on"]

    # Again: nothing is added twice, and the first judgement is kept.
    results["start"]["judge"] = out
    again = rp.stage_judge(tmp_path, tmp_path, REAL, "base-model", cache, {"full": HP}, 4, ("on", "off"), results)
    assert row["runs"]["base"] == [0.60, 0.62, 0.64, 0.66] and pick["mixture_seeds"] == 4
    assert again["before"] == out["before"]


def test_judge_reports_what_it_could_not_run(reproduce_script, tmp_path):
    rp = reproduce_script
    results = _results()
    cache = rp.Cache(tmp_path / "cache.json", only_cached=True)  # nothing cached: every call is missing
    out = rp.stage_judge(tmp_path, tmp_path, REAL, "base-model", cache, {"full": HP}, 4, ("on",), results)
    assert out["not_done"] == {"full": ["on:a1"]}
    assert results["start"]["per_dataset"]["full"]["a1"]["runs"]["base"] == [0.60, 0.62]


def test_judging_another_setting_keeps_the_first_judgement(reproduce_script, tmp_path):
    rp = reproduce_script
    results = _results()
    results["start"]["judge"] = {"seeds": {"full": 4}, "regions": ["on"], "added": {"full": {}},
                                 "before": {"on": {"full": {"select_start_best": 0, "select_start_judged": 1,
                                                            "select_start_worst_loss": 0.0}}}}
    fs = {"task": "A", "runs": {"base": [0.5, 0.5]}, "accuracy": {"base": 0.5}, "best": "base"}
    results["start"]["per_dataset"]["few-shot"] = {"a1": fs}
    results["advice"]["picks"]["on"]["few-shot"] = {"a1": {"task": "A", "recommended": "base", "expected_gain": {}}}
    cache = rp.Cache(tmp_path / "cache.json", only_cached=True)
    out = rp.stage_judge(tmp_path, tmp_path, REAL, "base-model", cache, {"few-shot": HP}, 3, ("on",), results)
    assert out["seeds"] == {"full": 4, "few-shot": 3}
    assert out["before"]["on"]["full"]["select_start_best"] == 0  # kept, not judged again from today's rows
    assert out["before"]["on"]["few-shot"]["select_start_best"] == 1
    assert "off" not in out["before"] or "few-shot" not in out["before"]["off"]
