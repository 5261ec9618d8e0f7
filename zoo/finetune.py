"""Fine-tuning and evaluation with transformers (CUDA when present), on a lean training loop.

Why not ``transformers.Trainer``: it needs ``accelerate`` and brings logging, checkpointing
and distributed machinery that zoo's short sequence-classification runs do not use; a
40-line loop gives exact control of seeding, device and what is saved, and fails in
ways zoo can record. Nothing here touches the catalog: the caller records results.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from zoo.data import Examples
from zoo.errors import ZooValueError
from zoo.params import TrainParams


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ZooValueError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return device


def _governor(model: Any, device: str) -> Any:
    """The CPU thread count for this model's work (``zoo.threads``); on CUDA one thread feeds the GPU."""
    from zoo.threads import governor

    n = sum(p.numel() for p in model.parameters())
    return governor(n if device == "cpu" else 0)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def load_tokenizer(dirs: Sequence[Path]) -> Any:
    """The first tokenizer found among ``dirs`` (the start model's, then its family base's)."""
    from transformers import AutoTokenizer

    for d in dirs:
        if d is not None and any((Path(d) / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                                                     "tokenizer.model", "vocab.json")):
            return AutoTokenizer.from_pretrained(str(d))
    raise ZooValueError(f"no tokenizer files in {', '.join(str(d) for d in dirs if d)}; save the tokenizer next to the base model")


