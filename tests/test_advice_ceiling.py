"""scripts/advice_ceiling.py: which judged datasets a rule with a confirmation floor can pick right."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "advice_ceiling.py"
SPEC = importlib.util.spec_from_file_location("advice_ceiling", SCRIPT)
ac = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(ac)


def _report():
    acc = {  # base, all-centroid, task-centroid test accuracies (means over seeds)
        "keep": {"base": 0.80, "all-centroid": 0.796, "task-centroid": 0.78},   # base within 0.5: nothing to confirm
        "big": {"base": 0.50, "all-centroid": 0.52, "task-centroid": 0.58},     # +8 points: within reach
        "small": {"base": 0.90, "all-centroid": 0.909, "task-centroid": 0.906},  # +0.9 (and +0.6 within tie)
        "mixed": {"base": 0.70, "all-centroid": 0.71, "task-centroid": 0.70},    # the mixture is best: +3
        "unjudged": {"base": 0.5, "all-centroid": 0.5, "task-centroid": 0.5},
    }
    picks = {"keep": "task-centroid", "big": "task-centroid", "small": "all-centroid", "mixed": "mixture",
             "unjudged": "mixture"}  # a mixture never fine-tuned: not judged
    advice = {ds: {"recommended": p} for ds, p in picks.items()}
    advice["mixed"]["mixture_accuracy"] = 0.73
    return {"start": {"tie": 0.005, "per_dataset": {"full": {ds: {"accuracy": a} for ds, a in acc.items()}}},
            "advice": {"picks": {"on": {"full": advice}}}}


def test_ceiling_counts_what_a_floor_can_reach():
    c = ac.ceiling(_report(), "on", "full", floor=0.0165)
    rows = c["rows"]
    assert set(rows) == {"keep", "big", "small", "mixed"} and c["judged"] == 4
    assert rows["keep"]["gain_to_confirm"] is None and rows["keep"]["within_reach"]
    assert rows["big"]["gain_to_confirm"] == pytest.approx(0.08) and rows["big"]["within_reach"]
    assert rows["small"]["gain_to_confirm"] == pytest.approx(0.009) and not rows["small"]["within_reach"]
    assert rows["mixed"]["best"] == "mixture" and rows["mixed"]["gain_to_confirm"] == pytest.approx(0.03)
    # Picks: keep chose a start 2 points under the base (wrong); the others were right.
    assert [rows[d]["picked_right"] for d in ("keep", "big", "small", "mixed")] == [False, True, True, True]
    assert c["within_reach"] == 3 and c["picked_right"] == 3
    assert c["right_beyond_reach"] == ["small"] and c["missed_within_reach"] == ["keep"]
    # One dataset needs nothing; the others need their gains confirmed, largest first.
    assert c["floor_for"][1] is None
    assert c["floor_for"][2] == pytest.approx(0.08) and c["floor_for"][3] == pytest.approx(0.03)
    assert c["floor_for"][4] == pytest.approx(0.009)
    # A lower floor brings the small gain within reach.
    assert ac.ceiling(_report(), "on", "full", floor=0.005)["within_reach"] == 4
    assert ac.floor_for([None, 0.02], 3) == 0.0 and ac.floor_for([], 1) == 0.0


def test_ceiling_script_reads_a_report(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report()))
    out = subprocess.run([sys.executable, str(SCRIPT), str(path), "--target", "4"], capture_output=True, text=True,
                         check=True).stdout
    assert "on-region full: picked right 3 of 4" in out and "within reach of a rule confirming gains above 1.65" in out
    assert "4 within reach needs: confirming gains under 0.90 points" in out
    got = json.loads(subprocess.run([sys.executable, str(SCRIPT), str(path), "--json"], capture_output=True, text=True,
                                    check=True).stdout)
    assert got[0]["within_reach"] == 3 and got[0]["floor"] == pytest.approx(0.01645)
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot read the report" in bad.stderr and "missing.json" in bad.stderr
    (tmp_path / "partial.json").write_text(json.dumps({"clusters": {}}))
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "partial.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "no start and advice stages" in bad.stderr
