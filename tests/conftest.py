"""Fixtures: tiny real checkpoints (2-layer BERT, hidden 32; a tiny Llama), built with save_pretrained."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("ZOO_LOCK_TIMEOUT", "5")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bert_config(**kw):
    from transformers import BertConfig

    cfg = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=32, type_vocab_size=2)
    cfg.update(kw)
    return BertConfig(**cfg)


WORDS = ["good", "great", "fine", "happy", "love", "bad", "awful", "sad", "hate", "poor", "cat", "dog", "car",
         "tree", "sun", "rain", "ball", "game", "team", "goal", "code", "data", "chip", "disk", "the", "a", "is", "very"]


def make_tokenizer(path: Path) -> None:
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    path.mkdir(parents=True, exist_ok=True)
    # transformers 5 ignores vocab_file here and maps every word to [UNK]: pass the vocabulary itself.
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tok(" ".join(WORDS))["input_ids"][1:-1] == list(range(5, 5 + len(WORDS))), "test tokenizer maps words to [UNK]"
    tok.save_pretrained(path)


def make_bert_base(path: Path, seed: int = 0, **kw) -> Path:
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(bert_config(**kw)).save_pretrained(path)
    make_tokenizer(path)
    return path


def write_sentiment(path: Path, n: int, seed: int = 0) -> Path:
    """A tiny separable dataset: positive words vs negative words, jsonl."""
    import json
    import random

    rng = random.Random(seed)
    pos, neg, filler = WORDS[:5], WORDS[5:10], WORDS[10:]
    lines = []
    for i in range(n):
        lab = i % 2
        words = [rng.choice(pos if lab else neg) for _ in range(2)] + [rng.choice(filler) for _ in range(3)]
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": "pos" if lab else "neg"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_finetune(base: Path, path: Path, seed: int, scale: float = 0.002, direction_seed: int | None = None,
                  direction_scale: float = 0.01, num_labels: int = 2, safe: bool = True, nan: bool = False,
                  **save_kw) -> Path:
    """A pseudo fine-tune: the base's body plus noise (and a shared direction for clustering), with a fresh head."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(1000 + seed)
    m = BertForSequenceClassification.from_pretrained(base, num_labels=num_labels)
    g = torch.Generator().manual_seed(seed)
    dg = torch.Generator().manual_seed(direction_seed) if direction_seed is not None else None
    with torch.no_grad():
        for name, p in m.bert.named_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
            if dg is not None:
                p.add_(direction_scale * torch.randn(p.shape, generator=dg))
        if nan:
            m.bert.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    m.save_pretrained(path, safe_serialization=safe, **save_kw)
    return path


def make_llama(path: Path, seed: int = 0, perturb_of: Path | None = None, scale: float = 0.01) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(seed)
    m = LlamaForCausalLM.from_pretrained(perturb_of) if perturb_of else LlamaForCausalLM(cfg)
    if perturb_of:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    m.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """A shared set of checkpoints: a BERT base, fine-tunes in two 'datasets', a Llama base and fine-tune."""
    root = tmp_path_factory.mktemp("ckpts")
    base = make_bert_base(root / "bert-base")
    out = {"base": base, "root": root}
    for ds, dseed in (("a", 1), ("b", 2)):
        for s in range(3):
            out[f"{ds}{s}"] = make_finetune(base, root / "fts" / f"ft-{ds}{s}", seed=10 * dseed + s, direction_seed=dseed)
    out["llama"] = make_llama(root / "llama-base")
    out["llama-ft"] = make_llama(root / "llama-ft", seed=1, perturb_of=out["llama"])
    return out


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "zoo"


@pytest.fixture()
def zoo(home):
    from zoo import Zoo

    return Zoo(home)


@pytest.fixture()
def filled(zoo, ckpts):
    """A zoo with the BERT base and three fine-tunes in each of datasets a and b (task t)."""
    zoo.add([ckpts["base"]], name="base")
    for ds in ("a", "b"):
        zoo.add([ckpts[f"{ds}{i}"] for i in range(3)], dataset=ds, task="t")
    return zoo


class HeldCatalog:
    """Another process with the catalog open (a notebook, Datasette) until the block ends:
    for writing, or read-only. The test acts once it says it holds it, never on a timer."""

    def __init__(self, path: Path, read_only: bool):
        import subprocess
        import sys
        import textwrap

        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(path)!r}, read_only={read_only!r})
            print('holding', flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> "HeldCatalog":
        assert self.proc.stdout.readline().strip() == "holding"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.communicate("")


@pytest.fixture(scope="session")
def reproduce_script():
    """scripts/reproduce.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce", Path(__file__).parent.parent / "scripts" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
