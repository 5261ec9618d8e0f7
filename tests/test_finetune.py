"""Fine-tuning from a centroid, results written back; failures leave no model; the catalog stays free."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import HeldCatalog, write_sentiment
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
    # The region spec's members then, recorded with the run: the start can be made again.
    members = json.loads(filled.sql("SELECT params->'start_members' FROM runs")[1][0][0])
    assert members == pytest.approx({"ft-a0": 1 / 3, "ft-a1": 1 / 3, "ft-a2": 1 / 3})
    near = filled.nearest(res["name"], k=10)
    assert start in [r["name"] for r in near["results"]]
    assert res["name"] in [r["name"] for r in filled.nearest(start, k=10)["results"]]
    # The same centroid start is reused, not materialized twice.
    again = filled.finetune("centroid:task=t,exclude_dataset=b", train, None, dataset="senti", task="u",
                            epochs=1, batch_size=8, seed=2)
    assert again["start"] == start


def test_all_means_the_fine_tunes_and_stays_fixed(filled, ckpts, tmp_path):
    """`--all` / `centroid:all` average the fine-tuned models: never the base nor centroids made
    before, so the member set does not grow with each call; excluding a dataset also excludes
    fine-tunes of unknown data."""
    from conftest import make_finetune

    six = sorted(f"ft-{d}{i}" for d in "ab" for i in range(3))
    first = filled.centroid(all_models=True)
    assert sorted(first["members"]) == six and first["created"]
    again = filled.centroid(all_models=True)
    assert sorted(again["members"]) == six and again["name"] == first["name"] and not again["created"]
    assert sorted(m["name"] for m in filled.region(all_models=True)["members"]) == six
    unknown = make_finetune(ckpts["base"], tmp_path / "ft-unknown", seed=99, direction_seed=3)
    filled.add([unknown], name="ft-unknown", kind="finetune")
    assert "ft-unknown" in filled.centroid(all_models=True)["members"]
    excl = filled.centroid(all_models=True, exclude_dataset="a")["members"]
    assert sorted(excl) == ["ft-b0", "ft-b1", "ft-b2"]
    assert sorted(m["name"] for m in filled.region(task="t", exclude_dataset="b")["members"]) == ["ft-a0", "ft-a1", "ft-a2"]


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
        filled.finetune("base", train, method="dora")
    assert filled.sql("SELECT count(*) FROM runs")[1][0][0] == 0


class BackgroundFinetune:
    """A fine-tune from the base in another process that pauses at its first step until
    released: the test acts on state (the run is at a step), never on the clock."""

    def __init__(self, home, ckpts, tmp_path, env=None):
        self.zoo = Zoo(home)
        self.zoo.add([ckpts["base"]], name="base")
        big = write_sentiment(tmp_path / "big.jsonl", 64, seed=3)
        self.at, self.go = tmp_path / "at-step", tmp_path / "go"
        code = textwrap.dedent(f"""
            import time
            from pathlib import Path
            from zoo import Zoo

            def hook(step):
                if step == 1:
                    Path({str(self.at)!r}).touch()
                    while not Path({str(self.go)!r}).exists():
                        time.sleep(0.05)

            res = Zoo({str(home)!r}).finetune("base", {str(big)!r}, dataset="big", epochs=1, batch_size=8, step_hook=hook)
            print(res["name"])
        """)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})

    def wait_at_step(self) -> None:
        while not self.at.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"the fine-tune ended before its first step: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.05)

    def release(self) -> tuple[str, str]:
        self.go.touch()
        return self.proc.communicate()

    def __enter__(self) -> "BackgroundFinetune":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_ls_works_while_training_runs(home, ckpts, tmp_path):
    """A fine-tune in another process never holds the catalog: `zoo ls` and `zoo sql` answer meanwhile."""
    env = {**__import__("os").environ, "ZOO_LOCK_TIMEOUT": "2"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "zoo.cli.main", "--home", str(home), *args], capture_output=True,
                              text=True, env=env)

    with BackgroundFinetune(home, ckpts, tmp_path) as bg:
        bg.wait_at_step()
        runs, ls = cli("sql", "SELECT status FROM runs", "--json"), cli("ls", "--json")
        assert runs.returncode == 0 and json.loads(runs.stdout) == [{"status": "running"}], runs.stderr
        assert ls.returncode == 0 and [m["name"] for m in json.loads(ls.stdout)] == ["base"], ls.stderr
        assert bg.proc.poll() is None  # both answered while the run was at its first step
        out, err = bg.release()
    assert bg.proc.returncode == 0, err
    assert [m["name"] for m in Zoo(home).ls()] == ["base", out.strip()]


def test_runs_listing_and_sigterm_recorded(home, ckpts, tmp_path):
    import signal

    with BackgroundFinetune(home, ckpts, tmp_path) as bg:
        bg.wait_at_step()
        assert [r["status"] for r in bg.zoo.runs()] == ["running"]
        bg.proc.send_signal(signal.SIGTERM)
        _, stderr = bg.proc.communicate()
    [run] = bg.zoo.runs()
    assert run["status"] == "failed", (run, stderr[-2000:])
    assert "terminated by signal" in run["error"] and run["result"] is None, (run, stderr[-2000:])
    assert [m["name"] for m in bg.zoo.ls()] == ["base"]
    ckdir = home / "checkpoints"
    leftovers = sorted(p.name for p in ckdir.iterdir()) if ckdir.exists() else []
    assert leftovers == []  # neither the output nor its temporary folder remains


def test_runs_whose_process_is_gone_are_marked_failed(home, ckpts):
    import datetime as dt
    import os
    import socket

    from zoo import catalog

    z = Zoo(home)
    z.add([ckpts["base"]], name="base")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now, host = dt.datetime.now(), socket.gethostname()
    with z.store.write() as conn:
        base_id = catalog.model(conn, "base")["id"]
        for pid, h in ((dead.pid, host), (os.getpid(), host), (dead.pid, "another-machine")):
            catalog.insert_run(conn, start_model_id=base_id, dataset="d", method="full", params={"pid": pid, "host": h},
                               device="cpu", status="running", started_at=now)
    runs = {r["id"]: r for r in Zoo(home).runs()}  # a new Zoo, as the next command would be
    assert runs[1]["status"] == "failed" and f"process {dead.pid} on {host} ended" in runs[1]["error"]
    assert runs[2]["status"] == "running"  # this test's own process is alive
    assert runs[3]["status"] == "running"  # another machine's process cannot be checked from here
    # A pid reused by a process that started after the run is not the run's process.
    with z.store.write() as conn:
        catalog.update_run(conn, 2, started_at=now - dt.timedelta(days=3650))
    assert {r["id"]: r["status"] for r in Zoo(home).runs()} == {1: "failed", 2: "failed", 3: "running"}


def test_an_outside_reader_never_costs_a_finished_finetune(home, ckpts, tmp_path):
    """A notebook holding the catalog open while a fine-tune finishes: the write-back cannot get
    the lock, so the weights are kept and the next zoo command registers them."""
    with BackgroundFinetune(home, ckpts, tmp_path, env={"ZOO_LOCK_TIMEOUT": "0.5"}) as bg:
        bg.wait_at_step()
        with HeldCatalog(home / "catalog.duckdb", read_only=True):
            out, err = bg.release()
    assert bg.proc.returncode != 0 and "the next zoo command registers it" in err, err[-2000:]
    assert (home / "checkpoints" / "big-from-base-s0" / "model.safetensors").is_file()
    z = Zoo(home)  # the next command
    [run] = z.runs()
    assert run["status"] == "finished" and run["result"] == "big-from-base-s0", run
    assert [m["name"] for m in z.ls()] == ["base", "big-from-base-s0"]
    assert list((home / "pending").iterdir()) == []


def test_probe_head_starts_from_the_data_not_the_seed(filled, data):
    """--head-init probe: the head is a logistic regression fitted on the frozen start, the same
    whatever the seed, and already better than chance on its data; runs record the choice."""
    import torch

    from zoo.finetune import TrainParams, load_classifier, load_tokenizer, probe_head, _batches

    train, _ = data
    ex = read_examples(train)
    labels = ex.label_space()
    base = filled.show("base")["uri"]
    tok = load_tokenizer([base])
    heads, losses = [], []
    for seed in (0, 7):
        torch.manual_seed(seed)
        model = load_classifier(base, labels)
        probe_head(model, tok, ex, labels, TrainParams(max_length=16), "cpu")
        head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(labels)][-1]
        heads.append((head.weight.detach().clone(), head.bias.detach().clone()))
        lid = {l: i for i, l in enumerate(labels)}
        with torch.no_grad():
            enc = next(_batches(tok, ex, list(range(len(ex))), len(ex), 16, lid))
            losses.append(float(model(**enc).loss))
    assert torch.equal(heads[0][0], heads[1][0]) and torch.equal(heads[0][1], heads[1][1])
    assert losses[0] == losses[1] < math.log(len(labels))
    res = filled.finetune("base", train, None, dataset="senti", epochs=1, batch_size=8, head_init="probe")
    assert json.loads(filled.sql(f"SELECT params FROM runs WHERE result_model_id = {res['id']}")[1][0][0])["head_init"] == "probe"
    with pytest.raises(ZooValueError, match="--head-init"):
        filled.finetune("base", train, None, dataset="senti", head_init="zeros")


def _one_line(err: str) -> str:
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_plan_runs_several_fine_tunes_in_one_process(filled, data, tmp_path):
    """``zoo finetune --plan``: every line checked before the first run, CLI options as the
    lines' defaults, paths relative to the plan file, the same results as runs one by one."""
    from click.testing import CliRunner

    from zoo.cli.main import main

    train, dev = data
    (tmp_path / "plans").mkdir()
    plan = tmp_path / "plans" / "runs.jsonl"
    rel = os.path.relpath(train, plan.parent)
    plan.write_text(json.dumps({"from": "base", "train": rel, "seed": 3, "out": "p-base"}) + "\n\n" +
                    json.dumps({"from": "ft-a0", "seed": 4, "lr": 2e-3}) + "\n")
    runner = CliRunner()
    res = runner.invoke(main, ["--home", str(filled.home), "finetune", "--plan", str(plan), "--train", str(train),
                               "--eval", str(dev), "--dataset", "senti", "--task", "u", "--epochs", "1",
                               "--batch-size", "8", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert [r["name"] for r in got] == ["p-base", "senti-from-ft-a0-s4"] and [r["start"] for r in got] == ["base", "ft-a0"]
    rows = filled.sql("SELECT params->>'seed', CAST(params->>'lr' AS DOUBLE), CAST(params->>'epochs' AS DOUBLE), "
                      "dataset FROM runs ORDER BY id")[1]
    assert rows == [("3", 5e-05, 1.0, "senti"), ("4", 0.002, 1.0, "senti")]
    alone = filled.finetune("base", train, dev, dataset="senti", task="u", out="alone", epochs=1, batch_size=8, seed=3)
    # The same run alone gives the same bytes: the store recognises p-base's weights.
    assert alone["name"] == "p-base" and alone["eval_loss"] == got[0]["eval_loss"]


def test_bad_plans_are_refused_before_any_run(filled, data, tmp_path):
    train, _ = data
    runs_before = len(filled.runs())

    def plan(*lines: str):
        p = tmp_path / f"p{len(list(tmp_path.glob('p*.jsonl')))}.jsonl"
        p.write_text("\n".join(lines) + "\n")
        return p

    ok = json.dumps({"from": "base", "train": str(train), "epochs": 1, "batch_size": 8})
    cases = [
        (tmp_path / "missing.jsonl", "plan file .* does not exist"),
        (plan(""), "holds no runs"),
        (plan(ok, "{not json"), "line 2 is not JSON"),
        (plan(ok, "[1, 2]"), "line 2: a run is a JSON object, got list"),
        (plan(ok, json.dumps({"from": "base", "train": str(train), "colour": "red"})), r"line 2: unknown key\(s\) 'colour'"),
        (plan(json.dumps({"train": str(train)})), "line 1: no 'from'"),
        (plan(ok, json.dumps({"from": "base", "train": "nowhere.jsonl"})), "line 2: train file .*nowhere.jsonl.* does not exist"),
        (plan(ok, json.dumps({"from": "base", "train": str(train), "lr": -1})), "line 2: --lr must be a positive number"),
        (plan(json.dumps({"from": "base", "train": str(train), "out": "x"}),
              json.dumps({"from": "ft-a0", "train": str(train), "out": "x"})), "line 2: out 'x' is also line 1's"),
    ]
    for p, why in cases:
        with pytest.raises(ZooValueError, match=why):
            filled.finetune_plan(p)
    assert len(filled.runs()) == runs_before  # nothing ran
    # A run that fails stops the plan and names its line; the runs before it stay.
    with pytest.raises(NotFound, match=r"plan line 2: .*'nope'.*the lines before it finished \(first\)"):
        filled.finetune_plan([{"from": "base", "out": "first"}, {"from": "nope"}], train=str(train), epochs=1,
                             batch_size=8)
    assert filled.show("first")["kind"] == "finetune"
    from click.testing import CliRunner

    from zoo.cli.main import main

    # In text, each run is printed as it ends: a failure later still leaves the earlier lines shown.
    res = CliRunner().invoke(main, ["--home", str(filled.home), "finetune", "--plan",
                                    str(plan(json.dumps({"from": "base", "out": "second", "seed": 7}), json.dumps({"from": "nope"}))),
                                    "--train", str(train), "--epochs", "1", "--batch-size", "8"])
    assert res.exit_code != 0 and res.stdout.startswith("second: fine-tuned from ")
    assert "plan line 2" in _one_line(res.stderr)
    for args, why in ((["--plan", str(plan(ok)), "--out", "y"], "--out names one result"),
                      (["--from", "base"], "give --from and --train")):
        res = CliRunner().invoke(main, ["--home", str(filled.home), "finetune", *args])
        assert res.exit_code == 2 and why in res.stderr and "Traceback" not in res.stderr
