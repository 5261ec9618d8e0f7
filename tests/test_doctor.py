"""zoo doctor: catalog, store, checkpoints and indexes checked against each other, and mended."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from conftest import make_finetune
from zoo import Zoo
from zoo.cli.main import main


def test_a_healthy_zoo(filled):
    res = filled.doctor()
    assert res.ok and res.problems == [] and res.checked["models"] == 7 and res.checked["store_folders"] == 7


def test_doctor_finds_and_repairs(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    src = make_finetune(ckpts["base"], tmp_path / "src" / "a", seed=5)
    zoo.add([src, ckpts["b0"]], dataset="d", task="t")
    cen = zoo.centroid(dataset="d", out="cen")
    a = zoo.show("a")
    stored = Path(a["uri"]) / "model.safetensors"
    # The store copy broken behind zoo's back (a new file where the link was), its source intact.
    stored.unlink()
    shutil.copy(src / "model.safetensors", stored)
    os.utime(stored, ns=(1, 1))
    # Orphans: a store folder of no model, a dead process's staging folder, a temporary and a
    # checkpoint folder nobody writes, and a corrupt index.
    (zoo.home / "weights" / ("f" * 32)).mkdir()
    (zoo.home / "weights" / ".stage-999999999-abc").mkdir()
    (zoo.home / "checkpoints" / ".half.x1y2z3").mkdir()
    (zoo.home / "checkpoints" / "lost").mkdir()
    (zoo.home / "index" / "space_1.faiss").write_bytes(b"garbage")
    live = Path(zoo.home / "weights" / f".stage-{os.getpid()}-live")
    live.mkdir()  # this process is alive: its staging folder is left alone

    res = zoo.doctor()
    kinds = sorted((p["kind"], Path(p["what"]).name) for p in res.problems)
    assert not res.ok and kinds == [("index", "space 1"), ("model files", "a"), ("orphan", ".half.x1y2z3"),
                                    ("orphan", ".stage-999999999-abc"), ("orphan", "f" * 32), ("orphan", "lost")]
    assert not any(p["repaired"] for p in res.problems)
    out = CliRunner().invoke(main, ["--home", str(zoo.home), "doctor", "--json"])
    assert out.exit_code == 1 and len(json.loads(out.stdout)["problems"]) == 6

    fixed = zoo.doctor(repair=True)
    assert fixed.ok and all(p["repaired"] for p in fixed.problems) and len(fixed.problems) == 6
    assert zoo.doctor().ok and live.is_dir() and Path(cen.path).is_dir()
    assert zoo.distance("a", "ft-b0", exact=True).exact["l2"] > 0
    assert CliRunner().invoke(main, ["--home", str(zoo.home), "doctor"]).exit_code == 0


def test_a_store_copy_without_its_source_cannot_be_repaired(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    src = make_finetune(ckpts["base"], tmp_path / "a", seed=5)
    zoo.add([src], dataset="d")
    shutil.rmtree(src)
    (Path(zoo.show("a")["uri"]) / "model.safetensors").unlink()
    res = zoo.doctor(repair=True)
    [p] = res.problems
    assert not res.ok and p["kind"] == "model files" and not p["repaired"] and "zoo rm a" in p["fix"]
    assert "is gone" in p["detail"] and Zoo(zoo.home).ls(dataset="d")[0]["name"] == "a"


SOAK = [  # (the command, where it is killed)
    (("add", "{a1}", "{b1}", "--dataset", "d", "--task", "t"), "add:staged"),
    (("add", "{a1}", "{b1}", "--dataset", "d", "--task", "t"), "add:settled"),
    (("add", "{a1}", "{b1}", "--dataset", "d", "--task", "t"), "add:in-transaction"),
    (("add", "{a1}", "{b1}", "--dataset", "d", "--task", "t"), "add:committed"),
    (("centroid", "--task", "t", "--out", "cen"), "materialize:written"),
    (("centroid", "--task", "t", "--out", "cen"), "add:in-transaction"),
    (("finetune", "--from", "base", "--train", "{train}", "--epochs", "1", "--batch-size", "8", "--out", "ft"),
     "finetune:started"),
    (("finetune", "--from", "centroid:task=t", "--train", "{train}", "--epochs", "1", "--batch-size", "8", "--out",
      "ft"), "finetune:trained"),
]


def _invariants(z: Zoo) -> None:
    """No partial row: every model has a sketch in every space of its family and files that verify."""
    cols, rows = z.sql("""SELECT m.name, count(s.space_id) AS n, (SELECT count(*) FROM sketch_spaces sp
                          WHERE sp.family_id = m.family_id) AS want
                          FROM models m LEFT JOIN sketches s ON s.model_id = m.id GROUP BY ALL""")
    assert all(n == want for _, n, want in rows), rows
    assert not [r for r in z.runs() if r["status"] == "running"]


def test_kill_soak_loses_nothing(ckpts, tmp_path):
    """Every command killed with -9 at each of its crash points: the next command and `zoo doctor
    --repair` leave no partial row, no orphan and no running run, and the retry succeeds."""
    import subprocess
    import sys

    from conftest import write_sentiment

    train = write_sentiment(tmp_path / "train.jsonl", 16)
    values = {"a1": ckpts["a1"], "b1": ckpts["b1"], "train": train}
    for i, (args, point) in enumerate(SOAK):
        home = tmp_path / f"zoo{i}"
        z = Zoo(home)
        z.add([ckpts["base"]], name="base")
        z.add([ckpts["a0"], ckpts["b0"]], dataset="c", task="t")
        cmd = [sys.executable, "-m", "zoo.cli.main", "--home", str(home), *(str(a).format(**values) for a in args)]
        killed = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, ZOO_CRASH_AT=point))
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        z = Zoo(home)  # the next command
        _invariants(z)
        res = z.doctor(repair=True)
        assert res.ok, (point, res.problems)
        assert z.doctor().problems == [], point
        again = CliRunner().invoke(main, cmd[3:])  # the retry, in this process: same CLI, no second start-up
        assert again.exit_code == 0, (point, again.output[-2000:])
        _invariants(Zoo(home))
        assert Zoo(home).doctor().problems == [], point


def _state(z: Zoo) -> dict:
    return {m["name"]: (z.show(m["name"])["kind"], m["dataset"], m["task"], m["seed"], z.show(m["name"])["content_hash"],
                        sorted((p["name"], p["relation"], p["weight"]) for p in z.show(m["name"])["parents"]))
            for m in z.ls()}


def test_a_lost_or_unreadable_catalog_is_rebuilt_from_the_store(zoo, ckpts, tmp_path):
    import pytest

    from conftest import write_sentiment
    from zoo.errors import CatalogUnreadable

    zoo.add([ckpts["base"]], name="base", meta={"origin": "test"})
    zoo.add([ckpts["a0"], ckpts["a1"]], dataset="a", task="t", seed=3)
    zoo.add([ckpts["b0"]], dataset="b", task="t")
    zoo.centroid(task="t", out="cen", weights=[1, 2, 3])
    zoo.finetune("cen", write_sentiment(tmp_path / "s.jsonl", 16), dataset="s", task="t", epochs=1, batch_size=8, out="ft")
    zoo.set("ft-b0", task="u")
    zoo.evaluate("ft-a0", write_sentiment(tmp_path / "e.jsonl", 20, seed=2))
    evals = [(e["dataset"], e["metric"], e["value"]) for e in zoo.show("ft-a0")["evaluations"]]
    want, near = _state(zoo), zoo.nearest("ft-a0", k=3).results
    assert want["ft"][5] == [("cen", "finetuned_from", None)] and len(want["cen"][5]) == 3

    (zoo.home / "catalog.duckdb").unlink()  # lost
    shutil.rmtree(zoo.home / "index")
    z = Zoo(zoo.home)
    found = z.doctor()
    assert not found.ok and sorted(p["what"] for p in found.problems) == sorted(want)
    records = [*zoo.home.glob("weights/*/zoo-record.json"), *zoo.home.glob("checkpoints/*/zoo-record.json")]
    assert z.ls() == [] and len(records) == len(want)  # reporting removed nothing
    assert z.doctor(repair=True).ok and _state(z) == want
    assert z.show("base")["meta"]["origin"] == "test" and z.nearest("ft-a0", k=3).results == near
    assert [(e["dataset"], e["metric"], e["value"]) for e in z.show("ft-a0")["evaluations"]] == evals == [
        ("e", "probe_accuracy", evals[0][2])]

    (zoo.home / "catalog.duckdb").write_bytes(b"not a database" * 100)  # unreadable
    with pytest.raises(CatalogUnreadable, match="doctor --repair"):
        Zoo(zoo.home).doctor()
    z = Zoo(zoo.home)
    res = z.doctor(repair=True)
    assert res.ok and res.problems[0]["kind"] == "catalog" and "catalog.unreadable-1.duckdb" in res.problems[0]["fix"]
    assert _state(z) == want and (zoo.home / "catalog.unreadable-1.duckdb").is_file()