def quiet_transformers() -> None:
    """transformers' per-load progress bars and reports would drown zoo's own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@dataclass(frozen=True)
class ModelRef:
    """A model for transformers to load: a checkpoint folder, or a LoRA adapter on one (merged
    in memory by zoo's own name mapping, ``adapter.merge_into``)."""

    path: Path
    adapter: Path | None = None
    edit: Any = field(default=None, compare=False)  # set into the loaded model last (a mixture's weights)

    def _merged(self, model: Any) -> Any:
        if self.adapter is not None:
            from zoo.adapter import merge_into

            model = merge_into(model, self.adapter)
        return model if self.edit is None else self.edit(model)

    @property
    def config_dir(self) -> Path:
        """Where the model's config lives: the adapter's saved task config, else the checkpoint's."""
        return self.adapter if self.adapter is not None and (self.adapter / "config.json").is_file() else self.path

    def classifier(self, labels: list[str]) -> Any:
        return self._merged(load_classifier(self.path, labels))

    def body(self) -> Any:
        return self._merged(_load_body(self.path))

    def causal_lm(self) -> Any:
        return self._merged(load_causal_lm(self.path))


def is_causal_lm(model_dir: Path) -> bool:
    """Whether a checkpoint's config names a next-token (causal-LM) architecture."""
    import json

    cfg = Path(model_dir) / "config.json"
    archs = json.loads(cfg.read_text()).get("architectures") or [] if cfg.is_file() else []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_causal_lm(model_dir: Path) -> Any:
    """A causal LM; a family whose base is not one is refused (plain text trains next-token prediction)."""
    from transformers import AutoModelForCausalLM

    if not is_causal_lm(model_dir):
        raise ZooValueError(f"{model_dir}: plain-text data (no 'label' column) trains next-token prediction, which "
                            "needs a decoder family (config architectures ...ForCausalLM); give labelled data (text, "
                            "label) to train a classifier")
    return AutoModelForCausalLM.from_pretrained(str(model_dir))


def load_classifier(model_dir: Path, labels: list[str]) -> Any:
    """A sequence classifier with ``len(labels)`` outputs; a head of another size is re-initialised."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    cfg = AutoConfig.from_pretrained(str(model_dir), num_labels=len(labels),
                                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" report is expected here
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=cfg, ignore_mismatched_sizes=True)
    finally:
        hf_logging.set_verbosity(verbosity)


def _batches(tok: Any, ex: Examples, order: Sequence[int], bs: int, max_length: int, label_ids: dict[str, int] | None,
             causal: bool = False):
    """Tokenized batches; ``label_ids``: class labels; ``causal``: next-token labels (padding ignored)."""
    import torch

    for lo in range(0, len(order), bs):
        idx = order[lo:lo + bs]
        texts = [ex.text[i] for i in idx]
        pairs = [ex.text_pair[i] for i in idx] if ex.text_pair is not None else None
        enc = tok(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        if causal:
            enc["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        elif label_ids is not None:
            enc["labels"] = torch.tensor([label_ids[ex.labels[i]] for i in idx])
        yield enc


def evaluate_lm(model: Any, tok: Any, ex: Examples, params: TrainParams, device: str) -> dict[str, float]:
    """Perplexity and mean next-token cross-entropy over every predicted token of ``ex``."""
    import torch

    _governor(model, device)
    model.eval().to(device)
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for enc in _batches(tok, ex, list(range(len(ex))), params.batch_size * 2, params.max_length, None, causal=True):
            enc = {k: v.to(device) for k, v in enc.items()}
            n = int((enc["labels"][:, 1:] != -100).sum())  # the model predicts every token but the first
            if n:
                loss_sum += float(model(**enc).loss) * n
                tokens += n
    if not tokens:
        raise ZooValueError(f"{ex.path}: no text to score (every example is shorter than two tokens)")
    loss = loss_sum / tokens
    return {"perplexity": math.exp(min(loss, 700.0)), "loss": loss, "n_examples": len(ex), "n_tokens": tokens}


def _pad_token(tok: Any) -> None:
    """Decoders often ship without a padding token: batches pad with end-of-sequence (masked out)."""
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ZooValueError("the tokenizer has neither a padding nor an end-of-sequence token; save one with it")
        tok.pad_token = tok.eos_token


def evaluate_classifier(model: Any, tok: Any, ex: Examples, labels: list[str], params: TrainParams,
                        device: str) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier whose outputs are ``labels``."""
    import torch

    unknown = sorted(set(ex.labels) - set(labels))
    if unknown:
        raise ZooValueError(f"{ex.path}: labels {unknown[:5]} are not in the model's label space {labels[:10]}")
    lid = {l: i for i, l in enumerate(labels)}
    _governor(model, device)
    model.eval().to(device)
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for enc in _batches(tok, ex, list(range(len(ex))), params.batch_size * 2, params.max_length, lid):
            enc = {k: v.to(device) for k, v in enc.items()}
            out = model(**enc)
            loss_sum += float(out.loss) * len(enc["labels"])
            correct += int((out.logits.argmax(-1) == enc["labels"]).sum())
    return {"accuracy": correct / len(ex), "loss": loss_sum / len(ex), "n_examples": len(ex)}


def check_labels(train_ex: Examples, eval_ex: Examples | None) -> list[str]:
    """The training data's label space; refused when it has one label or the eval data has others."""
    labels = train_ex.label_space()
    if len(labels) < 2:
        raise ZooValueError(f"{train_ex.path}: one label only ({labels}); classification needs at least two")
    unknown = sorted(set(eval_ex.labels) - set(labels)) if eval_ex is not None else []
    if unknown:
        raise ZooValueError(f"{eval_ex.path}: labels {unknown[:5]} never occur in the training data {train_ex.path}")
    return labels


def _trainable(model: Any, method: str) -> list[Any]:
    """The parameters a method trains: all (full), or biases and the head (bitfit)."""
    if method == "bitfit":
        for name, p in model.named_parameters():
            p.requires_grad = name.endswith("bias") or not name.startswith(model.base_model_prefix + ".")
    return [p for p in model.parameters() if p.requires_grad]


def _last_linear(model: Any, n_out: int) -> Any:
    """The classifier's output layer: the last linear layer with one output per label."""
    import torch

    lin = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_out]
    if not lin:
        raise ZooValueError(f"found no linear layer with {n_out} outputs to initialise from a probe; use --head-init random")
    return lin[-1]


