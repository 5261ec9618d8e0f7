"""Fine-tuning from a centroid, results written back; failures leave no model; the catalog stays free."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import write_sentiment
from zoo import Zoo
from zoo.data import read_examples
from zoo.errors import NotFound, ZooValueError


@pytest.fixture()
def data(tmp_path):
    return write_sentiment(tmp_path / "senti-train.jsonl", 48, seed=0), write_sentiment(tmp_path / "senti-dev.jsonl", 24, seed=1)


def test_finetune_from_centroid_registers_everything(filled, data):
    train, dev = data
    res = filled.finetune("centroid:task=t,exclude_dataset=b", train, dev, dataset="senti", task="u",
                          epochs=2, batch_size=8, lr=1e-3, seed=1)
    assert res["start_kind"] == "centroid" and res["steps"] == 12 and 0 <= res["eval_accuracy"] <= 1
    shown = filled.show(res["name"])
    assert shown["kind"] == "finetune" and shown["dataset"] == "senti"
    assert [p["relation"] for p in shown["parents"]] == ["finetuned_from"]
    start = shown["parents"][0]["name"]
    assert filled.show(start)["kind"] == "centroid"
    assert {p["name"] for p in filled.show(start)["parents"]} == {"ft-a0", "ft-a1", "ft-a2"}
    evs = {e["metric"]: e for e in shown["evaluations"]}
    assert evs["accuracy"]["value"] == pytest.approx(res["eval_accuracy"]) and evs["accuracy"]["n_examples"] == 24
    cols, rows = filled.sql("SELECT status, device, result_model_id, params->>'start_kind', metrics->>'steps' FROM runs")
    assert rows == [("finished", "cpu", res["id"], "centroid", "12")]
    near = filled.nearest(res["name"], k=10)
    assert start in [r["name"] for r in near["results"]]
    assert res["name"] in [r["name"] for r in filled.nearest(start, k=10)["results"]]
    # The same centroid start is reused, not materialized twice.
    again = filled.finetune("centroid:task=t,exclude_dataset=b", train, None, dataset="senti", task="u",
                            epochs=1, batch_size=8, seed=2)
    assert again["start"] == start


def test_failed_run_is_recorded_and_registers_nothing(filled, data):
    train, dev = data
    before = len(filled.ls())

    def boom(step):
        if step == 3:
            raise RuntimeError("simulated crash at step 3")

    with pytest.raises(RuntimeError, match="simulated crash"):
        filled.finetune("base", train, dev, dataset="senti", epochs=1, batch_size=8, step_hook=boom, out="doomed")
    assert len(filled.ls()) == before
    cols, rows = filled.sql("SELECT status, error, result_model_id FROM runs")
    assert rows[0][0] == "failed" and "simulated crash" in rows[0][1] and rows[0][2] is None
    assert not (filled.checkpoints_dir / "doomed").exists()


def test_sigterm_swallowed_by_a_callback_still_fails_the_run(filled, data):
    """A SIGTERM whose SystemExit is caught by code between the handler and the training loop
    (a library callback with a broad except) still ends the run as failed at the next step."""
    import os
    import signal

    train, dev = data
    before, handler = len(filled.ls()), signal.getsignal(signal.SIGTERM)
    seen = []

    def swallowing(step):
        seen.append(step)
        if step == 2:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1.0)  # the handler runs here
            except SystemExit:
                pass

    with pytest.raises(SystemExit, match="terminated by signal 15"):
        filled.finetune("base", train, dev, dataset="senti", epochs=2, batch_size=8, step_hook=swallowing, out="killed")
    assert seen == [1, 2]  # the step after the swallowed exit never ran its hook
    assert len(filled.ls()) == before and not (filled.checkpoints_dir / "killed").exists()
    cols, rows = filled.sql("SELECT status, error FROM runs")
    assert rows == [("failed", "SystemExit: terminated by signal 15")]
    assert signal.getsignal(signal.SIGTERM) is handler


def test_bitfit_changes_only_biases_and_head(filled, data):
    from safetensors.torch import load_file

    import signal

    train, dev = data
    before = signal.getsignal(signal.SIGTERM)
    res = filled.finetune("base", train, dev, dataset="senti", method="bitfit", epochs=1, batch_size=8)
    assert signal.getsignal(signal.SIGTERM) is before  # the library leaves the caller's handler in place
    out = load_file(f"{res['path']}/model.safetensors")
    start = load_file(str(filled.show("base")["uri"]) + "/model.safetensors")
    for k, v in start.items():
        if not k.endswith("bias"):
            assert (out["bert." + k] == v).all(), f"{k} changed under bitfit"
    assert any(not (out["bert." + k] == v).all() for k, v in start.items() if k.endswith("bias"))
    assert {"classifier.weight", "classifier.bias"} <= set(out)


def test_eval_head_and_probe(filled, data, tmp_path):
    train, dev = data
    res = filled.finetune("base", train, dev, dataset="senti", epochs=3, batch_size=8, lr=2e-3, seed=0)
    ev = filled.evaluate(res["name"], dev)
    assert ev["how"] == "head" and ev["value"] == pytest.approx(res["eval_accuracy"])
    forced = filled.evaluate(res["name"], dev, train=train, probe=True)
    assert forced["how"].startswith("linear probe") and forced["n_probe_train"] == len(read_examples(train))
    # ft-a0's head has labels LABEL_0/LABEL_1, not pos/neg: a linear probe on the frozen body.
    probe = filled.evaluate("ft-a0", dev, train=train)
    assert probe["metric"] == "probe_accuracy" and 0 <= probe["value"] <= 1
    evs = filled.show("ft-a0")["evaluations"]
    assert evs[0]["metric"] == "probe_accuracy" and evs[0]["dataset"] == "senti-dev"


def test_bad_finetune_input(filled, data, tmp_path):
    train, dev = data
    with pytest.raises(NotFound):
        filled.finetune("nope", train)
    with pytest.raises(ZooValueError, match="names no region|bad start spec"):
        filled.finetune("centroid:colour=red", train)
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhi,1\n")
    with pytest.raises(ZooValueError, match="missing column"):
        filled.finetune("base", bad)
    with pytest.raises(ZooValueError, match="--lr"):
        filled.finetune("base", train, lr=-1)
    with pytest.raises(ZooValueError, match="--method"):
        filled.finetune("base", train, method="lora")
    assert filled.sql("SELECT count(*) FROM runs")[1][0][0] == 0


def _background_finetune(home, ckpts, tmp_path, epochs: int) -> tuple[Zoo, subprocess.Popen]:
    """A zoo with a base, and a `zoo finetune` from it running in another process."""
    z = Zoo(home)
    z.add([ckpts["base"]], name="base")
    big = write_sentiment(tmp_path / "big.jsonl", 400, seed=3)
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli.main", "--home", str(home), "finetune", "--from", "base",
                             "--train", str(big), "--dataset", "big", "--epochs", str(epochs), "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return z, proc


def test_ls_works_while_training_runs(home, ckpts, tmp_path):
    """A fine-tune in another process never holds the catalog: `zoo ls` answers meanwhile."""
    z, proc = _background_finetune(home, ckpts, tmp_path, epochs=6)
    ok_while_running = 0
    env = {**__import__("os").environ, "ZOO_LOCK_TIMEOUT": "2"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "zoo.cli.main", "--home", str(home), *args], capture_output=True,
                              text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            runs = cli("sql", "SELECT status FROM runs", "--json")
            if runs.returncode == 0 and json.loads(runs.stdout) == [{"status": "running"}]:
                ls = cli("ls", "--json")
                if proc.poll() is None and ls.returncode == 0:
                    assert [m["name"] for m in json.loads(ls.stdout)] == ["base"]
                    ok_while_running += 1
                    break
            time.sleep(0.3)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert ok_while_running >= 1


def test_runs_listing_and_sigterm_recorded(home, ckpts, tmp_path):
    import signal

    z, proc = _background_finetune(home, ckpts, tmp_path, epochs=20)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not [r for r in z.runs() if r["status"] == "running"]:
            time.sleep(0.3)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    [run] = z.runs()
    assert run["status"] == "failed", (run, stderr[-2000:])
    assert "terminated by signal" in run["error"] and run["result"] is None, (run, stderr[-2000:])
    assert [m["name"] for m in z.ls()] == ["base"]
    ckdir = home / "checkpoints"
    leftovers = sorted(p.name for p in ckdir.iterdir()) if ckdir.exists() else []
    assert leftovers == []  # neither the output nor its temporary folder remains
