"""Index and geometry queries: nearest (FAISS = brute force = SQL), region, clusters, inside, repair."""
from __future__ import annotations


import duckdb
import numpy as np
import pytest

from zoo import Zoo, catalog
from zoo.errors import EmptyRegion, FamilyMismatch, ZooValueError
from zoo.geometry import brute_force
from zoo.index import FLAT_MAX, SpaceIndex, choose_index
from zoo.store import Store


def _catalog_vectors(z):
    with z.store.read() as conn:
        return catalog.sketch_vectors(conn, 1)


def test_nearest_equals_brute_force(filled):
    ids, x = _catalog_vectors(filled)
    names = {m["id"]: m["name"] for m in filled.ls()}
    for metric in ("cosine", "l2"):
        for i, name in names.items():
            if metric == "cosine" and name == "base":
                continue  # a base's sketch is zero: every cosine distance is 1, a tie
            res = filled.nearest(name, k=4, metric=metric, rerank=0)  # the sketch path
            keep = ids != i
            want_ids, want_d = brute_force(x[ids == i][0], ids[keep], x[keep], 4, metric)
            assert [r["id"] for r in res["results"]] == want_ids.tolist()
            np.testing.assert_allclose([r["distance"] for r in res["results"]], want_d, rtol=1e-4, atol=1e-5)


def test_nearest_finds_same_dataset_and_filters(filled):
    res = filled.nearest("ft-a0", k=2)
    assert {r["name"] for r in res["results"]} == {"ft-a1", "ft-a2"} and res["search"] == "Flat, 6 re-ranked by exact distance"
    res = filled.nearest("ft-a0", k=5, dataset="b")
    assert [r["dataset"] for r in res["results"]] == ["b", "b", "b"]
    res = filled.nearest("ft-a0", k=5, kind="base")
    assert [r["name"] for r in res["results"]] == ["base"]


def test_nearest_of_unregistered_path(filled, ckpts, tmp_path):
    from conftest import make_finetune

    p = make_finetune(ckpts["base"], tmp_path / "new-a", seed=99, direction_seed=1)
    res = filled.nearest(str(p), k=3)
    assert not res["registered"] and {r["dataset"] for r in res["results"]} == {"a"}
    assert len(filled.ls()) == 7


def test_sql_macro_gives_same_neighbours(filled):
    zres = filled.nearest("ft-b1", k=4, rerank=0)  # SQL answers from the sketches, like `--rerank 0`
    con = duckdb.connect(str(filled.catalog_path), read_only=True)
    rows = con.execute("SELECT name, distance FROM zoo_nearest('ft-b1', 4)").fetchall()
    cos = con.execute("SELECT zoo_cosine('ft-a0', 'ft-a1')").fetchone()[0]
    l2rows = con.execute("SELECT name FROM zoo_nearest_l2('ft-b1', 4)").fetchall()
    regions = con.execute("SELECT dataset, n_models, len(centroid) FROM zoo_regions WHERE level = 'dataset' ORDER BY dataset").fetchall()
    con.close()
    assert [r[0] for r in rows] == [r["name"] for r in zres["results"]]
    np.testing.assert_allclose([r[1] for r in rows], [r["distance"] for r in zres["results"]], atol=1e-5)
    assert [r[0] for r in l2rows] == [r["name"] for r in filled.nearest("ft-b1", k=4, metric="l2", rerank=0)["results"]]
    d = filled.distance("ft-a0", "ft-a1")
    assert abs((1 - cos) - d["sketch"]["cosine"]) < 1e-5
    assert regions == [("a", 3, 1024), ("b", 3, 1024)]