def probe_head(model: Any, tok: Any, ex: Examples, labels: list[str], params: TrainParams, device: str) -> None:
    """Set the classifier's output layer to an L2-regularised logistic regression fitted on the
    inputs it receives from the frozen model over ``ex`` (linear probe, then fine-tune): the
    head no longer starts random, so the seed does not steer the body's first updates."""
    import torch

    head = _last_linear(model, len(labels))
    feats: list[Any] = []
    hook = head.register_forward_pre_hook(lambda m, args: feats.append(args[0].detach().float().cpu()))
    _governor(model, device)
    model.eval().to(device)
    try:
        with torch.no_grad():
            for enc in _batches(tok, ex, list(range(len(ex))), params.batch_size * 2, params.max_length, None):
                model(**{k: v.to(device) for k, v in enc.items()})
    finally:
        hook.remove()
    x = torch.cat(feats)
    lid = {l: i for i, l in enumerate(labels)}
    y = torch.tensor([lid[l] for l in ex.labels])
    has_bias = head.bias is not None
    mu, sd = (x.mean(0) if has_bias else torch.zeros(x.shape[1])), x.std(0) + 1e-6
    clf = torch.nn.Linear(x.shape[1], len(labels), bias=has_bias)
    for p in clf.parameters():
        torch.nn.init.zeros_(p)  # the optimum of a convex loss, from zero: no seed in it
    _fit_logistic(clf, (x - mu) / sd, y, l2=1e-2, max_iter=100)
    with torch.no_grad():  # fold the standardisation into the layer: W (x - mu) / sd + b
        w = clf.weight / sd
        head.weight.copy_(w.to(head.weight.dtype))
        if has_bias:
            head.bias.copy_((clf.bias - w @ mu).to(head.bias.dtype))


def _fit_logistic(clf: Any, x: Any, y: Any, l2: float, max_iter: int) -> None:
    """Fit a linear layer as an L2-regularised multinomial logistic regression (L-BFGS), in place."""
    import torch

    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)


