"""Thread control (zoo.threads), one connection per command and batch (Zoo.session), and the
IVF lists the SQL macros probe (migration 0003)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from zoo import Zoo, catalog, db, threads
from zoo.errors import ZooValueError
from zoo.threads import MIN_WORK_PER_THREAD, RECHECK_S, Governor, choose_threads, cpu_quota


@pytest.mark.parametrize("cpus,busy,work,override,want", [
    (2, 0, None, None, 2),          # quiet: every CPU
    (2, 0.4, None, None, 2),        # a neighbour on less than half a CPU leaves both
    (2, 0.6, None, None, 1),        # one busy neighbour: one free CPU
    (2, 2, None, None, 1),          # two busy loops: one thread, never zero
    (2, 5, None, None, 1),
    (16, 4, None, None, 12),
    (16, 0, None, None, 16),
    (1.5, 0, None, None, 1),        # a cgroup quota of 1.5 CPUs: whole threads only
    (8, 0, 3 * MIN_WORK_PER_THREAD, None, 3),   # small work: fewer threads than CPUs
    (8, 0, 10, None, 1),            # a tiny model: one thread
    (8, 0, 0, None, 1),             # CUDA feeds the GPU from one thread
    (8, 6, 100 * MIN_WORK_PER_THREAD, None, 2),
    (2, 5, None, 4, 4),             # the user's count wins, whatever the load
    (2, 0, 10, 3, 3),
])
def test_choose_threads_grid(cpus, busy, work, override, want):
    assert choose_threads(cpus, busy, work, override) == want


def test_cpu_quota_reads_cgroup_v2_and_v1(tmp_path):
    assert cpu_quota(tmp_path) is None  # no cgroup files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert cpu_quota(v1) == 3.0


def test_zoo_threads_env_and_override(monkeypatch):
    monkeypatch.setenv("ZOO_THREADS", "3")
    assert threads.requested() == 3 and Governor(work=None, samples=0).threads == 3
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("ZOO_THREADS", bad)
        with pytest.raises(ZooValueError, match=f"ZOO_THREADS must be a whole number of threads, 1 or more, got '{bad}'"):
            threads.requested()
    monkeypatch.delenv("ZOO_THREADS")
    threads.set_override(2)
    try:
        assert threads.requested() == 2
        with pytest.raises(ZooValueError, match="--threads"):
            threads.set_override(0)
    finally:
        threads.set_override(None)
    assert threads.requested() is None


def test_governor_gives_threads_back_and_takes_them_away(monkeypatch):
    """A neighbour starts mid-run: the next re-decision drops to one thread; it ends: both come back."""
    monkeypatch.delenv("ZOO_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2.0)
    load, now = [0.0], [0.0]
    g = Governor(work=None, samples=3, clock=lambda: now[0], probe=lambda: load[0])
    assert g.threads == 2 and g.changes == 0
    load[0] = 2.0
    for _ in range(4):  # samples within RECHECK_S: no decision yet
        g.tick()
    assert g.threads == 2
    now[0] += RECHECK_S
    assert g.tick() == 1 and g.changes == 1
    load[0] = 0.0
    for _ in range(5):
        g.tick()
    now[0] += RECHECK_S
    assert g.tick() == 2 and g.changes == 2
    import torch

    assert torch.get_num_threads() == 2  # applied to the loaded runtime, not only decided


def test_a_fine_tune_records_and_uses_its_thread_count(filled, tmp_path, monkeypatch):
    import torch

    from tests.conftest import write_sentiment

    train = write_sentiment(tmp_path / "t.jsonl", 16)
    res = filled.finetune("base", train, None, dataset="s", task="u", epochs=1, batch_size=8)
    # The tiny test BERT is far below MIN_WORK_PER_THREAD: one thread.
    assert filled.sql(f"SELECT metrics->>'threads' FROM runs WHERE id = {res['run_id']}")[1] == [("1",)]
    monkeypatch.setenv("ZOO_THREADS", "2")
    res = filled.finetune("base", train, None, dataset="s", task="u", epochs=1, batch_size=8, seed=1)
    assert filled.sql(f"SELECT metrics->>'threads' FROM runs WHERE id = {res['run_id']}")[1] == [("2",)]
    assert torch.get_num_threads() == 2


def test_cli_threads_option_and_bad_env(home, ckpts, monkeypatch):
    from zoo.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["--home", str(home), "--threads", "0", "ls"])
    assert res.exit_code == 2 and "--threads" in res.output
    monkeypatch.setenv("ZOO_THREADS", "many")
    res = runner.invoke(main, ["--home", str(home), "add", str(ckpts["base"])])
    assert res.exit_code == 2  # a bad value, like a bad argument
    assert res.output.strip().splitlines() == ["error: ZOO_THREADS must be a whole number of threads, 1 or more, "
                                               "got 'many'"]
    monkeypatch.delenv("ZOO_THREADS")
    try:
        res = runner.invoke(main, ["--home", str(home), "--threads", "1", "add", str(ckpts["base"])])
        assert res.exit_code == 0 and threads.requested() == 1
    finally:
        threads.set_override(None)


def _count_opens(monkeypatch) -> list[bool]:
    opened: list[bool] = []
    real = db.open_raw

    def counting(path, write):
        opened.append(write)
        return real(path, write)

    monkeypatch.setattr(db, "open_raw", counting)
    return opened


def test_one_connection_per_command_and_per_batch(home, ckpts, monkeypatch):
    z = Zoo(home)
    z.add([ckpts["base"]], name="base")
    opened = _count_opens(monkeypatch)
    z2 = Zoo(home)  # a new command: schema check, maintenance and the add on one connection
    z2.add([ckpts["a0"]], dataset="a", task="t")
    assert opened == [True]
    opened.clear()
    assert [m["name"] for m in z2.ls()] == ["base", "ft-a0"] and opened == [False]
    opened.clear()
    with z2.session():
        for i in (1, 2):
            z2.add([ckpts[f"a{i}"]], dataset="a", task="t")
        # Inside the batch, queries see every change (the index is brought in line on use).
        assert {r["name"] for r in z2.nearest("ft-a0", k=5)["results"]} == {"base", "ft-a1", "ft-a2"}
    assert opened == [True]
    opened.clear()
    res = Zoo(home).nearest("ft-a1", k=3)
    assert {r["name"] for r in res["results"]} == {"ft-a0", "ft-a2", "base"} and opened == [False]


def test_a_write_inside_a_read_command_keeps_the_connection_usable(home, ckpts):
    z = Zoo(home)
    z.add([ckpts["base"]], name="base")
    with z.store.read() as conn:
        before = catalog.model(conn, "base")["id"]
        with z.store.write() as w:  # reopens read-write in place
            catalog.update_model(w, before, task="t")
        assert conn.write and catalog.model(conn, "base")["task"] == "t"


def _synthetic_space(z: Zoo, n: int, d: int, metric: str = "cosine") -> np.ndarray:
    """n models with clustered d-dim sketches in one family and space, through the catalog API."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, d))
    x = centers[rng.integers(0, 20, n)] + 0.4 * rng.standard_normal((n, d))
    with z.store.write() as conn:
        fid = catalog.insert_family(conn, "syn", "sig", "", {"w": [d]})
        sid = catalog.insert_space(conn, fid, d, 0, metric, None, np.zeros(d))
        for i in range(n):
            mid = catalog.insert_model(conn, name=f"m{i}", family_id=fid, kind="finetune", uri="-", format="synthetic",
                                       content_hash=f"h{i}", n_params=0, dtype="F32", meta={})
            catalog.insert_sketch(conn, mid, sid, x[i])
    return x


