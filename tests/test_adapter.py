"""LoRA adapters (PEFT) as models: registered in their base's family with the sketch of their
weight change, exact distances from factors, adapter centroids that PEFT loads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_finetune


def make_lora(base: Path, path: Path, seed: int, r: int = 4, alpha: float = 8, targets=("query", "value"),
              cls: bool = False, direction: int | None = None, twin: Path | None = None, **cfg) -> Path:
    """A real PEFT LoRA adapter with non-zero B (as after training); ``direction`` adds a
    shared component so adapters of one 'dataset' cluster. ``twin``: also save the merged model."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(base, num_labels=2) if cls else BertModel.from_pretrained(base)
    conf = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), task_type="SEQ_CLS" if cls else None, **cfg)
    pm = get_peft_model(model, conf)
    g = torch.Generator().manual_seed(seed)
    dg = torch.Generator().manual_seed(direction) if direction is not None else None
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n or "modules_to_save" in n or n.endswith("bias") and p.requires_grad:
                p.copy_(0.05 * torch.randn(p.shape, generator=g) + (0.2 * torch.randn(p.shape, generator=dg) if dg else 0))
    pm.save_pretrained(path)
    cfg_file = path / "adapter_config.json"
    c = json.loads(cfg_file.read_text())
    c["base_model_name_or_path"] = str(base)
    cfg_file.write_text(json.dumps(c))
    if twin is not None:
        pm.merge_and_unload().save_pretrained(twin)
    return path


def delta_of(adapter_dir: Path, base: Path) -> dict[str, np.ndarray]:
    """ΔW of an adapter computed by PEFT itself: merged weights minus the base's."""
    from peft import PeftModel
    from transformers import AutoModel

    m = PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter_dir).merge_and_unload()
    b = AutoModel.from_pretrained(base).state_dict()
    return {k: (v - b[k]).double().numpy() for k, v in m.state_dict().items() if k in b}


