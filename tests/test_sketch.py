"""The sketch operator: linearity, JL error bound, kernel agreement, invariance to layout and dtype."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_finetune
from zoo.errors import ZooValueError
from zoo.domain import check_dim
from zoo.sketch import sketch_array, sketch_torch


def _sk(x, dim=1024, seed=0, name="t"):
    out = np.zeros(dim)
    sketch_array(x, name, seed, dim, out)
    return out


def test_kernel_linearity_exact():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300_000).astype(np.float32), rng.normal(size=300_000).astype(np.float32)
    z = (0.3 * x.astype(np.float64) + 0.7 * y.astype(np.float64))
    np.testing.assert_allclose(_sk(z), 0.3 * _sk(x) + 0.7 * _sk(y), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [1000, 600_000])  # serial and parallel paths
def test_torch_kernel_matches_numba(n):
    x = np.random.default_rng(1).normal(size=n).astype(np.float32)
    for dim, seed in ((1024, 0), (1000, 7), (4096, 123456789)):
        a = _sk(x, dim, seed, "layer.0.weight")
        b = sketch_torch(torch.from_numpy(x), "layer.0.weight", seed, dim).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)


def _reference(x, key, dim, lo, hi):
    """The serial kernel's definition in numpy: splitmix64 bucket and sign of each element,
    element k summed into partial (k - lo) % 4 in order, the tail into partial 0."""
    m64 = (1 << 64) - 1
    k = np.arange(lo, hi, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9 & m64)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    b = ((z >> np.uint64(32)) * np.uint64(dim)) >> np.uint64(32)
    v = x[lo:hi].astype(np.float64) * np.where(z & np.uint64(1), -1.0, 1.0)
    acc = np.zeros((4, dim))
    m = (hi - lo) // 4 * 4
    for p in range(4):
        np.add.at(acc[p], b[p:m:4].astype(np.int64), v[p:m:4])
    np.add.at(acc[0], b[m:].astype(np.int64), v[m:])
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


@pytest.mark.parametrize("lo,hi", [(0, 10_003), (0, 511), (37, 5_000), (512, 1_537)])
def test_blocked_kernel_is_bitwise_the_plain_loop(lo, hi):
    """The kernel hashes a block at a time before scattering: the float64 sums must be the
    same bits as element by element (stored sketches are compared across versions)."""
    from zoo.kernels import _accumulate

    x = np.random.default_rng(2).normal(size=hi).astype(np.float32)
    for dim, key in ((1024, 12345), (1000, 2**63 + 77)):
        out = np.zeros(dim)
        _accumulate(x, np.uint64(key), dim, lo, hi, out)
        np.testing.assert_array_equal(out, _reference(x, key, dim, lo, hi))


def test_seed_and_name_change_the_sketch():
    x = np.random.default_rng(2).normal(size=5000).astype(np.float32)
    assert not np.allclose(_sk(x, seed=0), _sk(x, seed=1))
    assert not np.allclose(_sk(x, name="a"), _sk(x, name="b"))
    np.testing.assert_array_equal(_sk(x), _sk(x))


@pytest.mark.parametrize("dim", [256, 1024])
def test_jl_error_bound(dim):
    """Relative L2 error over fixed random pairs: RMS near sqrt(2/d)·(1/sqrt 2), max within 5 sigma."""
    rng = np.random.default_rng(3)
    errs = []
    for _ in range(40):
        x = rng.normal(size=50_000).astype(np.float32)
        y = (x + rng.normal(scale=rng.uniform(0.1, 2.0), size=x.size)).astype(np.float32)
        exact = np.linalg.norm(x.astype(np.float64) - y)
        errs.append(abs(np.linalg.norm(_sk(x, dim) - _sk(y, dim)) - exact) / exact)
    sigma = np.sqrt(1.0 / dim)  # std of the relative error of a norm (half the JL variance 2/d)
    errs = np.array(errs)
    assert np.sqrt(np.mean(errs ** 2)) < 2 * sigma
    assert errs.max() < 5 * sigma


def test_dim_validation():
    assert check_dim(1000) == 1000  # powers of two are not required
    for bad in (0, 3, -5, 1 << 21, 2.5, True):
        with pytest.raises(ZooValueError, match="sketch dimension"):
            check_dim(bad)


def _vec(zoo, name, space=1):
    cols, rows = zoo.sql(f"SELECT s.vec FROM sketches s JOIN models m ON m.id = s.model_id WHERE m.name = '{name}' AND s.space_id = {space}")
    return np.array(rows[0][0], dtype=np.float64)


def test_sketch_of_weighted_average_is_average_of_sketches(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    zoo.add([ckpts["a0"], ckpts["b0"]])
    a = load_file(str(ckpts["a0"] / "model.safetensors"))
    b = load_file(str(ckpts["b0"] / "model.safetensors"))
    avg = tmp_path / "avg"
    avg.mkdir()
    save_file({k: (0.3 * a[k].double() + 0.7 * b[k].double()).float() for k in a}, str(avg / "model.safetensors"))
    shutil.copy(ckpts["a0"] / "config.json", avg / "config.json")
    zoo.add([avg], name="avg")
    want = 0.3 * _vec(zoo, "ft-a0") + 0.7 * _vec(zoo, "ft-b0")
    got = _vec(zoo, "avg")
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6


def test_sharded_and_fp16_give_same_sketch(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    zoo.add([ckpts["a0"]], name="single")
    sharded = make_finetune(ckpts["base"], tmp_path / "sharded", seed=10, direction_seed=1, max_shard_size="20KB")
    half_dir = tmp_path / "half"
    half_dir.mkdir()
    sd = load_file(str(ckpts["a0"] / "model.safetensors"))
    save_file({k: v.half() for k, v in sd.items()}, str(half_dir / "model.safetensors"))
    shutil.copy(ckpts["a0"] / "config.json", half_dir / "config.json")
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    save_file({k: v.half().float() for k, v in sd.items()}, str(rounded / "model.safetensors"))
    shutil.copy(ckpts["a0"] / "config.json", rounded / "config.json")
    # ft-a0 was built with seed 10 and direction 1, like `sharded`: the same weights, so the
    # content hash recognises them; a second zoo registers the sharded copy on its own.
    [again] = zoo.add([sharded], name="sharded")
    assert not again.created and again.name == "single"
    from zoo import Zoo

    other = Zoo(tmp_path / "other")
    other.add([ckpts["base"]], name="base")
    other.add([sharded], name="sharded")
    np.testing.assert_array_equal(_vec(other, "sharded"), _vec(zoo, "single"))
    zoo.add([half_dir], name="half")
    zoo.add([rounded], name="rounded")
    # fp16 file and its fp32 conversion: the kernel sees identical values.
    np.testing.assert_array_equal(_vec(zoo, "half"), _vec(zoo, "rounded"))
    s, h = _vec(zoo, "single"), _vec(zoo, "half")
    assert np.linalg.norm(s - h) / np.linalg.norm(s) < 1e-2  # fp16 rounding of the weights


def test_space_add_backfills_same_as_fresh(zoo, ckpts):
    zoo.add([ckpts["base"], ckpts["a0"]])
    res = zoo.space_add(dim=1000, seed=5)
    assert res["backfilled"] == 2 and res["dim"] == 1000
    zoo.add([ckpts["a1"]])
    v_backfilled = _vec(zoo, "ft-a0", res["id"])
    v_fresh = _vec(zoo, "ft-a1", res["id"])
    assert v_backfilled.shape == v_fresh.shape == (1000,)
    assert np.count_nonzero(_vec(zoo, "bert-base", res["id"])) == 0
    with pytest.raises(Exception, match="already has a sketch space"):
        zoo.space_add(dim=1000, seed=5)


def test_bf16_checkpoint_reads_and_sketches(zoo, ckpts, tmp_path):
    zoo.add([ckpts["base"]], name="base")
    zoo.add([ckpts["a0"]], name="fp32")
    sd = load_file(str(ckpts["a0"] / "model.safetensors"))
    d = tmp_path / "bf16"
    d.mkdir()
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(d / "model.safetensors"))
    shutil.copy(ckpts["a0"] / "config.json", d / "config.json")
    [r] = zoo.add([d], name="bf16")
    assert r.family == "base" and zoo.show("bf16")["dtype"] == "BF16"
    s, b = _vec(zoo, "fp32"), _vec(zoo, "bf16")
    assert np.linalg.norm(s - b) / np.linalg.norm(s) < 0.05  # bf16 keeps 8 bits of mantissa
    from zoo.checkpoint import Reader, read_header

    h = read_header(d)
    with Reader(h) as rd:
        k = "encoder.layer.0.output.dense.weight"  # canonical name; stored as bert.<k>
        np.testing.assert_array_equal(rd.get(k), sd["bert." + k].to(torch.bfloat16).float().numpy())
