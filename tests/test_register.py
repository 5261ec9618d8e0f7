"""Registration: families, bases, lineage, duplicates, batches, bad input leaves no trace."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from conftest import make_bert_base, make_finetune
from zoo import Zoo
from zoo.errors import (AmbiguousBase, BadWeights, CheckpointError, Conflict, FamilyMismatch, NotFound, ReadOnlySQL,
                        ZooValueError)


def _count(z: Zoo) -> tuple[int, int, int]:
    cols, rows = z.sql("SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM sketches), (SELECT count(*) FROM lineage)")
    return rows[0]


def test_base_then_finetunes(zoo, ckpts):
    [b] = zoo.add([ckpts["base"]], name="base")
    assert b.created and b.kind == "base" and b.family == "base"
    res = zoo.add([ckpts["a0"], ckpts["a1"]], dataset="a", task="t")
    assert [r.kind for r in res] == ["finetune", "finetune"]
    assert [r.name for r in res] == ["ft-a0", "ft-a1"]
    shown = zoo.show("ft-a0")
    assert shown["family"] == "base" and shown["dataset"] == "a"
    assert shown["parents"] == [{"id": b.id, "name": "base", "relation": "finetuned_from", "weight": None}]
    assert sorted(m["name"] for m in zoo.show("base")["children"]) == ["ft-a0", "ft-a1"]
    assert shown["meta"]["head"] == ["classifier.bias", "classifier.weight"]
    assert [m["name"] for m in zoo.ls(dataset="a")] == ["ft-a0", "ft-a1"]
    assert zoo.ls(kind="base")[0]["name"] == "base"


def test_same_weights_twice_returns_existing(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    [first] = zoo.add([ckpts["a0"]])
    copy = tmp_path / "copy"
    shutil.copytree(ckpts["a0"], copy)
    [again] = zoo.add([copy], name="other-name")
    assert not again.created and again.id == first.id and "same weights" in again.note
    assert _count(zoo)[0] == 2


def test_directory_of_checkpoints(zoo, ckpts):
    zoo.add([ckpts["base"]])
    res = zoo.add([ckpts["root"] / "fts"])
    assert len(res) == 6 and all(r.created for r in res)


def test_base_in_same_batch_as_finetunes(zoo, ckpts):
    res = zoo.add([ckpts["base"], ckpts["a0"], ckpts["llama"], ckpts["llama-ft"]])
    assert [r.kind for r in res] == ["base", "finetune", "base", "finetune"]
    assert res[1].family == res[0].family and res[3].family == res[2].family != res[0].family


def test_base_flag_clash_changes_nothing(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    other = make_bert_base(tmp_path / "wide", hidden_size=48, intermediate_size=96)
    before = _count(zoo)
    with pytest.raises(FamilyMismatch, match="shape"):
        zoo.add([other], base="base")
    assert _count(zoo) == before


def test_several_bases_inferred_or_ambiguous(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base1")
    zoo.add([make_bert_base(tmp_path / "base2", seed=7)], name="base2", kind="base")
    [r] = zoo.add([ckpts["a0"]])
    assert zoo.show(r.name)["parents"][0]["name"] == "base1" and "inferred" in r.note
    # A checkpoint halfway between both bases cannot be attributed.
    a = load_file(str(ckpts["base"] / "model.safetensors"))
    b = load_file(str(tmp_path / "base2" / "model.safetensors"))
    mid = tmp_path / "mid"
    mid.mkdir()
    save_file({k: (a[k] + b[k]) / 2 for k in a}, str(mid / "model.safetensors"))
    shutil.copy(ckpts["base"] / "config.json", mid / "config.json")
    with pytest.raises(AmbiguousBase, match="base1.*base2|base2.*base1"):
        zoo.add([mid])
    [r2] = zoo.add([mid], base="base2")
    assert zoo.show(r2.name)["parents"][0]["name"] == "base2"


def test_nan_weights_refused(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]])
    bad = make_finetune(ckpts["base"], tmp_path / "nan", seed=3, nan=True)
    before = _count(zoo)
    with pytest.raises(BadWeights, match="NaN or Inf"):
        zoo.add([bad])
    assert _count(zoo) == before


def test_failed_batch_changes_nothing(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((ckpts["a0"] / "model.safetensors").read_bytes()[:1000])
    before = _count(zoo)
    with pytest.raises(CheckpointError):
        zoo.add([ckpts["a0"], bad])
    assert _count(zoo) == before


def test_unknown_name_and_readonly_sql(zoo, ckpts):
    zoo.add([ckpts["base"]], name="base")
    with pytest.raises(NotFound, match="no model named 'bsae'.*base"):
        zoo.show("bsae")
    for stmt in ("DELETE FROM models", "insert into models(name) values ('x')", "DROP TABLE models",
                 "WITH x AS (SELECT 1) DELETE FROM models"):
        with pytest.raises(ReadOnlySQL, match="read-only and refuses"):
            zoo.sql(stmt)
    assert _count(zoo)[0] == 1


def test_rm_refuses_parent_unless_forced(zoo, ckpts):
    zoo.add([ckpts["base"]], name="base")
    [ft] = zoo.add([ckpts["a0"]])
    with pytest.raises(Conflict, match="derive from"):
        zoo.rm("base")
    zoo.rm(ft.name)
    assert _count(zoo) == (1, 1, 0)
    with pytest.raises(Conflict, match="other model"):
        zoo.add([ckpts["a1"]]) and zoo.rm("base", force=True)
    zoo.rm("ft-a1")
    zoo.rm("base")
    assert _count(zoo) == (0, 0, 0)


def test_lineage_tree(zoo, ckpts):
    zoo.add([ckpts["base"]], name="base")
    zoo.add([ckpts["a0"]], name="child")
    # A grandchild registered against the child (e.g. a fine-tune started from it).
    zoo.add([ckpts["a1"]], name="grandchild", base="child")
    tree = zoo.lineage("grandchild")
    assert [(e["parent"], e["depth"]) for e in tree["ancestors"]] == [("child", 1), ("base", 2)]
    down = zoo.lineage("base")["descendants"]
    assert {(e["child"], e["depth"]) for e in down} == {("child", 1), ("grandchild", 2)}


def test_stock_duckdb_reads_same_rows(zoo, ckpts):
    zoo.add([ckpts["base"], ckpts["a0"]])
    con = duckdb.connect(str(zoo.catalog_path), read_only=True)
    rows = con.execute("SELECT name, kind FROM models ORDER BY id").fetchall()
    con.close()
    assert rows == [(m["name"], m["kind"]) for m in zoo.ls()]


def test_base_sketch_is_zero_and_finetune_not(zoo, ckpts):
    zoo.add([ckpts["base"], ckpts["a0"]])
    norms = dict(zoo.sql("SELECT m.name, s.norm FROM sketches s JOIN models m ON m.id = s.model_id")[1])
    assert norms["bert-base"] == 0.0 and norms["ft-a0"] > 0


def test_finetune_without_pooler_joins_family(zoo, ckpts, tmp_path):
    """A token-classification fine-tune has no pooler: the missing base tensors count as unchanged."""
    from safetensors.torch import load_file, save_file

    zoo.add([ckpts["base"]], name="base")
    sd = load_file(str(ckpts["a0"] / "model.safetensors"))
    nopool = tmp_path / "nopool"
    nopool.mkdir()
    save_file({k: v for k, v in sd.items() if "pooler" not in k}, str(nopool / "model.safetensors"))
    shutil.copy(ckpts["a0"] / "config.json", nopool / "config.json")
    [r] = zoo.add([nopool], name="nopool", dataset="a")
    assert r.kind == "finetune" and r.family == "base" and "counted as unchanged" in r.note
    [full] = zoo.add([ckpts["a0"]], name="full")
    # The pooler of a0 differs from the base's, so the sketches differ only by that tensor's delta.
    d = zoo.distance("nopool", "full", exact=True)
    assert d["exact"]["l2"] > 0 and abs(d["sketch"]["l2"] - d["exact"]["l2"]) / d["exact"]["l2"] < 0.3
    # Centroids fill the missing tensor from the base too, and load.
    res = zoo.centroid(names=["nopool", "full"], out="mix")
    out = load_file(str(zoo.checkpoints_dir / "mix" / "model.safetensors"))
    base_sd = load_file(str(ckpts["base"] / "model.safetensors"))
    k = "bert.pooler.dense.weight"
    np.testing.assert_allclose(out[k].numpy(), (base_sd["pooler.dense.weight"].double() / 2 + sd[k].double() / 2).numpy(),
                               rtol=1e-6, atol=1e-7)
    assert "head averaged" in res["note"]  # both carry the same classifier head


def test_same_name_same_weights_is_noop_but_new_weights_conflict(zoo, ckpts):
    [a] = zoo.add([ckpts["base"]], name="base")
    [b] = zoo.add([ckpts["base"]], name="base")
    assert not b.created and b.id == a.id
    with pytest.raises(Conflict, match="already exists"):
        zoo.add([ckpts["a0"]], name="base")
    assert _count(zoo)[0] == 1


def test_set_edits_metadata_and_nothing_else(zoo, ckpts):
    zoo.add([ckpts["base"]], name="base")
    [r] = zoo.add([ckpts["a0"]], dataset="a", task="t")
    again = zoo.add([ckpts["a0"]], dataset="other", task="u")  # same weights: recognised, metadata unchanged
    assert not again[0].created and "zoo set" in again[0].note and zoo.show("ft-a0")["dataset"] == "a"
    norm = zoo.show("ft-a0")["sketches"][0]["norm"]
    res = zoo.set("ft-a0", new_name="a-zero", dataset="b", task="", meta={"lr": "1e-5"})
    assert res.changed == {"name": {"old": "ft-a0", "new": "a-zero"}, "dataset": {"old": "a", "new": "b"},
                           "task": {"old": "t", "new": None},
                           "meta": {"old": res.changed["meta"]["old"], "new": dict(res.changed["meta"]["old"], lr="1e-5")}}
    m = zoo.show("a-zero")
    assert (m["id"], m["dataset"], m["task"], m["meta"]["lr"]) == (r.id, "b", None, "1e-5")
    assert m["sketches"][0]["norm"] == norm and zoo.nearest("a-zero", k=1).results[0]["name"] == "base"
    with pytest.raises(ZooValueError, match="nothing to change"):
        zoo.set("a-zero", dataset="b")
    with pytest.raises(Conflict, match="already exists"):
        zoo.set("a-zero", new_name="base")
    with pytest.raises(ZooValueError, match="members_key are zoo's own"):
        zoo.set("a-zero", meta={"members_key": "x"})
    with pytest.raises(ZooValueError, match="control characters"):
        zoo.set("a-zero", new_name="a\tb")
    with pytest.raises(NotFound):
        zoo.set("nope", task="t")


def test_moved_or_changed_checkpoints_are_named_and_relocatable(zoo, ckpts, tmp_path):
    import shutil

    from conftest import make_finetune
    from zoo.errors import SourceChanged

    zoo.add([ckpts["base"]], name="base")
    a = make_finetune(ckpts["base"], tmp_path / "a", seed=5)
    b = make_finetune(ckpts["base"], tmp_path / "b", seed=6)
    zoo.add([a, b], dataset="d", task="t", in_place=True)  # referenced where they are
    exact = zoo.distance("a", "b", exact=True).exact
    moved = tmp_path / "elsewhere" / "a"
    shutil.move(a, moved)
    for call in (lambda: zoo.distance("a", "b", exact=True), lambda: zoo.centroid(dataset="d"),
                 lambda: zoo.clusters(1, exact=True), lambda: zoo.space_add(dim=64)):
        with pytest.raises(SourceChanged, match=r"model 'a': .*a/model.safetensors is gone .*zoo relocate a NEW_PATH"):
            call()
    with pytest.raises(Conflict, match="holds other weights than model 'a'"):
        zoo.relocate("a", b)
    res = zoo.relocate("a", moved)
    assert res.changed["uri"] == {"old": str(a), "new": str(moved)} and zoo.show("a")["uri"] == str(moved)
    assert zoo.distance("a", "b", exact=True).exact == exact
    # Overwritten in place: refused, never a silent 0 or an internal error.
    shutil.rmtree(b)
    make_finetune(ckpts["base"], b, seed=7)
    with pytest.raises(SourceChanged, match=r"model 'b': .* changed since it was registered"):
        zoo.distance("a", "b", exact=True)
    with pytest.raises(SourceChanged, match="changed since it was registered"):
        zoo.centroid(names=["a", "b"])
    assert zoo.ls(kind="centroid") == []


def test_a_snapshot_reader_never_blocks_zoo(zoo, ckpts):
    import subprocess
    import sys
    import textwrap

    import duckdb

    zoo.add([ckpts["base"]], name="base")
    snap = zoo.snapshot()
    assert snap.path == str(zoo.home / "snapshot.duckdb") and snap.models == 1 and snap.refreshed_after_changes
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys
        con = duckdb.connect({snap.path!r}, read_only=True)
        print(con.execute("SELECT count(*) FROM models").fetchone()[0], flush=True)
        sys.stdin.readline()
        print(con.execute("SELECT count(*) FROM models").fetchone()[0], flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "1"
        zoo.add([ckpts["a0"], ckpts["a1"]], dataset="a", task="t")  # no wait: the reader holds only the snapshot
        out, _ = reader.communicate("\n")
    finally:
        if reader.poll() is None:
            reader.kill()
    assert out.strip() == "1"  # the open reader keeps its consistent view
    con = duckdb.connect(snap.path, read_only=True)
    try:  # a new reader sees the change, and the SQL surface works there too
        assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 3
        assert [r[0] for r in con.execute("SELECT name FROM zoo_nearest('ft-a0', 1)").fetchall()] == \
            [r["name"] for r in zoo.nearest("ft-a0", k=1).results]
    finally:
        con.close()
    other = zoo.snapshot(zoo.home.parent / "copy.duckdb")
    assert not other.refreshed_after_changes and other.models == 3


def test_the_zoo_owns_what_it_registers(zoo, ckpts, tmp_path):
    import json
    import shutil

    from conftest import make_finetune

    zoo.add([ckpts["base"]], name="base")
    a = make_finetune(ckpts["base"], tmp_path / "src" / "a", seed=5)
    b = make_finetune(ckpts["base"], tmp_path / "src" / "b", seed=6)
    ra, rb = zoo.add([a, b], dataset="d", task="t")
    m = zoo.show("a")
    stored = Path(m["uri"])
    assert stored == zoo.home / "weights" / m["content_hash"] and m["meta"]["registered_from"] == str(a)
    assert (stored / "model.safetensors").stat().st_ino == (a / "model.safetensors").stat().st_ino  # a hard link
    assert (stored / "config.json").is_file()
    rec = json.loads((stored / "zoo-record.json").read_text())
    assert (rec["name"], rec["id"], rec["dataset"], rec["content_hash"]) == ("a", ra.id, "d", m["content_hash"])
    before = zoo.distance("a", "b", exact=True).exact
    shutil.rmtree(tmp_path / "src")  # the sources are gone: no answer changes
    make_finetune(ckpts["base"], a, seed=99)  # and something else now lives at the old path
    assert zoo.distance("a", "b", exact=True).exact == before
    cen = zoo.centroid(dataset="d", out="cen")
    assert cen.created and Path(cen.path).parent == zoo.checkpoints_dir
    assert sorted(p.name for p in (zoo.home / "weights").iterdir()) == sorted(
        zoo.show(n)["content_hash"] for n in ("base", "a", "b"))  # no staging folders left
    zoo.rm("cen")
    b_hash = zoo.show("b")["content_hash"]
    assert zoo.rm("b").deleted_files == str(zoo.home / "weights" / b_hash)
    assert not (zoo.home / "weights" / b_hash).exists() and (zoo.home / "weights" / m["content_hash"]).is_dir()


def test_copied_or_linked_into_the_store_registers_the_same(ckpts, tmp_path, monkeypatch):
    """A staged checkpoint's header is reused when the store's files are the source's own
    (hard links, then a rename); copies are parsed again. Both give the same rows and sketches."""
    import zoo.files
    from conftest import make_finetune

    ft = make_finetune(ckpts["base"], tmp_path / "src" / "ft", seed=3)
    linked, copied = Zoo(tmp_path / "linked"), Zoo(tmp_path / "copied")
    for z in (linked, copied):
        z.add([ckpts["base"]], name="base")
    linked.add([ft], name="ft")

    def copy_only(src, dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        return False

    monkeypatch.setattr(zoo.files, "link_or_copy", copy_only)
    copied.add([ft], name="ft")
    a, b = linked.show("ft"), copied.show("ft")
    assert Path(a["uri"]) == linked.home / "weights" / a["content_hash"]
    assert Path(b["uri"]) == copied.home / "weights" / b["content_hash"] and a["content_hash"] == b["content_hash"]
    assert (Path(a["uri"]) / "model.safetensors").stat().st_ino == (ft / "model.safetensors").stat().st_ino
    assert (Path(b["uri"]) / "model.safetensors").stat().st_ino != (ft / "model.safetensors").stat().st_ino
    assert [f[0] for f in a["meta"]["files"]] == [str(Path(a["uri"]) / "model.safetensors")]
    assert [f[0] for f in b["meta"]["files"]] == [str(Path(b["uri"]) / "model.safetensors")]
    assert a["n_params"] == b["n_params"] and a["meta"]["head"] == b["meta"]["head"]
    assert linked.distance("base", "ft").sketch == copied.distance("base", "ft").sketch
    assert linked.distance("base", "ft", exact=True).exact == copied.distance("base", "ft", exact=True).exact
    assert sorted(p.name for p in (copied.home / "weights").iterdir()) == sorted(
        copied.show(n)["content_hash"] for n in ("base", "ft"))  # no staging folder left


def test_a_failed_add_leaves_nothing_in_the_store(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((ckpts["a1"] / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        zoo.add([ckpts["a0"], bad])
    assert sorted(p.name for p in (zoo.home / "weights").iterdir()) == [zoo.show("base")["content_hash"]]
    with pytest.raises(Conflict):
        zoo.add([ckpts["a0"]], name="base")  # the name is taken: found at commit, after the files came in
    assert sorted(p.name for p in (zoo.home / "weights").iterdir()) == [zoo.show("base")["content_hash"]]


def test_a_relative_home_stores_and_reads_model_folders(ckpts, tmp_path, monkeypatch):
    """`zoo --home myzoo add DIR` from the zoo's parent folder (a relative home): the folder is
    staged into the store, settled under its content hash and read back from there."""
    monkeypatch.chdir(tmp_path)
    z = Zoo("rel-zoo")
    assert z.store.home == tmp_path / "rel-zoo"
    z.add([ckpts["base"]], name="base")
    [res] = z.add([ckpts["a0"]], name="ft", dataset="a")
    uri = Path(z.show("ft")["uri"])
    assert uri.is_absolute() and (tmp_path / "rel-zoo" / "weights") in uri.parents and uri.exists()
    monkeypatch.chdir(tmp_path.parent)  # the zoo opened from elsewhere still finds its files
    assert Zoo(tmp_path / "rel-zoo").distance("ft", "base", exact=True)["exact"]["l2"] > 0  # reads both files
    assert [r["name"] for r in Zoo(tmp_path / "rel-zoo").ls()] == ["base", "ft"]


def test_a_moved_home_still_reads_its_weights(ckpts, tmp_path):
    """Locations in the store are recorded relative to it: the whole home copied elsewhere
    (times kept) answers exact queries from its own files."""
    import shutil

    from zoo import Zoo

    z = Zoo(tmp_path / "old")
    z.add([ckpts["base"]], name="base")
    z.add([ckpts["a0"], ckpts["a1"], ckpts["b0"]], dataset="a", task="t")
    assert {u for (u,) in z.sql("SELECT uri FROM models")[1]} == {
        f"weights/{h}" for (h,) in z.sql("SELECT content_hash FROM models")[1]}
    shutil.copytree(tmp_path / "old", tmp_path / "new", symlinks=True)
    shutil.rmtree(tmp_path / "old")
    moved = Zoo(tmp_path / "new")
    assert moved.show("ft-a0")["uri"].startswith(str(tmp_path / "new" / "weights"))
    near = moved.nearest("ft-a0", k=2, rerank=4)
    assert "exact" in near["search"] and len(near["results"]) == 2
