"""The streaming checkpoint reader: headers, formats, prefixes, hashes, bad files."""
from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_finetune
from zoo.checkpoint import ContentHash, read_header, stream
from zoo.errors import CheckpointError, NotFound, UnsafeCheckpoint


def _hash(path):
    h = read_header(path)
    ch = ContentHash()
    for info, t in stream(h):
        ch.update(info, t)
    return h, ch.hexdigest()


def test_header_reads_names_shapes_dtypes(ckpts):
    h = read_header(ckpts["base"])
    sd = load_file(str(ckpts["base"] / "model.safetensors"))
    assert {t.name for t in h.tensors} == set(sd)
    assert {t.name: t.shape for t in h.tensors} == {k: tuple(v.shape) for k, v in sd.items()}
    assert h.n_params == sum(v.numel() for v in sd.values() if v.is_floating_point())
    assert h.dtype == "F32" and h.prefix == ""


def test_task_model_prefix_is_stripped(ckpts):
    base, ft = read_header(ckpts["base"]), read_header(ckpts["a0"])
    assert ft.prefix == "bert"
    assert {t.canonical for t in base.tensors} <= {t.canonical for t in ft.tensors}
    assert {"classifier.weight", "classifier.bias"} <= {t.canonical for t in ft.tensors}


def test_decoder_family_reads(ckpts):
    h = read_header(ckpts["llama"])
    assert h.prefix == "model"
    assert any(t.canonical.startswith("layers.0.self_attn") for t in h.tensors)


def test_sharded_and_single_file_hash_equal(ckpts, tmp_path):
    sharded = make_finetune(ckpts["base"], tmp_path / "sharded", seed=11, direction_seed=1, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").exists()
    h1, d1 = _hash(sharded)
    h2, d2 = _hash(ckpts["a1"])
    assert h1.format == "safetensors-sharded" and len(h1.shards) > 1
    assert d1 == d2


def test_bin_checkpoint_reads_same_hash(ckpts, tmp_path):
    d = tmp_path / "binmodel"
    d.mkdir()
    sd = load_file(str(ckpts["a0"] / "model.safetensors"))
    torch.save(sd, d / "pytorch_model.bin")
    shutil.copy(ckpts["a0"] / "config.json", d / "config.json")
    assert _hash(d)[1] == _hash(ckpts["a0"])[1]


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_with_code_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    p = tmp_path / "evil.bin"
    if writer == "pickle":
        with open(p, "wb") as f:
            pickle.dump({"w": evil}, f)
    else:
        torch.save({"w": evil}, p)
    with pytest.raises(UnsafeCheckpoint, match="weights_only"):
        read_header(p)
    assert not marker.exists()


def test_truncated_and_corrupt_safetensors(tmp_path, ckpts):
    src = (ckpts["a0"] / "model.safetensors").read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(src[: len(src) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_header(trunc)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError):
        read_header(garbage)
    with pytest.raises(NotFound, match="does not exist"):
        read_header(tmp_path / "nope")


def test_fp16_file_reads(tmp_path, ckpts):
    sd = {k: v.half() for k, v in load_file(str(ckpts["a0"] / "model.safetensors")).items()}
    save_file(sd, str(tmp_path / "half.safetensors"))
    h = read_header(tmp_path / "half.safetensors")
    assert h.dtype == "F16"
    n = sum(1 for _ in stream(h))
    assert n == len(sd)