def _exact(x: np.ndarray, i: int, k: int, metric: str) -> list[str]:
    x32 = x.astype(np.float32).astype(np.float64)
    if metric == "cosine":
        u = x32 / np.linalg.norm(x32, axis=1, keepdims=True)
        d = 1 - u @ u[i]
    else:
        d = np.linalg.norm(x32 - x32[i], axis=1)
    d[i] = np.inf
    return [f"m{j}" for j in np.argsort(d, kind="stable")[:k]]


def test_sql_nearest_probes_published_ivf_lists(home, monkeypatch):
    import zoo.index as zindex

    monkeypatch.setattr(zindex, "FLAT_MAX", 100)  # IVF from 100 sketches on, as at 20k in use
    monkeypatch.setattr(catalog, "CLUSTER_BYTES", 1 << 14)  # rewritten in many slices of lists
    z = Zoo(home)
    x = _synthetic_space(z, 1200, 16)
    with z.store.read() as conn:
        fp = catalog.sketch_fingerprint(conn, 1)
        idx = z.store.index(conn, catalog.space(conn, 1))
        assert idx.meta["spec"]["kind"] == "ivf"
        n_lists = conn.scalar("SELECT count(*) FROM sketch_lists WHERE space_id = 1")
        assert n_lists == idx.meta["spec"]["nlist"]
        assert conn.scalar("SELECT count(*) FROM sketches WHERE list_id IS NULL") == 0
        # Rows are stored in list order (a probe reads contiguous rows), with the lists the
        # quantizer gives, and the rewrite changed nothing an index checks.
        stored = np.array([r["list_id"] for r in conn.rows("SELECT list_id FROM sketches WHERE space_id = 1")])
        assert len(stored) == 1200 and (np.diff(stored) >= 0).all()
        ids, vecs = catalog.sketch_vectors(conn, 1)
        assert np.array_equal(vecs, x.astype(np.float32)[ids - ids.min()])
        want = dict(zip(ids.tolist(), idx.coarse(ids, vecs)[1].tolist()))
        got = {r["model_id"]: r["list_id"] for r in conn.rows("SELECT model_id, list_id FROM sketches")}
        assert got == want and np.array_equal(idx.coarse(ids)[1], idx.coarse(ids, vecs)[1])
        assert catalog.sketch_fingerprint(conn, 1) == fp and idx.matches(fp, zindex.choose_index(1200, 16))
    hits = 0
    for i in range(0, 1200, 60):
        got = [r[0] for r in z.sql(f"SELECT name FROM zoo_nearest('m{i}', 10) ORDER BY rank")[1]]
        hits += len(set(got) & set(_exact(x, i, 10, "cosine")))
    assert hits / (20 * 10) >= 0.9
    # The l2 macro cannot use cosine lists: it probes them all, an exact scan.
    for i in (0, 7):
        got = [r[0] for r in z.sql(f"SELECT name FROM zoo_nearest_l2('m{i}', 5) ORDER BY rank")[1]]
        assert got == _exact(x, i, 5, "l2")
    # A sketch newer than the published lists (no list yet) is always a candidate.
    with z.store.write() as conn:
        mid = catalog.insert_model(conn, name="twin", family_id=1, kind="finetune", uri="-", format="synthetic",
                                   content_hash="twin", n_params=0, dtype="F32", meta={})
        catalog.insert_sketch(conn, mid, 1, x[5] * 1.0001)
    assert z.sql("SELECT name FROM zoo_nearest('m5', 1)")[1] == [("twin",)]
    with z.store.read() as conn:
        z.store.index(conn, catalog.space(conn, 1))  # appended: the new sketch gets its list
        assert conn.scalar("SELECT count(*) FROM sketches WHERE list_id IS NULL") == 0
    assert z.sql("SELECT name FROM zoo_nearest('m5', 1)")[1] == [("twin",)]