def test_region_centroid_is_mean_and_inside(filled):
    r = filled.region(dataset="a")
    ids, x = _catalog_vectors(filled)
    member_ids = [m["id"] for m in r["members"]]
    np.testing.assert_allclose(r["centroid"], x[np.isin(ids, member_ids)].astype(np.float64).mean(axis=0), rtol=1e-6)
    assert r["n"] == 3 and r["stats"]["radius"] >= r["stats"]["mean_dist"] > 0
    assert filled.inside("ft-a0", dataset="a")["inside"]
    out = filled.inside("ft-b0", dataset="a")
    assert not out["inside"] and out["score"] > 1
    t = filled.region(task="t")
    assert t["n"] == 6 and t["stats"]["radius"] > r["stats"]["radius"]


def test_clusters_recover_datasets(filled):
    res = filled.clusters(2)
    assert res["purity_dataset"] == 1.0 and res["n"] == 6
    ex = filled.clusters(2, exact=True)
    assert ex["exact"] and ex["purity_dataset"] == 1.0
    same = {(a["name"], b["name"]) for a in res["assignments"] for b in res["assignments"] if a["cluster"] == b["cluster"]}
    same_exact = {(a["name"], b["name"]) for a in ex["assignments"] for b in ex["assignments"] if a["cluster"] == b["cluster"]}
    assert same == same_exact
    with pytest.raises(ZooValueError, match="more than the 6"):
        filled.clusters(7)


def test_a_long_lived_process_reads_the_index_once_and_sees_other_writers(filled, home, monkeypatch):
    """zoo serve keeps its Zoo: the index is loaded once, and reloaded when another process
    (here another Zoo on the same home) rewrites its files."""
    from zoo.index import SpaceIndex

    loads = []
    real_load = SpaceIndex.load
    monkeypatch.setattr(SpaceIndex, "load", lambda self: loads.append(self.space_id) or real_load(self))
    filled.nearest("ft-a0", k=2, rerank=0)
    first = len(loads)
    for _ in range(3):
        filled.nearest("ft-a0", k=2, rerank=0)
    assert len(loads) == first  # served from memory
    Zoo(home).centroid(dataset="b", out="cen-b")  # another writer: the index files are rewritten
    got = [r["name"] for r in filled.nearest("cen-b", k=3, rerank=0)["results"]]
    assert set(got) == {"ft-b0", "ft-b1", "ft-b2"} and len(loads) > first  # the rewritten files were read again


def _pairs_zoo(seed: int) -> tuple[np.ndarray, list[str]]:
    """Ten datasets in three tasks, two seeds each: every model's nearest neighbour is its
    dataset's other seed, but two seeds lie as far apart as in the real zoo (cosine ~0.67)."""
    rng = np.random.default_rng(seed)
    dim, tasks = 512, [rng.normal(size=512) for _ in range(3)]
    x, labels = [], []
    for t, n_sets in enumerate((4, 3, 3)):
        for d in range(n_sets):
            data = rng.normal(size=dim)
            for _ in range(2):
                x.append(0.35 * tasks[t] + 0.55 * data + 0.75 * rng.normal(size=dim))
                labels.append(f"{t}-{d}")
    return np.array(x), labels


def test_kmeans_finds_regions_of_two_seeds():
    from zoo.geometry import kmeans, kmeans_restarts, purity

    few, full = [], []
    for seed in range(8):
        x, labels = _pairs_zoo(seed)
        g = x @ x.T / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(x, axis=1))
        np.fill_diagonal(g, -1)
        assert all(labels[i] == labels[int(np.argmax(g[i]))] for i in range(len(x)))  # 1-NN: the other seed
        full.append(purity(kmeans(x, 10, "cosine")[0], labels))
        few.append(purity(kmeans(x, 10, "cosine", restarts=3)[0], labels))
    assert full == [1.0] * 8
    assert min(few) < 1.0  # a few seeded runs are not enough: why the default affords many
    # The default number of runs: many for a zoo, few for 100k models.
    assert kmeans_restarts(20, 10, 1024) == 100 and kmeans_restarts(100_000, 100, 1024) == 3
    assert kmeans_restarts(2_000, 20, 1024) == 24 and kmeans_restarts(1, 1, 1) == 100