def _adamw(params: list[Any], lr: float, weight_decay: float) -> Any:
    """AdamW with torch's fused kernel where the device and dtype have one: the per-tensor
    loop was a third of a MiniLM step on CPU (171 of ~550 ms beside two busy processes)."""
    import torch

    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _fit(model: Any, tok: Any, train_ex: Examples, labels: list[str] | None, params: TrainParams, device: str,
         progress: bool = False, step_hook: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The optimisation loop of a fine-tune (AdamW, linear warm-up and decay, clipped
    gradients, threads governed): ``params.epochs`` passes over ``train_ex``, in place.
    ``labels`` None: next-token prediction on plain text."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    trainable = _trainable(model, params.method)
    gov = _governor(model, device)
    model.to(device).train()
    opt = _adamw(trainable, params.lr, params.weight_decay)
    steps_per_epoch = math.ceil(len(train_ex) / params.batch_size)
    total = max(1, int(round(params.epochs * steps_per_epoch)))
    sched = get_linear_schedule_with_warmup(opt, int(params.warmup_ratio * total), total)
    lid = {l: i for i, l in enumerate(labels)} if labels is not None else None
    gen = torch.Generator().manual_seed(params.seed)
    step, losses = 0, []
    bar = tqdm(total=total, desc="fine-tuning", unit="step", disable=not progress, leave=False)
    while step < total:
        order = torch.randperm(len(train_ex), generator=gen).tolist()
        for enc in _batches(tok, train_ex, order, params.batch_size, params.max_length, lid, causal=lid is None):
            enc = {k: v.to(device) for k, v in enc.items()}
            loss = model(**enc).loss
            if not torch.isfinite(loss):
                raise ZooValueError(f"training loss became {float(loss)} at step {step}; lower --lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            gov.tick()
            if step_hook is not None:
                step_hook(step)
            if step >= total:
                break
    bar.close()
    return {"train_loss": float(np.mean(losses[-max(1, steps_per_epoch):])), "steps": step,
            "threads": gov.threads, "thread_changes": gov.changes}


def train(start: ModelRef | Path, tokenizer_dirs: Sequence[Path], train_ex: Examples, eval_ex: Examples | None,
          params: TrainParams, out_dir: Path, progress: bool = False,
          step_hook: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``start`` on ``train_ex`` and save the result to ``out_dir`` (appears whole).

    Labelled data trains a sequence classifier; plain text (no labels) next-token prediction
    of a decoder. ``--method lora`` saves a PEFT adapter (from an adapter start: the start's
    factors and the new ones concatenated, one adapter on the start's parent). ``step_hook(step)``
    runs after every optimiser step (progress reporting, interruption).
    """
    start = start if isinstance(start, ModelRef) else ModelRef(Path(start))
    device = resolve_device(params.device)
    seed_everything(params.seed)
    quiet_transformers()
    causal = train_ex.labels is None
    tok = load_tokenizer([start.path, *tokenizer_dirs])
    if causal:
        labels = None
        _pad_token(tok)
        model = start.causal_lm()
    else:
        labels = check_labels(train_ex, eval_ex)
        model = start.classifier(labels)
    t0 = time.perf_counter()
    if params.head_init == "probe" and not causal:
        probe_head(model, tok, train_ex, labels, params, device)
    if params.method == "lora":
        model = _lora(model, params, causal)
    fit = _fit(model, tok, train_ex, labels, params, device, progress, step_hook)
    train_s = time.perf_counter() - t0
    metrics: dict[str, Any] = dict(fit, train_seconds=train_s, device=device, labels=labels, n_train=len(train_ex))
    if eval_ex is not None and causal:
        ev = evaluate_lm(model, tok, eval_ex, params, device)
        metrics.update(eval_perplexity=ev["perplexity"], eval_loss=ev["loss"], n_eval=ev["n_examples"])
    elif eval_ex is not None:
        ev = evaluate_classifier(model, tok, eval_ex, labels, params, device)
        metrics.update(eval_accuracy=ev["accuracy"], eval_loss=ev["loss"], n_eval=ev["n_examples"])
    if params.method == "lora":
        _save_adapter(model.cpu(), tok, out_dir, start.adapter)
    else:
        save_model(model.cpu(), tok, out_dir)
    return metrics


def _lora(model: Any, params: TrainParams, causal: bool) -> Any:
    """Wrap a model in a fresh LoRA adapter (PEFT); a classifier's head trains whole beside it."""
    from peft import LoraConfig, get_peft_model

    targets = [t.strip() for t in params.lora_targets.split(",") if t.strip()] if params.lora_targets else None
    cfg = LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha, target_modules=targets, lora_dropout=0.0,
                     task_type="CAUSAL_LM" if causal else "SEQ_CLS")
    try:
        with warnings.catch_warnings():  # PEFT calls a transformers method that warns of its own rename
            warnings.filterwarnings("ignore", category=FutureWarning)
            return get_peft_model(model, cfg)
    except ValueError as e:
        raise ZooValueError(f"--lora-targets: {str(e).splitlines()[0][:200]}; name modules of this architecture "
                            "(e.g. query,value for BERT, q_proj,v_proj for Llama, c_attn for GPT-2)") from None


def _save_adapter(model: Any, tok: Any, out_dir: Path, start_adapter: Path | None) -> None:
    """The trained adapter, its tokenizer and the task model's config (its labels); from an
    adapter start, the start's factors and the new ones as one adapter on the start's parent."""
    from zoo.files import atomic_dir

    with atomic_dir(out_dir) as tmp:
        if start_adapter is None:
            model.save_pretrained(tmp)
        else:
            import shutil
            import tempfile

            from zoo.adapter import bind, model_params, read_adapter, write_mix

            inner = model.base_model.model
            body = {c: tuple(p.shape) for c, p in model_params(inner).items()}
            with tempfile.TemporaryDirectory(dir=tmp.parent) as new:
                model.save_pretrained(new)
                both = [bind(read_adapter(d), body, type(inner).__name__) for d in (start_adapter, Path(new))]
                write_mix(both, [1.0, 1.0], tmp, head_from=1)
                for extra in ("README.md",):
                    if (Path(new) / extra).is_file():
                        shutil.copy2(Path(new) / extra, tmp / extra)
        model.base_model.model.config.to_json_file(str(tmp / "config.json"))
        tok.save_pretrained(tmp)


def save_model(model: Any, tok: Any, out_dir: Path) -> None:
    """save_pretrained into a temporary folder, then rename: the folder appears whole."""
    from zoo.files import atomic_dir

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def head_fits(model: ModelRef | Path, labels: list[str]) -> bool:
    """Whether the model's classification head has exactly these labels."""
    import json

    ref = model if isinstance(model, ModelRef) else ModelRef(Path(model))
    cfg_path = ref.config_dir / "config.json"
    if not cfg_path.is_file():
        return False
    id2label = json.loads(cfg_path.read_text()).get("id2label") or {}
    if ref.adapter is not None:
        from zoo.adapter import read_adapter

        names = [t.canonical for t in read_adapter(ref.adapter).whole]
    else:
        from zoo.checkpoint import read_header

        names = [t.canonical for t in read_header(ref.path).tensors]
    has_head = any(n.startswith(("classifier", "score")) for n in names)
    return has_head and [id2label.get(str(i)) for i in range(len(id2label))] == labels


def evaluate(model: ModelRef | Path, tokenizer_dirs: Sequence[Path], data: Examples, probe_train: Examples | None,
             params: TrainParams, probe: bool = False) -> dict[str, Any]:
    """Accuracy of a model on labelled ``data``: through its head when it has this label space,
    else (or always, with ``probe``) a linear probe on the frozen body (the paper's
    "generalized" evaluation, which compares models whose heads differ on equal terms).
    Perplexity on plain text (a decoder)."""
    import numpy as np

    ref = model if isinstance(model, ModelRef) else ModelRef(Path(model))
    device = resolve_device(params.device)
    seed_everything(params.seed)
    quiet_transformers()
    tok = load_tokenizer([ref.path, *([ref.adapter] if ref.adapter else []), *tokenizer_dirs])
    if data.labels is None:
        _pad_token(tok)
        ev = evaluate_lm(ref.causal_lm(), tok, data, params, device)
        return {"metric": "perplexity", "value": ev["perplexity"], "loss": ev["loss"], "n_examples": ev["n_examples"],
                "n_tokens": ev["n_tokens"], "how": "next-token prediction"}
    labels = data.label_space()
    if not probe and head_fits(ref, labels):
        ev = evaluate_classifier(ref.classifier(labels), tok, data, labels, params, device)
        return {"metric": "accuracy", "value": ev["accuracy"], "loss": ev["loss"], "n_examples": ev["n_examples"],
                "how": "head"}
    if probe_train is None:
        # A deterministic half of the data trains the probe; the other half scores it.
        order = np.random.default_rng(params.seed).permutation(len(data))
        half = len(data) // 2
        if half < 2:
            raise ZooValueError(f"{data.path}: too few examples ({len(data)}) for a linear probe; pass --train FILE")
        probe_train, data = data.subset(order[:half].tolist()), data.subset(order[half:].tolist())
    acc = linear_probe(ref, tok, probe_train, data, params, device)
    return {"metric": "probe_accuracy", "value": acc, "n_examples": len(data), "how": "linear probe on frozen body",
            "n_probe_train": len(probe_train)}


def _features(model: Any, tok: Any, ex: Examples, params: TrainParams, device: str) -> "Any":
    import torch

    feats = []
    _governor(model, device)
    model.eval().to(device)
    with torch.no_grad():
        for enc in _batches(tok, ex, list(range(len(ex))), params.batch_size * 2, params.max_length, None):
            enc = {k: v.to(device) for k, v in enc.items()}
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            feats.append(((h * mask).sum(1) / mask.sum(1)).float().cpu())
    return torch.cat(feats)


def _load_body(model_dir: Path) -> Any:
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a classifier's head is dropped: expected, not news
    try:
        return AutoModel.from_pretrained(str(model_dir))
    finally:
        hf_logging.set_verbosity(verbosity)


def _probe_accuracy(xtr: Any, ytr: Any, xte: Any, yte: Any, n_labels: int, seed: int) -> float:
    """Standardize on the training features, fit an L2-regularised multinomial logistic
    regression with L-BFGS, return the accuracy on the test features."""
    import torch

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(seed)
    clf = torch.nn.Linear(xtr.shape[1], n_labels)
    _fit_logistic(clf, xtr, ytr, l2=1e-3, max_iter=200)
    with torch.no_grad():
        return float((clf(xte).argmax(-1) == yte).float().mean())


def linear_probe(model: ModelRef | Path, tok: Any, train_ex: Examples, test_ex: Examples, params: TrainParams,
                 device: str) -> float:
    """Mean-pooled features of the frozen body, a multinomial logistic regression on top."""
    import torch

    labels = sorted(set(train_ex.labels) | set(test_ex.labels))
    lid = {l: i for i, l in enumerate(labels)}
    body = (model if isinstance(model, ModelRef) else ModelRef(Path(model))).body()
    xtr, xte = _features(body, tok, train_ex, params, device), _features(body, tok, test_ex, params, device)
    ytr = torch.tensor([lid[l] for l in train_ex.labels])
    yte = torch.tensor([lid[l] for l in test_ex.labels])
    return _probe_accuracy(xtr, ytr, xte, yte, len(labels), params.seed)


def _by_label(labels: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, l in enumerate(labels):
        out.setdefault(l, []).append(i)
    return out


def check_folds_input(ex: Examples, folds: int) -> None:
    """Refuse data that cannot fill ``folds`` folds of trials, naming the file and what it needs."""
    if folds < 2:
        raise ZooValueError(f"--folds must be at least 2 to hold a fold out, got {folds}")
    n_labels = len(set(ex.labels))
    if n_labels < 2 or len(ex) < 2 * folds:
        raise ZooValueError(f"{ex.path}: {len(ex)} example(s) of {n_labels} label(s) cannot fill {folds} folds of "
                            f"trials; give at least {2 * folds} examples of 2+ labels")


def stratified_folds(labels: Sequence[str], folds: int, seed: int) -> list[int]:
    """A fold number per example: each label's examples, shuffled, dealt round-robin."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fold = [0] * len(labels)
    by_label = _by_label(labels)
    offset = 0
    for l in sorted(by_label):
        for j, i in enumerate(rng.permutation(by_label[l])):
            fold[int(i)] = (offset + j) % folds
        offset += len(by_label[l])  # spreads the remainders of small labels over the folds
    return fold


def sample_examples(ex: Examples, n: int, seed: int) -> Examples:
    """At most ``n`` examples, label-stratified and deterministic (all of them when there are fewer)."""
    import numpy as np

    if len(ex) <= n:
        return ex
    rng = np.random.default_rng(seed)
    by_label = _by_label(ex.labels)
    # Each example's place within its shuffled label, as a fraction: taking the n smallest
    # takes every label in proportion to its share.
    key = {}
    for l in sorted(by_label):
        idx = rng.permutation(by_label[l])
        for j, i in enumerate(idx):
            key[int(i)] = ((j + 0.5) / len(idx), rng.random())
    return ex.subset(sorted(sorted(key, key=key.__getitem__)[:n]))


def trial_cv(model: ModelRef | Path | Sequence[ModelRef], tokenizer_dirs: Sequence[Path], ex: Examples,
             params: TrainParams, folds: int = 4) -> dict[str, Any]:
    """Held-out accuracy of short real fine-tunes from ``model``: for each of ``folds``
    label-stratified folds of ``ex``, fine-tune with ``params`` on the other folds and score
    the held-out one. Every start sees the same folds, seeds and head initialisation, so
    two starts' fold accuracies pair up: their differences are what the start changes.
    A list gives each fold its own start (a mixture learned without that fold)."""
    check_folds_input(ex, folds)
    labels = ex.label_space()
    device = resolve_device(params.device)
    quiet_transformers()
    if isinstance(model, (list, tuple)):
        if len(model) != folds:
            raise ZooValueError(f"{len(model)} per-fold starts for {folds} folds")
        refs = list(model)
    else:
        refs = [model if isinstance(model, ModelRef) else ModelRef(Path(model))] * folds
    tok = load_tokenizer([refs[0].path, *tokenizer_dirs])
    fold = stratified_folds(ex.labels, folds, params.seed)
    accs, losses = [], []
    for f in range(folds):
        seed_everything(params.seed + f)
        model = refs[f].classifier(labels)
        train_f = ex.subset([i for i, g in enumerate(fold) if g != f])
        if params.head_init == "probe":
            probe_head(model, tok, train_f, labels, params, device)
        if params.method == "lora":
            model = _lora(model, params, False)
        _fit(model, tok, train_f, labels, params, device)
        ev = evaluate_classifier(model, tok, ex.subset([i for i, g in enumerate(fold) if g == f]), labels, params, device)
        accs.append(ev["accuracy"])
        losses.append(ev["loss"])
    return {"fold_accuracy": accs, "fold_loss": losses, "accuracy": sum(accs) / folds, "n_examples": len(ex),
            "folds": folds}
