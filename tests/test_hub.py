"""The Hugging Face cache, offline: repo ids, cache folders and snapshot folders as checkpoints."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from zoo import Zoo
from zoo.errors import NotFound, ZooValueError

C1, C2 = "1" * 40, "2" * 40


def cache_repo(cache: Path, repo: str, src: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put a checkpoint folder into a cache laid out as huggingface_hub writes it: files in
    blobs/ by hash, snapshots/<commit>/ of symlinks to them, refs/<name> holding the commit."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    for ref in refs:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return folder


@pytest.fixture()
def run(home):
    from click.testing import CliRunner

    from zoo.cli.main import main

    def _run(*args, code=0):
        res = CliRunner().invoke(main, ["--home", str(home), *map(str, args)])
        assert res.exit_code == code, (res.output, res.stderr)
        return res
    return _run


@pytest.fixture()
def cache(tmp_path, ckpts, monkeypatch):
    root = tmp_path / "hf-cache"
    cache_repo(root, "acme/tiny-bert", ckpts["base"], C1)
    cache_repo(root, "acme/tiny-ft", ckpts["a0"], C1)
    cache_repo(root, "acme/tiny-ft", ckpts["a1"], C2, refs=("v2",))
    cache_repo(root, "acme/tiny-llama", ckpts["llama"], C1)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return root


def test_repo_ids_cache_and_snapshot_folders_resolve_offline(zoo, cache):
    [base] = zoo.add(["acme/tiny-bert"], kind="base")
    assert base["name"] == "tiny-bert" and base["created"]
    assert zoo.show("tiny-bert")["meta"]["hub"] == {"repo_id": "acme/tiny-bert", "revision": C1}
    [ft] = zoo.add(["acme/tiny-ft"], dataset="a")  # refs/main -> C1
    assert ft["name"] == "tiny-ft" and ft["family"] == "tiny-bert" and ft["kind"] == "finetune"
    assert zoo.show("tiny-ft")["meta"]["hub"] == {"repo_id": "acme/tiny-ft", "revision": C1}
    [v2] = zoo.add(["acme/tiny-ft@v2"])  # a ref name
    assert v2["name"] == "tiny-ft-2" and zoo.show("tiny-ft-2")["meta"]["hub"]["revision"] == C2
    # The same snapshots given as the cache folder, a snapshot folder or a commit: the models there.
    assert not zoo.add([cache / "models--acme--tiny-ft"])[0]["created"]
    [again] = zoo.add([cache / "models--acme--tiny-ft" / "snapshots" / C2])
    assert again["name"] == "tiny-ft-2" and not again["created"]
    assert not zoo.add([f"acme/tiny-ft@{C2}"])[0]["created"]
    # The registered files are the zoo's own: the cache can go.
    shutil.rmtree(cache)
    assert zoo.distance("tiny-ft", "tiny-ft-2", exact=True)["exact"]["l2"] > 0


def test_what_is_not_in_the_cache_is_refused_by_name(zoo, cache):
    with pytest.raises(NotFound, match="acme/nope is not in the Hugging Face cache .*never downloads.*huggingface-cli download acme/nope"):
        zoo.add(["acme/nope"])
    with pytest.raises(NotFound, match=r"acme/tiny-ft@v9 is not in the Hugging Face cache"):
        zoo.add(["acme/tiny-ft@v9"])
    with pytest.raises(NotFound, match="no file or folder 'runs/model1'"):
        zoo.add(["runs/model1"])
    shutil.rmtree(cache / "models--acme--tiny-ft" / "refs")  # two snapshots, no main: which one is the user's call
    with pytest.raises(ZooValueError, match="2 cached snapshots and no main ref.*acme/tiny-ft@<revision>"):
        zoo.add(["acme/tiny-ft"])
    assert zoo.ls() == []


def test_scan_cache_adds_what_fits_a_family(zoo, cache, run):
    with pytest.raises(ZooValueError, match="no family yet"):
        zoo.add_from_cache()
    zoo.add([cache / "models--acme--tiny-bert"], kind="base")
    res = zoo.add_from_cache(dataset="a")
    added = {a["repo_id"]: a for a in res["added"]}
    assert set(added) == {"acme/tiny-bert", "acme/tiny-ft"} and not added["acme/tiny-bert"]["created"]
    assert added["acme/tiny-ft"]["created"] and added["acme/tiny-ft"]["revision"] == C1
    assert [s["repo_id"] for s in res["skipped"]] == ["acme/tiny-llama"] and "fits none" in res["skipped"][0]["why"]
    assert zoo.show("tiny-ft")["dataset"] == "a"
    out = json.loads(run("add", "--scan-cache", "--json").stdout)
    assert out["cache"] == str(cache) and [a["created"] for a in out["added"]] == [False, False]
    assert "give PATHS to register, or --scan-cache alone" in run("add", code=2).stderr
    assert "give PATHS to register, or --scan-cache alone" in run("add", "x", "--scan-cache", code=2).stderr


def test_adapters_in_the_cache_find_their_base_by_repo_id(zoo, cache, ckpts, tmp_path):
    """An adapter whose config names its base by repo id: `zoo add org/name` and --scan-cache
    register it on the base the zoo took from the cache (its recorded repo id)."""
    from test_adapter import make_lora

    lora = make_lora(ckpts["base"], tmp_path / "lora", seed=3)
    cfg = json.loads((lora / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "acme/tiny-bert"
    (lora / "adapter_config.json").write_text(json.dumps(cfg))
    cache_repo(cache, "acme/tiny-lora", lora, C2)
    zoo.add(["acme/tiny-llama"], kind="base")  # a family, but not the adapter's
    res = zoo.add_from_cache()
    assert all(a["repo_id"] != "acme/tiny-lora" for a in res["added"])
    why = next(s["why"] for s in res["skipped"] if s["repo_id"] == "acme/tiny-lora")
    assert "'acme/tiny-bert' (base_model_name_or_path) is not in this zoo" in why
    zoo.add(["acme/tiny-bert"], kind="base")
    [r] = zoo.add(["acme/tiny-lora"])
    assert r.kind == "adapter" and r.name == "tiny-lora"
    row = zoo.show("tiny-lora")
    assert row["meta"]["hub"]["repo_id"] == "acme/tiny-lora" and row["meta"]["adapter_parent"] == zoo.show("tiny-bert")["id"]
    assert any(a["repo_id"] == "acme/tiny-lora" and not a["created"] for a in zoo.add_from_cache()["added"])