def cos(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    num = sum(float((a[k] * b[k]).sum()) for k in a)
    na = np.sqrt(sum(float((v * v).sum()) for v in a.values()))
    nb = np.sqrt(sum(float((v * v).sum()) for v in b.values()))
    return num / (na * nb)


@pytest.fixture(scope="module")
def loras(tmp_path_factory, ckpts):
    root = tmp_path_factory.mktemp("loras")
    base = ckpts["base"]
    out = {"base": base}
    for ds, d in (("x", 7), ("y", 8)):
        for s in range(3):
            out[f"{ds}{s}"] = make_lora(base, root / f"lora-{ds}{s}", seed=100 * d + s, direction=d)
    out["plain"] = make_lora(base, root / "plain", seed=1, twin=root / "plain-merged")
    out["plain-merged"] = root / "plain-merged"
    out["rs"] = make_lora(base, root / "rs", seed=2, r=3, alpha=5, targets=("query", "key", "dense"), use_rslora=True,
                          alpha_pattern={"key": 2.0}, twin=root / "rs-merged")
    out["rs-merged"] = root / "rs-merged"
    out["emb"] = make_lora(base, root / "emb", seed=3, r=2, targets=("word_embeddings", "query"), bias="lora_only",
                           twin=root / "emb-merged")
    out["emb-merged"] = root / "emb-merged"
    out["cls"] = make_lora(base, root / "cls", seed=4, cls=True)
    out["cls2"] = make_lora(base, root / "cls2", seed=5, cls=True)
    return out


@pytest.fixture()
def lzoo(zoo, loras):
    zoo.add([loras["base"]], name="base")
    return zoo


@pytest.mark.parametrize("variant", ["plain", "rs", "emb"])
def test_adapter_sketch_equals_its_merged_twin(lzoo, loras, variant):
    """Plain, rsLoRA with an alpha pattern and three module kinds, and an embedding with trained
    biases: the adapter's sketch is the merged model's, and the exact distance between them is 0."""
    [res] = lzoo.add([loras[variant]], name="ad")
    assert res.kind == "adapter" and res.family == "base"
    assert "base from adapter_config.json" in res.note
    [twin] = lzoo.add([loras[f"{variant}-merged"]], name="twin")
    assert twin.kind == "finetune"
    d = lzoo.distance("ad", "twin", exact=True)
    assert d.exact["norm_a"] > 0.1
    assert d.exact["l2"] <= 1e-5 * d.exact["norm_a"]
    assert d.sketch["l2"] <= 1e-5 * d.sketch["norm_a"]


def test_exact_distances_from_factors_equal_peft_deltas(lzoo, loras):
    lzoo.add([loras["x0"], loras["x1"], loras["y0"]])
    want = cos(delta_of(loras["x0"], loras["base"]), delta_of(loras["y0"], loras["base"]))
    got = lzoo.distance("lora-x0", "lora-y0", exact=True)
    assert got.exact["cosine"] == pytest.approx(1 - want, abs=1e-6)
    # the factor path (adapters only) and the dense path (a full model in the set) agree
    lzoo.add([loras["plain-merged"]], name="full")
    dense = lzoo.distance("lora-x0", "full", exact=True).exact["norm_a"]
    assert dense == pytest.approx(got.exact["norm_a"], rel=1e-6)


def test_nearest_among_adapters_agrees_with_exact_cosine(lzoo, loras):
    names = [f"{ds}{s}" for ds in "xy" for s in range(3)]
    lzoo.add([loras[n] for n in names])
    deltas = {n: delta_of(loras[n], loras["base"]) for n in names}
    for q in names:
        exact = sorted((n for n in names if n != q), key=lambda n: -cos(deltas[q], deltas[n]))
        got = [r["name"] for r in lzoo.nearest(f"lora-{q}", k=5, kind="adapter").results]
        # by sketch: the same two neighbours (its own 'dataset'); re-ranked exactly: the exact order
        assert set(got[:2]) == {f"lora-{n}" for n in exact[:2]}, q
        reranked = [r["name"] for r in lzoo.nearest(f"lora-{q}", k=5, kind="adapter", rerank=5).results]
        assert reranked == [f"lora-{n}" for n in exact]


def test_unregistered_adapter_path_is_a_query(lzoo, loras):
    lzoo.add([loras[f"x{s}"] for s in range(3)] + [loras[f"y{s}"] for s in range(2)])
    res = lzoo.nearest(str(loras["y2"]), k=2)
    assert not res.registered and {r["name"] for r in res.results} == {"lora-y0", "lora-y1"}


def test_exact_centroid_of_adapters_is_the_mean_delta_and_loads_with_peft(lzoo, loras):
    from peft import PeftModel
    from transformers import AutoModel

    lzoo.add([loras[f"x{s}"] for s in range(3)], dataset="x", task="t")
    res = lzoo.centroid(dataset="x")
    out = Path(res.path)
    assert (out / "adapter_config.json").is_file() and "exact, rank 12" in res.note
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 12 and cfg["lora_alpha"] == 12
    got = delta_of(out, loras["base"])
    parts = [delta_of(loras[f"x{s}"], loras["base"]) for s in range(3)]
    num = sum(float(((got[k] - sum(p[k] for p in parts) / 3) ** 2).sum()) for k in got)
    den = sum(float(((sum(p[k] for p in parts) / 3) ** 2).sum()) for k in got)
    assert np.sqrt(num / den) < 1e-4
    row = lzoo.show(res.name)
    assert row["kind"] == "centroid" and row["format"] == "peft-lora"
    # registered with a sketch equal to the members' mean (checked at registration) and loadable
    PeftModel.from_pretrained(AutoModel.from_pretrained(loras["base"]), out)
    # the same members again: the cached one
    assert not lzoo.centroid(dataset="x").created


def test_truncated_centroid_reports_its_error(lzoo, loras):
    lzoo.add([loras[f"x{s}"] for s in range(3)] + [loras["y0"]], task="t")
    exact = lzoo.centroid(task="t")
    low = lzoo.centroid(task="t", rank=2, out="low")
    assert "truncated to rank 2" in low.note
    err = lzoo.show("low")["meta"]["adapter_rel_error"]
    want = {k: v for k, v in delta_of(Path(exact.path), loras["base"]).items()}
    got = delta_of(Path(low.path), loras["base"])
    actual = np.sqrt(sum(float(((got[k] - want[k]) ** 2).sum()) for k in want) /
                     sum(float((want[k] ** 2).sum()) for k in want))
    assert 0 < err < 1 and actual == pytest.approx(err, rel=1e-3)
    full = lzoo.centroid(task="t", rank=16, out="full-rank")  # a rank above the total is exact: the same model
    assert not full.created and full.name == exact.name


def test_merged_and_mixed_centroids_are_full_checkpoints(lzoo, loras, ckpts):
    from safetensors.numpy import load_file

    lzoo.add([loras["plain"]], name="ad")
    lzoo.add([loras["plain-merged"]], name="twin")
    merged = lzoo.centroid(names=["ad"], merged=True, out="ad-merged")
    assert (Path(merged.path) / "model.safetensors").is_file()
    a = load_file(str(Path(merged.path) / "model.safetensors"))
    b = load_file(str(loras["plain-merged"] / "model.safetensors"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6
    lzoo.add([ckpts["a0"]], name="ft")
    mixed = lzoo.centroid(names=["ad", "ft"], out="mixed")
    assert (Path(mixed.path) / "model.safetensors").is_file()
    d = lzoo.distance("mixed", "ad", exact=True)
    half = lzoo.distance("ft", "ad", exact=True)
    assert d.exact["l2"] == pytest.approx(half.exact["l2"] / 2, rel=1e-5)


def test_heads_of_classifier_adapters(lzoo, loras):
    """modules_to_save (the classifier) is a head: not sketched, averaged when the members share it."""
    from peft import PeftModel
    from transformers import BertForSequenceClassification

    lzoo.add([loras["cls"], loras["cls2"]])
    assert lzoo.show("cls")["meta"]["head"] == ["base_model.model.classifier.bias", "base_model.model.classifier.weight"]
    res = lzoo.centroid(names=["cls", "cls2"])
    m = PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(loras["base"], num_labels=2),
                                  res.path)
    sd = {k: v for k, v in m.state_dict().items() if "classifier" in k and "modules_to_save" in k and "weight" in k}
    from safetensors.numpy import load_file

    heads = [load_file(str(loras[n] / "adapter_model.safetensors"))["base_model.model.classifier.weight"]
             for n in ("cls", "cls2")]
    assert np.allclose(next(iter(sd.values())).numpy(), (heads[0] + heads[1]) / 2, atol=1e-6)


def test_adapter_refusals(lzoo, loras, tmp_path, ckpts):
    from zoo.errors import CheckpointError, FamilyMismatch, NotFound, ZooValueError

    bad = tmp_path / "ia3"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    (bad / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="adapter type 'IA3' is not supported"):
        lzoo.add([bad])
    dora = tmp_path / "dora"
    make_lora(loras["base"], dora, seed=9, use_dora=True)
    with pytest.raises(CheckpointError, match="use_dora is set"):
        lzoo.add([dora])
    orphan = tmp_path / "orphan"
    make_lora(loras["base"], orphan, seed=9)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "acme/never-registered"
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(NotFound, match="'acme/never-registered' .* is not in this zoo; register the base first"):
        lzoo.add([orphan])
    with pytest.raises(ZooValueError, match="cannot be a base"):
        lzoo.add([loras["plain"]], kind="base")
    lzoo.add([ckpts["llama"]], name="llama", kind="base")
    with pytest.raises(FamilyMismatch, match=f"^{loras['plain']}: none of the adapter's 4 target modules .* family 'llama'"):
        lzoo.add([loras["plain"]], base="llama")
    assert [m["name"] for m in lzoo.ls()] == ["base", "llama"]  # nothing half-registered


def test_adapter_base_by_given_name_and_by_repo_id(lzoo, loras, tmp_path):
    from zoo.errors import ZooValueError

    [res] = lzoo.add([loras["x0"]], base="base", name="given")
    assert "base given" in res.note and lzoo.show("given")["meta"]["adapter_parent"] == lzoo.show("base")["id"]
    # an adapter whose config names the base by repo id: found through the recorded hub meta
    lzoo.set("base", meta={"note_for_test": "x"})
    repo = tmp_path / "by-repo"
    make_lora(loras["base"], repo, seed=11)
    cfg = json.loads((repo / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "base"
    (repo / "adapter_config.json").write_text(json.dumps(cfg))
    assert lzoo.add([repo])[0].created
    # an adapter on an adapter is refused with the fix
    with pytest.raises(ZooValueError, match="itself an adapter"):
        lzoo.add([loras["x1"]], base="given")


def test_adapter_on_a_finetune_carries_its_parents_delta(lzoo, loras, ckpts, tmp_path):
    lzoo.add([ckpts["a0"]], name="ft")
    ad = make_lora(ckpts["a0"], tmp_path / "on-ft", seed=12)
    [res] = lzoo.add([ad], base="ft")
    assert res.created
    # its task vector relative to the family base: the fine-tune's plus its own change
    d = lzoo.distance("on-ft", "ft", exact=True)
    own = np.sqrt(sum(float((v ** 2).sum()) for v in delta_of(ad, ckpts["a0"]).values()))
    assert d.exact["l2"] == pytest.approx(own, rel=1e-4)
    assert d.sketch["l2"] == pytest.approx(own, rel=0.3)


def test_gpt2_fan_in_fan_out_adapter(zoo, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    g = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32))
    g.save_pretrained(tmp_path / "gpt2")
    pm = get_peft_model(g, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    pm.save_pretrained(tmp_path / "lora")
    pm.merge_and_unload().save_pretrained(tmp_path / "merged")
    zoo.add([tmp_path / "gpt2"], name="gpt2")
    zoo.add([tmp_path / "lora"], name="ad", base="gpt2")
    zoo.add([tmp_path / "merged"], name="twin")
    d = zoo.distance("ad", "twin", exact=True)
    assert d.exact["norm_a"] > 0.01 and d.exact["l2"] <= 1e-5 * d.exact["norm_a"]
    res = zoo.centroid(names=["ad"], out="self")  # a one-member adapter centroid: written back transposed right
    assert zoo.distance("self", "twin", exact=True).exact["l2"] <= 1e-5 * d.exact["norm_a"]
    assert json.loads((Path(res.path) / "adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_cli_adapter_round_trip(home, loras, tmp_path):
    from click.testing import CliRunner

    from zoo.cli.main import main

    run = CliRunner()
    env = {"ZOO_HOME": str(home)}
    assert run.invoke(main, ["add", str(loras["base"]), "--name", "base"], env=env).exit_code == 0
    r = run.invoke(main, ["add", str(loras["x0"]), str(loras["x1"]), "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert {x["kind"] for x in json.loads(r.output)} == {"adapter"}
    r = run.invoke(main, ["centroid", "lora-x0", "lora-x1", "--rank", "0"], env=env)
    assert r.exit_code == 2 and "--rank 0 must be a whole number >= 1" in r.output
    r = run.invoke(main, ["centroid", "lora-x0", "lora-x1", "--rank", "3", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert "truncated to rank 3" in json.loads(r.output)["note"]
    r = run.invoke(main, ["export", json.loads(r.output)["name"], str(tmp_path / "exp")], env=env)
    assert r.exit_code == 0 and (tmp_path / "exp" / "adapter_config.json").is_file()


def test_lora_finetune_registers_an_adapter_and_continues_from_one(lzoo, loras, tmp_path):
    from conftest import write_sentiment

    train = write_sentiment(tmp_path / "senti.jsonl", 32)
    dev = write_sentiment(tmp_path / "dev.jsonl", 16, seed=1)
    res = lzoo.finetune("base", train, eval=dev, method="lora", lora_rank=2, epochs=2, batch_size=8, out="l1")
    row = lzoo.show("l1")
    assert row["kind"] == "adapter" and row["format"] == "peft-lora"
    assert 0 <= res.metrics["eval_accuracy"] <= 1
    assert row["meta"]["id2label"] == {"0": "neg", "1": "pos"}
    # the head saved with it scores the data through `zoo eval`, loaded by zoo's own merge
    [ev] = lzoo.evaluate_many(["l1"], dev)
    assert ev.score["how"] == "head" and ev.score["value"] == pytest.approx(res.metrics["eval_accuracy"])
    # continuing from the adapter: one adapter on the same parent, rank 2 + 2, lineage to the start
    lzoo.finetune("l1", train, method="lora", lora_rank=2, epochs=1, batch_size=8, out="l2")
    cfg = json.loads((Path(lzoo.show("l2")["uri"]) / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and lzoo.show("l2")["meta"]["adapter_parent"] == lzoo.show("base")["id"]
    assert [(e["parent"], e["relation"]) for e in lzoo.lineage("l2").ancestors if e["depth"] == 1] == [("l1", "finetuned_from")]
    # the full method from an adapter start: a full checkpoint, fine-tuned from the adapter
    lzoo.finetune("l1", train, epochs=1, batch_size=8, out="f1")
    assert lzoo.show("f1")["kind"] == "finetune"
    with pytest.raises(Exception, match="--lora-rank must be a whole number"):
        lzoo.finetune("base", train, method="lora", lora_rank=0)


def test_decoder_trains_on_plain_text_and_reports_perplexity(zoo, ckpts, tmp_path):
    from conftest import WORDS, make_tokenizer

    import shutil

    base = tmp_path / "llama"
    shutil.copytree(ckpts["llama"], base)
    make_tokenizer(base)  # 33 tokens: fits the tiny Llama's vocabulary of 64
    rng = np.random.default_rng(0)
    text = tmp_path / "text.jsonl"
    text.write_text("\n".join(json.dumps({"text": " ".join(rng.choice(WORDS[:8], 6))}) for _ in range(48)) + "\n")
    zoo.add([base], name="llama", kind="base")
    [before] = zoo.evaluate_many(["llama"], text)
    assert before.score["metric"] == "perplexity" and before.score["value"] > 1
    res = zoo.finetune("llama", text, eval=text, epochs=3, batch_size=8, lr=3e-3, out="lm")
    assert res.metrics["eval_perplexity"] < before.score["value"]
    assert zoo.show("lm")["kind"] == "finetune"
    lora = zoo.finetune("llama", text, eval=text, method="lora", epochs=3, batch_size=8, lr=3e-3, out="lm-lora")
    assert zoo.show("lm-lora")["kind"] == "adapter"
    [after] = zoo.evaluate_many(["lm-lora"], text)
    assert after.score["value"] == pytest.approx(lora.metrics["eval_perplexity"], rel=1e-4)
    assert after.score["value"] < before.score["value"]
    evs = zoo.sql("SELECT metric FROM evaluations e JOIN models m ON m.id = e.model_id WHERE m.name = 'lm'")[1]
    assert sorted(r[0] for r in evs) == ["loss", "perplexity"]
    # a classifier family refuses plain text, naming the fix
    bert = tmp_path / "bert"
    shutil.copytree(ckpts["base"], bert)
    zoo.add([bert], name="bert", kind="base")
    with pytest.raises(Exception, match="needs a decoder family"):
        zoo.finetune("bert", text, family="bert")


def test_folders_travel_with_support_files_card_and_recipe(zoo, ckpts, loras, tmp_path):
    """A centroid carries the base's support files (sentence-transformers modules, generation
    config), a model card with base_model / base_model_relation and a mergekit recipe; zoo add of
    a mergekit output records its inputs as lineage with normalised weights."""
    import shutil

    import yaml

    base = tmp_path / "st-base"
    shutil.copytree(ckpts["base"], base)
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (base / "modules.json").write_text('[{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}]')
    (base / "generation_config.json").write_text("{}")
    zoo.add([base], name="st", kind="base")
    zoo.add([ckpts["a0"], ckpts["a1"]], dataset="a")
    res = zoo.centroid(dataset="a", weights=[1, 3], out="mix")
    out = Path(res.path)
    for f in ("1_Pooling/config.json", "modules.json", "generation_config.json", "tokenizer.json"):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model_relation"] == "merge" and sorted(front["base_model"]) == ["ft-a0", "ft-a1"]
    recipe = yaml.safe_load((out / "mergekit_config.yml").read_text())
    assert recipe["merge_method"] == "linear" and [m["parameters"]["weight"] for m in recipe["models"]] == [0.25, 0.75]
    # a mergekit output (here: the same folder, copied as another tool would write it) with raw weights
    ext = tmp_path / "ext"
    shutil.copytree(out, ext)
    recipe["parameters"] = {"normalize": True}
    for m, w in zip(recipe["models"], (2, 6)):
        m["parameters"]["weight"] = w
    (ext / "mergekit_config.yml").write_text(yaml.safe_dump(recipe))
    import numpy as np
    from safetensors.numpy import load_file, save_file

    t = load_file(str(ext / "model.safetensors"))
    save_file({k: v + np.float32(1e-3) for k, v in t.items()}, str(ext / "model.safetensors"), metadata={"format": "pt"})
    [r] = zoo.add([ext], name="ext")
    assert r.kind == "centroid"
    edges = {(e["parent"], e["relation"], round(e["weight"], 6)) for e in zoo.lineage("ext").ancestors if e["depth"] == 1}
    assert edges == {("ft-a0", "averaged_from", 0.25), ("ft-a1", "averaged_from", 0.75)}
    # a non-linear method with an input the zoo does not hold
    recipe.update(merge_method="ties")
    recipe["models"].append({"model": "acme/elsewhere", "parameters": {"weight": 1.0}})
    (ext / "mergekit_config.yml").write_text(yaml.safe_dump(recipe))
    save_file({k: v + np.float32(2e-3) for k, v in t.items()}, str(ext / "model.safetensors"), metadata={"format": "pt"})
    [r] = zoo.add([ext], name="ties")
    assert r.kind == "external"
    row = zoo.show("ties")
    assert row["meta"]["merge_recipe"]["unresolved"] == ["acme/elsewhere"]
    assert {e["relation"] for e in zoo.lineage("ties").ancestors if e["depth"] == 1} == {"merged_from"}


def test_adapter_centroid_card_names_its_parent(lzoo, loras):
    import yaml

    lzoo.add([loras["x0"], loras["x1"]])
    res = lzoo.centroid(names=["lora-x0", "lora-x1"])
    front = yaml.safe_load((Path(res.path) / "README.md").read_text().split("---")[1])
    assert front == {"base_model": "base", "base_model_relation": "adapter", "library_name": "peft",
                     "tags": ["zoo", "adapter"]}
    assert (Path(res.path) / "tokenizer.json").is_file() and not (Path(res.path) / "mergekit_config.yml").exists()


def test_llama_adapters_register_merge_and_load_with_peft(zoo, ckpts, tmp_path):
    """A decoder's adapters (q_proj/v_proj on a tiny Llama, CAUSAL_LM): the sketch and exact
    distance match the merged twin, and their exact centroid loads with PEFT as the mean ΔW."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    def lora(seed: int, twin: Path | None = None) -> Path:
        torch.manual_seed(seed)
        pm = get_peft_model(AutoModelForCausalLM.from_pretrained(ckpts["llama"]),
                            LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        pm.save_pretrained(tmp_path / f"l{seed}")
        if twin is not None:
            pm.merge_and_unload().save_pretrained(twin)
        return tmp_path / f"l{seed}"

    def delta(adapter: Path) -> dict[str, np.ndarray]:
        base = AutoModelForCausalLM.from_pretrained(ckpts["llama"]).state_dict()
        m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ckpts["llama"]), adapter).merge_and_unload()
        return {k: (v - base[k]).double().numpy() for k, v in m.state_dict().items()}

    zoo.add([ckpts["llama"]], name="llama")
    zoo.add([lora(1, twin=tmp_path / "twin"), lora(2)])  # the base found from base_model_name_or_path (its path)
    zoo.add([tmp_path / "twin"], name="twin")
    d = zoo.distance("l1", "twin", exact=True)
    assert d.exact["norm_a"] > 0.01 and d.exact["l2"] <= 1e-5 * d.exact["norm_a"]
    res = zoo.centroid(names=["l1", "l2"])
    got, parts = delta(Path(res.path)), [delta(tmp_path / f"l{s}") for s in (1, 2)]
    num = sum(float(((got[k] - (parts[0][k] + parts[1][k]) / 2) ** 2).sum()) for k in got)
    den = sum(float((((parts[0][k] + parts[1][k]) / 2) ** 2).sum()) for k in got)
    assert np.sqrt(num / den) < 1e-4


def test_space_add_relocate_and_export_cover_adapters(lzoo, loras, tmp_path):
    """A new space backfills adapters (parent + B·A, equal to their merged twins there too);
    relocate re-verifies an adapter by its hash; export copies the adapter folder."""
    import shutil

    lzoo.add([loras["emb"]], name="ad", in_place=True)
    lzoo.add([loras["emb-merged"]], name="twin")
    sid = lzoo.space_add(dim=256, seed=5).id
    d = lzoo.distance("ad", "twin", space=sid)
    assert d.sketch["norm_a"] > 0.1 and d.sketch["l2"] <= 1e-5 * d.sketch["norm_a"]
    moved = tmp_path / "moved"
    shutil.copytree(loras["emb"], moved)
    assert lzoo.relocate("ad", moved).changed["uri"]["new"] == str(moved.resolve())
    exact = lzoo.distance("ad", "twin", exact=True).exact  # read from the new place
    assert exact["l2"] <= 1e-5 * exact["norm_a"]
    other = tmp_path / "other"
    shutil.copytree(loras["plain"], other)
    with pytest.raises(Exception, match="holds other weights"):
        lzoo.relocate("ad", other)


def test_doctor_rebuilds_adapters_from_their_records(lzoo, loras, ckpts, tmp_path):
    import shutil

    from zoo import Zoo

    lzoo.add([ckpts["a0"]], name="ft")
    lzoo.add([make_lora(ckpts["a0"], tmp_path / "on-ft", seed=12)], base="ft", name="on-ft")
    lzoo.add([loras["x0"], loras["x1"]])
    cen = lzoo.centroid(names=["lora-x0", "lora-x1"], out="cen")
    before = {n: lzoo.distance(n, "ft").sketch["l2"] for n in ("on-ft", "lora-x0", "cen")}
    (lzoo.home / "catalog.duckdb").unlink()
    shutil.rmtree(lzoo.home / "index")
    z = Zoo(lzoo.home)
    assert z.doctor(repair=True).ok
    assert {n: z.distance(n, "ft").sketch["l2"] for n in before} == pytest.approx(before, rel=1e-6)
    assert z.show("on-ft")["meta"]["adapter_parent"] == z.show("ft")["id"]
    assert z.show("cen")["format"] == "peft-lora" and Path(z.show("cen")["uri"]) == Path(cen.path)
