"""The CLI: thin commands, JSON output, one-line errors with non-zero exits."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import HeldCatalog
from zoo.cli.main import main
from zoo.errors import ZooValueError


@pytest.fixture()
def run(home):
    runner = CliRunner()

    def _run(*args, code=0):
        res = runner.invoke(main, ["--home", str(home), *map(str, args)])
        assert res.exit_code == code, (res.output, res.stderr if hasattr(res, "stderr") else "")
        return res
    return _run


def _one_line_error(res) -> str:
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_add_ls_show_sql_json(run, ckpts):
    run("init")
    out = json.loads(run("add", ckpts["base"], "--name", "base", "--json").stdout)
    assert out[0]["created"] and out[0]["kind"] == "base"
    run("add", ckpts["a0"], "--dataset", "a", "--task", "t", "--meta", "lr=1e-5")
    rows = json.loads(run("ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["base", "ft-a0"]
    text = run("ls").stdout
    assert text.splitlines()[0].split()[:3] == ["id", "name", "family"] and "ft-a0" in text
    shown = json.loads(run("show", "ft-a0", "--json").stdout)
    assert shown["meta"]["lr"] == "1e-5" and shown["parents"][0]["name"] == "base"
    assert "finetuned_from" in run("show", "ft-a0").stdout
    assert "ft-a0" in run("lineage", "base").stdout
    got = json.loads(run("sql", "SELECT name FROM models WHERE kind = 'finetune'", "--json").stdout)
    assert got == [{"name": "ft-a0"}]
    assert "ft-a0" in run("ls", "--dataset", "a").stdout and "ft-a0" not in run("ls", "--dataset", "b").stdout


def test_ls_searches_sorts_and_pages(run, ckpts):
    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], "--dataset", "Alpha", "--task", "t")
    run("add", ckpts["b0"], "--dataset", "beta", "--task", "t")
    names = lambda *a: [r["name"] for r in json.loads(run("ls", "--json", *a).stdout)]  # noqa: E731
    assert names() == ["base", "ft-a0", "ft-a1", "ft-b0"]
    assert names("--search", "alp") == ["ft-a0", "ft-a1"]  # the dataset, in any case
    assert names("-s", "B0") == ["ft-b0"] and names("-s", "%") == [] and names("-s", "_") == []  # literal text
    assert names("--sort", "dataset") == ["ft-a0", "ft-a1", "ft-b0", "base"]  # missing values last, then by id
    assert names("--sort", "dataset", "--desc") == ["ft-b0", "ft-a0", "ft-a1", "base"]
    assert names("--sort", "name", "--desc", "--limit", "2") == ["ft-b0", "ft-a1"]
    assert names("--sort", "name", "--desc", "--limit", "2", "--offset", "2") == ["ft-a0", "base"]
    assert names("--offset", "9") == []
    text = run("ls", "--task", "t", "--limit", "2", "--offset", "1").stdout
    assert text.splitlines()[-1] == "rows 2-3 of 3" and "ft-a1" in text and "ft-a0" not in text
    assert run("ls", "-s", "nothing-like-this", "--limit", "5").stdout.splitlines()[-1] == "rows none of 0"
    assert "--limit must be a whole number >= 1 (below 2**63), got 0" in _one_line_error(run("ls", "--limit", "0", code=2))
    assert "--offset must be a whole number >= 0 (below 2**63), got -3" in _one_line_error(run("ls", "--offset", "-3", code=2))
    assert "below 2**63" in _one_line_error(run("ls", "--offset", str(2**64), code=2))
    assert "'bogus' is not one of" in _one_line_error(run("ls", "--sort", "bogus", code=2))


def test_bad_input_exits_nonzero_with_one_line(run, ckpts, tmp_path):
    run("add", ckpts["base"], "--name", "base")
    err = _one_line_error(run("show", "nope", code=1))
    assert "no model named 'nope'" in err
    err = _one_line_error(run("add", tmp_path / "missing", code=1))
    assert "does not exist" in err
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes((ckpts["a0"] / "model.safetensors").read_bytes()[:5000])
    assert "truncated" in _one_line_error(run("add", trunc, code=1))
    assert "read-only" in _one_line_error(run("sql", "DELETE FROM models", code=1))
    assert "derive from" not in _one_line_error(run("rm", "nobody", code=1))
    rows = json.loads(run("ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["base"]


def test_second_writer_gets_busy_error(home, ckpts, tmp_path):
    from zoo import Zoo

    Zoo(home).init()
    with HeldCatalog(home / "catalog.duckdb", read_only=False):
        env = dict(os.environ, ZOO_LOCK_TIMEOUT="1")
        res = subprocess.run([sys.executable, "-m", "zoo.cli.main", "--home", str(home), "add", str(ckpts["base"])],
                             capture_output=True, text=True, env=env)
        assert res.returncode != 0
        assert res.stderr.strip().startswith("error: zoo is busy") and "Traceback" not in res.stderr
    # Once the other writer is gone the same command works.
    res = subprocess.run([sys.executable, "-m", "zoo.cli.main", "--home", str(home), "add", str(ckpts["base"])],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_eval_several_models_and_forced_probe(run, ckpts, tmp_path):
    from conftest import write_sentiment

    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], "--dataset", "a", "--task", "t")
    data = write_sentiment(tmp_path / "senti.jsonl", 24, seed=3)
    one = json.loads(run("eval", "ft-a0", "--data", data, "--json").stdout)
    assert one["name"] == "ft-a0" and one["how"].startswith("linear probe")
    both = json.loads(run("eval", "ft-a0", "ft-a1", "--data", data, "--probe", "--json").stdout)
    assert [r["name"] for r in both] == ["ft-a0", "ft-a1"] and both[0]["value"] == one["value"]
    assert len(run("eval", "ft-a0", "base", "--data", data).stdout.strip().splitlines()) == 2
    n_evals = len(json.loads(run("show", "ft-a0", "--json").stdout)["evaluations"])
    assert "no model named 'nope'" in _one_line_error(run("eval", "ft-a0", "nope", "--data", data, code=1))
    assert len(json.loads(run("show", "ft-a0", "--json").stdout)["evaluations"]) == n_evals


def test_select_start_with_train(run, ckpts, tmp_path):
    from conftest import write_sentiment

    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], "--dataset", "a", "--task", "t")
    train = write_sentiment(tmp_path / "c.jsonl", 30, seed=4)
    opts = ["--folds", "3", "--max-length", "16", "--epochs", "1", "--batch-size", "8", "--examples", "24"]
    res = json.loads(run("select-start", "--task", "t", "--dataset", "c", "--train", train, *opts, "--mix-budget", "4",
                         "--json").stdout)
    assert all(len(c["evidence"]["trial_fold_accuracy"]) == 3 for c in res["candidates"]) and "trial" in res["basis"]
    assert res["candidates"][0]["start"] == res["recommended"] and res["reason"]
    assert [c["evidence"]["evaluations"] for c in res["candidates"] if c["category"] == "mixture"] == [4]
    text = run("select-start", "--task", "t", "--dataset", "c", "--train", train, *opts, "--min-gain", "100",
               "--no-mixture").stdout
    # Nothing gains 100 points: the base, marked, with the reason and each start's trial gain in points.
    assert "recommended: base: no start clears its uncertainty" in text and "* base" in text and "trial " in text
    assert "LogME" in text and "learned mixture" not in text
    err = _one_line_error(run("select-start", "--task", "t", "--dataset", "c", "--train", train, *opts,
                              "--mix-budget", "1", code=2))
    assert "--mix-budget 1 scores no mixture besides the base" in err
    plain = run("select-start", "--task", "t", "--dataset", "c").stdout
    assert "recommended: base: no evidence about the target" in plain
    err = _one_line_error(run("select-start", "--task", "t", "--train", train, "--folds", "1", code=2))
    assert "--folds must be at least 2" in err
    assert "--min-gain" in _one_line_error(run("select-start", "--task", "t", "--min-gain", "nan", code=2))
    assert "does not exist" in run("select-start", "--task", "t", "--train", tmp_path / "nope.jsonl", code=2).stderr


def test_json_output_is_the_typed_result_as_a_dict(run, ckpts, home):
    from zoo import Zoo
    from zoo.results import Neighbours, Result

    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], ckpts["b0"], "--dataset", "a", "--task", "t")
    res = Zoo(home).nearest("ft-a0", k=2)
    assert isinstance(res, Neighbours) and res.results == res["results"] and res.family == "base"
    assert json.loads(run("nearest", "ft-a0", "-k", "2", "--json").stdout) == json.loads(json.dumps(res.as_dict()))
    assert set(res) == {"query", "registered", "family", "space_id", "metric", "search", "results"}
    dist = Zoo(home).distance("ft-a0", "ft-a1")
    assert "exact" not in dist and dist.exact is None  # optional parts are left out until computed
    assert "exact" in Zoo(home).distance("ft-a0", "ft-a1", exact=True)
    z = Zoo(home)
    for res in (z.region(task="t"), z.lineage("ft-a0"), z.clusters(2), z.select_start("t", dataset="a")):
        assert isinstance(res, Result) and dict(res) == res.as_dict() and json.dumps(res.as_dict())


def test_bad_arguments_get_one_line_and_exit_2(run):
    err = _one_line_error(run("ls", "--kind", "bogus", code=2))
    assert "'bogus' is not one of 'base'" in err and err.endswith("see `zoo ls --help`")
    assert "Missing argument 'TARGET'" in _one_line_error(run("nearest", code=2))
    assert "'1,a' is not a comma-separated list" in _one_line_error(run("centroid", "--weights", "1,a", code=2))
    assert "'x' is not a valid integer" in _one_line_error(run("space", "add", "--dim", "x", code=2))
    assert "No such command 'bogus'" in _one_line_error(run("bogus", code=2))
    assert run("runs", "--status", "done", code=2).stderr.count("\n") == 1


def test_home_path_is_never_parsed_as_a_url(tmp_path, ckpts):
    from zoo import Zoo

    for odd in ("a%58b", "h#sh", "s p"):
        home = tmp_path / odd
        Zoo(home).add([ckpts["base"]], name="base")
        assert (home / "catalog.duckdb").is_file() and [m["name"] for m in Zoo(home).ls()] == ["base"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a%58b", "h#sh", "s p"]  # no aXb: nothing was decoded
    with pytest.raises(ZooValueError, match="contains '\\?'.*without it"):
        Zoo(tmp_path / "q?x=1").ls()
    assert not (tmp_path / "q?x=1").exists()


@pytest.mark.parametrize("var,value", [("ZOO_LOCK_TIMEOUT", "abc"), ("ZOO_LOCK_TIMEOUT", "-1"),
                                       ("ZOO_INDEX_MEMORY", "lots"), ("ZOO_INDEX_MEMORY", "0")])
def test_bad_environment_numbers_get_one_line(run, ckpts, monkeypatch, var, value):
    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], "--dataset", "a")
    monkeypatch.setenv(var, value)
    err = _one_line_error(run("nearest", "ft-a0", code=2))
    assert err.startswith(f"error: {var}={value!r} is not a") and "fix or unset it" in err


def test_bounded_inputs_get_one_line_errors(run, ckpts):
    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], ckpts["b0"], "--dataset", "a", "--task", "t")
    before = run("ls", "--json").stdout
    # A huge -k is clamped to what exists (it used to allocate for k).
    res = json.loads(run("nearest", "ft-a0", "-k", "1000000000", "--json").stdout)
    assert [r["name"] for r in res["results"]] == [r["name"] for r in json.loads(run("nearest", "ft-a0", "-k", "3",
                                                                                       "--json").stdout)["results"]]
    assert len(json.loads(run("nearest", "ft-a0", "-k", str(2**31), "--dataset", "a", "--json").stdout)["results"]) == 2
    cases = [
        (("centroid", "--task", "t", "--seed", str(2**70)), "--seed 1180591620717411303424 is out of range"),
        (("clusters", "-k", "2", "--seed", "-1"), "--seed -1 is out of range"),
        (("centroid", "--task", "t", "--weights", "1e308,1e308,1"), "their sum must be finite"),
        (("centroid", "--task", "t", "--weights", "1,-1,1"), "include negative ones"),
        (("centroid", "--task", "t", "--dirichlet", "nan"), "--dirichlet nan must be a positive number"),
        (("centroid", "--task", "t", "--dirichlet", "-1"), "must be a positive number"),
        (("interpolate", "ft-a0", "ft-a1", "--alpha", "1e308", "--extrapolate"), "more than 100 times"),
        (("centroid", "--task", "t", "--out", ""), "is empty"),
        (("centroid", "--task", "t", "--out", "bad\nname"), "control characters"),
        (("finetune", "--from", "base", "--train", "x.jsonl", "--out", "../escape"), "is a model name, not a path"),
        (("interpolate", "ft-a0", "ft-a1", "--alpha", "0.5", "--out", "/abs/path"), "is a model name, not a path"),
        (("add", ckpts["a2"], "--name", "x\x1b[31m"), "control characters"),
        (("add", ckpts["a2"], "--name", " "), "is empty"),
        (("add", ckpts["a2"], "--meta", "members_key=abc"), "members_key are zoo's own"),
    ]
    for args, msg in cases:
        err = _one_line_error(run(*args, code=2))
        assert msg in err, (args, err)
    assert run("ls", "--json").stdout == before  # nothing was registered or materialized


def test_a_corrupt_catalog_gets_one_line(run, home):
    home.mkdir(parents=True)
    (home / "catalog.duckdb").write_bytes(b"not a database" * 1000)
    for args in (("ls",), ("sql", "SELECT 1"), ("reindex",)):
        err = _one_line_error(run(*args, code=1))
        assert "is not a readable zoo catalog" in err and "zoo doctor --repair` moves it aside" in err, err


def test_busy_error_names_the_holder(home, ckpts):
    from zoo import Zoo

    Zoo(home).init()
    with HeldCatalog(home / "catalog.duckdb", read_only=True) as holder:
        res = subprocess.run([sys.executable, "-m", "zoo.cli.main", "--home", str(home), "add", str(ckpts["base"])],
                             capture_output=True, text=True, env=dict(os.environ, ZOO_LOCK_TIMEOUT="0.5"))
    assert res.returncode == 1
    err = res.stderr.strip()
    assert err.startswith(f"error: zoo is busy: PID {holder.pid} (") and "\n" not in err, err
    assert err.endswith(f"holds {home / 'catalog.duckdb'} (waited 0.5s); retry when it closes the catalog or raise "
                        "ZOO_LOCK_TIMEOUT"), err


def test_faults_end_in_one_line_and_change_nothing(run, ckpts, home, monkeypatch):
    """Disk full while bringing a checkpoint in or writing a centroid, and a home that cannot
    take index files: one line (or, for the index cache, the answer anyway), nothing half-done."""
    import errno
    import shutil as _shutil

    from zoo import Zoo
    from zoo.merge import SafetensorsWriter

    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], "--dataset", "a", "--task", "t")
    before = run("ls", "--json").stdout

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(home / "weights"))

    with monkeypatch.context() as m:  # across filesystems the files are copied: the copy fills the disk
        m.setattr("os.link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EXDEV, "cross-device")))
        m.setattr(_shutil, "copy2", full)
        err = _one_line_error(run("add", ckpts["b0"], code=1))
    assert err.startswith("error: No space left on device") and "free space and permissions" in err
    with monkeypatch.context() as m:
        m.setattr(SafetensorsWriter, "write", full)
        assert "No space left on device" in _one_line_error(run("centroid", "--dataset", "a", "--out", "c", code=1))
    assert run("ls", "--json").stdout == before
    assert sorted(p.name for p in (home / "weights").iterdir()) == sorted(Zoo(home).show(n)["content_hash"]
                                                                         for n in ("base", "ft-a0", "ft-a1"))
    assert not (home / "checkpoints").exists() or list((home / "checkpoints").iterdir()) == []
    # The index cache cannot be written (read-only or full home): queries still answer.
    want = json.loads(run("nearest", "ft-a0", "-k", "2", "--json").stdout)["results"]
    (home / "index" / "space_1.faiss").write_bytes(b"stale")
    with monkeypatch.context() as m:
        m.setattr("zoo.index.os.replace", lambda *a, **k: full())
        got = json.loads(run("nearest", "ft-a0", "-k", "2", "--json").stdout)["results"]
    assert got == want and (home / "index" / "space_1.faiss").read_bytes() == b"stale"
    assert [p.name for p in (home / "index").iterdir() if p.name.endswith(".tmp")] == []


def test_a_read_only_home_gets_one_line(run, ckpts, home, monkeypatch):
    """What a read-only home does to the catalog's writers and to the index files (simulated:
    the tests run as root, whom file permissions do not stop)."""
    import errno

    from zoo import db

    run("add", ckpts["base"], "--name", "base")
    run("add", ckpts["a0"], ckpts["a1"], "--dataset", "a", "--task", "t")
    before = run("ls", "--json").stdout
    real = db.open_raw

    def read_only_fs(path, write):
        if write:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, write)

    with monkeypatch.context() as m:
        m.setattr(db, "open_raw", read_only_fs)
        for args in (("add", ckpts["b0"]), ("rm", "ft-a1"), ("centroid", "--dataset", "a", "--out", "c"),
                     ("set", "ft-a0", "--task", "u")):
            err = _one_line_error(run(*args, code=1))
            assert "Read-only file system" in err and "check the zoo home's permissions" in err, (args, err)
        assert run("ls", "--json").stdout == before  # reads still work
    with monkeypatch.context() as m:
        m.setattr("zoo.index.os.replace", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
        err = _one_line_error(run("reindex", code=1))
        assert "could not write the rebuilt index" in err
    assert run("ls", "--json").stdout == before
    assert not (home / "checkpoints").exists() or list((home / "checkpoints").iterdir()) == []


def test_fidelity_and_rerank_from_the_cli(run, ckpts):
    run("add", ckpts["base"], "--name", "base")
    run("add", *(ckpts[f"{d}{i}"] for d in "ab" for i in range(3)), "--task", "t")
    res = json.loads(run("fidelity", "-k", "2", "--rerank", "5", "--rerank", "3", "--json").stdout)
    assert [r["setting"].split(" (")[0] for r in res["settings"]] == ["exact"] + ["sketch d=1024"] * 3 + [
        "default query path: sketch d=1024 + exact re-rank of 5"]
    assert res["settings"][0]["knn_overlap"] == 1.0 and res["settings"][2]["knn_overlap"] == 1.0  # re-rank of all 5
    text = run("fidelity", "-k", "2").stdout
    assert "sketch answers against exact ones on 6 models" in text and "knn_overlap" in text
    near = json.loads(run("nearest", "ft-a0", "-k", "2", "--rerank", "5", "--json").stdout)
    assert "re-ranked by exact distance" in near["search"] and len(near["results"]) == 2
    assert "--rerank must be an integer of at least 0" in _one_line_error(run("nearest", "ft-a0", "--rerank", "-1", code=2))
    assert "needs at least 7" in _one_line_error(run("fidelity", "-k", "6", code=1))