def test_exact_distance_close_to_sketch(filled):
    d = filled.distance("ft-a0", "ft-b1", exact=True)
    assert d["relative_error_l2"] < 6 * np.sqrt(1 / 1024)
    same = filled.distance("ft-a0", "ft-a0", exact=True)
    assert same["exact"]["l2"] == pytest.approx(0.0, abs=1e-9) and same["sketch"]["l2"] == 0.0


def test_bad_query_input(filled, ckpts):
    with pytest.raises(ZooValueError, match="positive integer"):
        filled.nearest("ft-a0", k=0)
    with pytest.raises(ZooValueError, match="positive integer"):
        filled.clusters(-1)
    with pytest.raises(EmptyRegion, match="dataset=zzz"):
        filled.region(dataset="zzz")
    with pytest.raises(FamilyMismatch, match="fits none.*base"):
        filled.nearest(str(ckpts["llama-ft"]))
    with pytest.raises(FamilyMismatch, match="fits none"):
        filled.inside(str(ckpts["llama-ft"]), dataset="a")
    with pytest.raises(ZooValueError, match="sketch dimension"):
        filled.space_add(dim=2)


def test_stale_index_is_rebuilt_after_crash(filled, ckpts, tmp_path, monkeypatch):
    from conftest import make_finetune

    idx = SpaceIndex(filled.index_dir, 1)
    assert idx.load() and idx.index.ntotal == 7
    # A process killed between the catalog commit and the index write.
    monkeypatch.setattr(Store, "sync_indexes", lambda self: None)
    p = make_finetune(ckpts["base"], tmp_path / "late", seed=77, direction_seed=2)
    filled.add([p], name="late", dataset="b")
    monkeypatch.undo()
    idx = SpaceIndex(filled.index_dir, 1)
    assert idx.load() and idx.index.ntotal == 7  # stale on disk
    res = Zoo(filled.home).nearest("ft-b0", k=3)
    assert "late" in [r["name"] for r in res["results"]]
    idx = SpaceIndex(filled.index_dir, 1)
    assert idx.load() and idx.index.ntotal == 8


def test_corrupt_index_file_and_reindex(filled):
    (filled.index_dir / "space_1.faiss").write_bytes(b"garbage")
    assert filled.nearest("ft-a0", k=1)["results"][0]["dataset"] == "a"
    out = filled.reindex()
    assert out == [{"space_id": 1, "count": 7, "index": "Flat"}]


def test_rm_removes_from_index(filled):
    filled.rm("ft-a1")
    idx = SpaceIndex(filled.index_dir, 1)
    assert idx.load() and idx.index.ntotal == 6
    assert "ft-a1" not in [r["name"] for r in filled.nearest("ft-a0", k=6)["results"]]


@pytest.mark.parametrize("n", [0, 10, FLAT_MAX, FLAT_MAX + 1, 100_000, 1_000_000, 10_000_000])
@pytest.mark.parametrize("dim", [256, 1024, 4096])
@pytest.mark.parametrize("budget", [1 << 30, 16 << 30])
def test_choose_index_grid(n, dim, budget):
    spec = choose_index(n, dim, budget)
    if n <= FLAT_MAX:
        assert spec.kind == "flat" and spec.factory == "Flat"
        return
    assert spec.kind in ("ivf", "ivfpq")
    assert spec.nlist & (spec.nlist - 1) == 0 and 39 * spec.nlist <= n and spec.nprobe <= spec.nlist
    if n * dim * 4 <= budget // 2:
        assert spec.kind == "ivf"
    else:
        m = int(spec.factory.split("PQ")[1])
        assert spec.kind == "ivfpq" and dim % m == 0 and n * m <= budget


def test_ivf_recall_on_clustered_data(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 30_000, 64
    centers = rng.normal(size=(200, d))
    x = (centers[rng.integers(0, 200, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    ids = np.arange(1, n + 1)
    spec = choose_index(n, d)
    assert spec.kind == "ivf"
    idx = SpaceIndex(tmp_path, 9)
    idx.build(ids, x, spec, {"count": n})
    q = x[:50]
    got, _ = idx.search(q, 10)
    hits = 0
    for row, qq in zip(got, q):
        want, _ = brute_force(qq, ids, x, 10, "cosine")
        hits += len(set(row.tolist()) & set(want.tolist()))
    assert hits / (50 * 10) >= 0.95


def test_bulk_vector_load_matches_row_by_row(filled):
    ids, x = _catalog_vectors(filled)
    assert ids.tolist() == sorted(ids.tolist()) and x.shape == (7, 1024)
    for i, row in zip(ids, x):
        _, rows = filled.sql(f"SELECT vec FROM sketches WHERE model_id = {int(i)} AND space_id = 1")
        np.testing.assert_array_equal(row, np.array(rows[0][0], dtype=np.float32))


def test_map_projects_and_draws(filled, tmp_path):
    from zoo.plot import project

    out = tmp_path / "map.png"
    res = filled.map(out, color_by="dataset", kind="finetune")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(res["points"]) == 6
    assert {p["dataset"] for p in res["points"]} == {"a", "b"}
    # PCA is exact: 2-D distances never exceed full-space distances, and the first axis
    # carries the largest share of variance.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 50)) + np.repeat(rng.normal(scale=5, size=(2, 50)), 10, axis=0)
    coords, explained = project(x)
    full = np.linalg.norm(x[:, None] - x[None], axis=-1)
    flat = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    assert np.all(flat <= full + 1e-9) and explained[0] >= explained[1] > 0
    assert coords[:10, 0].mean() * coords[10:, 0].mean() < 0  # the two groups split on PC1
    # The same axes, variance shares and distances as an SVD, whichever side is smaller.
    for m in (x, np.vstack([x] * 4)[:, :12]):
        c = m - m.mean(0)
        u, sv, _ = np.linalg.svd(c, full_matrices=False)
        got, share = project(m)
        assert share == pytest.approx(list(sv[:2] ** 2 / (sv ** 2).sum()), rel=1e-9)
        assert np.allclose(np.abs(got), np.abs(u[:, :2] * sv[:2]), atol=1e-8)
    with pytest.raises(ZooValueError, match="color-by"):
        filled.map(out, color_by="colour")


def test_flipped_bytes_in_an_index_are_caught_by_its_checksum(filled):
    want = filled.nearest("ft-a0", k=3).results
    path = filled.index_dir / "space_1.faiss"
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 4096, len(data) - 64, 97):  # inside the stored vectors: still a valid FAISS file
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not SpaceIndex(filled.index_dir, 1).load()
    got = filled.nearest("ft-a0", k=3).results
    assert [r["name"] for r in got] == [r["name"] for r in want]
    assert [r["distance"] for r in got] == pytest.approx([r["distance"] for r in want])
    assert all(0 <= r["distance"] <= 2 for r in got)
    assert SpaceIndex(filled.index_dir, 1).load()  # rebuilt whole


def test_neighbour_agreement_on_hand_made_distances():
    from zoo.geometry import neighbour_agreement

    # Points on a line at 0, 1, 3, 7: true neighbours by |a - b|.
    pos = np.array([0.0, 1.0, 3.0, 7.0])
    true = np.abs(pos[:, None] - pos[None, :])
    labels = ["x", "x", "y", "y"]
    same = neighbour_agreement(true, true, 1, labels)
    assert same == {"knn_overlap": 1.0, "nn1_same_dataset": 0.75, "spearman": pytest.approx(1.0)}
    # An estimate that swaps points 2 and 3: nearest of 0 and 1 unchanged, of 2 and 3 each other.
    swap = pos[[0, 1, 3, 2]]
    est = np.abs(swap[:, None] - swap[None, :])
    got = neighbour_agreement(est, true, 1, labels)
    # True 1-NN: 0->1, 1->0, 2->1, 3->2. Estimated: 0->1, 1->0, 2 (at 7)->3, 3 (at 3)->1.
    assert got["knn_overlap"] == pytest.approx(2 / 4) and got["nn1_same_dataset"] == pytest.approx(3 / 4)
    # Re-ranking every other point by the true distance gives the true answer back.
    assert neighbour_agreement(est, true, 1, labels, rerank=3)["knn_overlap"] == 1.0
    with pytest.raises(ZooValueError, match="cannot have 4 neighbours"):
        neighbour_agreement(true, true, 4, labels)


def test_fidelity_and_exact_rerank_agree_with_exact_distances(filled):
    names = sorted(m["name"] for m in filled.ls(kind="finetune"))
    exact = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            exact[a, b] = exact[b, a] = filled.distance(a, b, exact=True)["exact"]["cosine"]
    res = filled.fidelity(k=2, rerank=(5,))
    by = {r["setting"]: r for r in res["settings"]}
    assert res["n"] == 6 and res["k"] == 2 and by["exact"]["knn_overlap"] == 1.0
    assert by["exact"]["spearman"] == pytest.approx(1.0)
    true_nn1 = {a: min((b for b in names if b != a), key=lambda b: exact[a, b]) for a in names}
    want_same = sum(true_nn1[a][3] == a[3] for a in names) / 6  # ft-a0 -> dataset "a"
    assert by["exact"]["nn1_same_dataset"] == pytest.approx(want_same)
    sketch = next(r for s, r in by.items() if s.startswith("sketch") and "re-rank" not in s)
    assert 0.0 <= sketch["knn_overlap"] <= 1.0 and sketch["reads_models"] == 0
    reranked = next(r for s, r in by.items() if "re-rank of 5" in s)
    assert reranked["knn_overlap"] == 1.0 and reranked["reads_models"] == 6  # every other model re-ranked: exact
    default = next(r for s, r in by.items() if s.startswith("default query path"))
    assert default["knn_overlap"] == 1.0 and default["reads_models"] == 7  # 5 candidates (all), query, base
    # nearest --rerank returns the exact neighbours with their exact distances.
    got = filled.nearest("ft-a0", k=2, rerank=5)
    want = sorted((b for b in names if b != "ft-a0"), key=lambda b: exact["ft-a0", b])[:2]
    assert [r["name"] for r in got["results"]] == want and "re-ranked by exact distance" in got["search"]
    assert [r["distance"] for r in got["results"]] == pytest.approx([exact["ft-a0", b] for b in want], abs=1e-9)
    with pytest.raises(ZooValueError, match="--rerank"):
        filled.nearest("ft-a0", rerank=-1)
    with pytest.raises(EmptyRegion, match="needs at least 7"):
        filled.fidelity(k=6)


def test_auto_rerank_choice_on_a_grid():
    from zoo.queries import auto_rerank

    assert auto_rerank(5, [100] * 20, 10_000) == 10  # max(2k, 10)
    assert auto_rerank(8, [100] * 20, 10_000) == 16
    assert auto_rerank(5, [100] * 4, 10_000) == 4  # fewer candidates than that: all of them
    assert auto_rerank(5, [100] * 20, 999) == 0  # over the budget: the sketch answer
    assert auto_rerank(5, [100] * 20, 1000) == 10
    assert auto_rerank(5, [], 10_000) == 0


def test_default_nearest_is_exact_within_the_byte_budget(filled, monkeypatch):
    """By default the top candidates are re-ranked from the weights (exact distances); past
    ZOO_RERANK_BYTES the sketch answer comes back, saying why."""
    exact = filled.nearest("ft-a0", k=3, rerank=10)
    auto = filled.nearest("ft-a0", k=3)
    assert auto.results == exact.results and "re-ranked by exact distance" in auto.search
    monkeypatch.setenv("ZOO_RERANK_BYTES", "1000")
    sk = filled.nearest("ft-a0", k=3)
    assert sk.results == filled.nearest("ft-a0", k=3, rerank=0).results
    assert "no exact re-rank: reading 6 candidates exceeds ZOO_RERANK_BYTES=1000" in sk.search
