"""LoRA adapters (PEFT) as models of their base's family.

An adapter folder (``adapter_config.json`` beside ``adapter_model.safetensors`` or ``.bin``)
changes its parent by ΔW = scale · B·A on each target module: scale = lora_alpha / r, or
lora_alpha / √r with rsLoRA, ``alpha_pattern`` per module. Where the parent stores a weight
as (in, out) — ``fan_in_fan_out`` (GPT-2's Conv1D) and embeddings — ΔW is stored
transposed. Tensors the adapter saves whole (``modules_to_save``, trained biases) replace
the parent's. zoo never builds the full model to read an adapter: every module is reduced
to *stored factors* (Bs, As) with ΔW (as the parent stores it) = Bs · As; ΔW is computed
in row blocks for the sketch, and exact inner products come from the factors:
⟨B₁A₁, B₂A₂⟩ = Σ (B₁ᵀB₂) ⊙ (A₁A₂ᵀ), r₁×r₂ work.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from zoo.checkpoint import ContentHash, Header, Reader, TensorInfo, as_float, read_header, stream
from zoo.errors import BadWeights, CheckpointError, FamilyMismatch, ZooValueError

CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
FORMAT = "peft-lora"
# PEFT saves every tensor under the wrapper's attribute path.
WRAP = "base_model.model."
# Elements of ΔW computed at once: a block, never the whole model.
BLOCK = 1 << 22
_LORA = re.compile(r"^(?P<mod>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|lora_embedding_B)$")
# Tensors of adapter variants whose change is not B·A: refused by name.
_FOREIGN = ("lora_magnitude_vector", "trainable_tokens", "lora_E", "hada_", "lokr_", "ia3_", "oft_", "boft_", "vera_")


def is_adapter(path: str | Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder."""
    p = Path(path).expanduser()
    return p.is_dir() and (p / CONFIG).is_file()


def weight_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: {CONFIG} but neither {' nor '.join(WEIGHT_FILES)}; re-save the adapter with "
                          "save_pretrained")


@dataclass(frozen=True)
class Module:
    """One LoRA target: ΔW as the parent stores it is ``factors()``'s Bs · As."""

    name: str  # the module's path as the adapter names it, without ``base_model.model.``
    a: TensorInfo  # lora_A [r, in] (embedding: lora_embedding_A [r, num_embeddings])
    b: TensorInfo  # lora_B [out, r] (embedding: lora_embedding_B [dim, r])
    scale: float
    transposed: bool  # stored (in, out): fan_in_fan_out or an embedding
    embedding: bool
    bias: TensorInfo | None = None  # lora_B.bias: a change of the module's bias, scaled

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])

    @property
    def stored_shape(self) -> tuple[int, int]:
        out, inn = int(self.b.shape[0]), int(self.a.shape[1])
        return (inn, out) if self.transposed else (out, inn)


@dataclass
class Adapter:
    """An adapter read from its folder: config, tensors, modules; ``bind`` maps it onto a family."""

    path: Path
    config: dict[str, Any]
    header: Header  # of the weight file
    modules: list[Module]
    whole: list[TensorInfo]  # saved whole: they replace the parent's tensor of the same name
    canon: dict[str, str] = field(default_factory=dict)  # adapter tensor name -> family canonical name
    prefix: str = ""  # what the adapter's names put before the family's canonical names ("bert.")

    @property
    def base_ref(self) -> str | None:
        ref = self.config.get("base_model_name_or_path")
        return str(ref) if ref else None

    @property
    def n_params(self) -> int:
        return self.header.n_params

    def target(self, m: Module) -> str:
        """The canonical name of the weight a module changes (after ``bind``)."""
        return self.canon[m.name + ".weight"]

    def bias_target(self, m: Module) -> str:
        return self.canon[m.name + ".bias"]

    def body_whole(self, body: dict[str, tuple[int, ...]]) -> list[TensorInfo]:
        """Whole tensors that replace body tensors (trained biases, a saved body module)."""
        return [t for t in self.whole if self.canon.get(t.name) in body]

    def content_hash(self) -> str:
        """xxh3 of the tensors and of what turns them into ΔW (target, scale, orientation):
        the same factors under another alpha are another model."""
        import xxhash

        h = ContentHash()
        for info, arr in stream(self.header):
            h.update(info, arr)
        recipe = json.dumps([(m.name, repr(float(m.scale)), m.transposed) for m in self.modules])
        return xxhash.xxh3_128((FORMAT + h.hexdigest() + recipe).encode()).hexdigest()


def adapter_header(ad: Adapter) -> Header:
    """The header an adapter is registered with: its folder, its tensors, its weight file, and
    the task model's config saved beside it (labels of a classifier zoo trained), if any."""
    cfg = None
    if (ad.path / "config.json").is_file():
        try:
            cfg = json.loads((ad.path / "config.json").read_text())
        except ValueError:
            cfg = None
    return Header(ad.path, FORMAT, ad.header.tensors, cfg, ad.prefix, ad.header.shards)


def model_params(model: Any) -> dict[str, Any]:
    """A transformers model's tensors by canonical name (its ``base_model_prefix`` dropped); in a
    model PEFT has wrapped, the wrapped layers' own weights under their plain names."""
    prefix = getattr(model, "base_model_prefix", "")
    params: dict[str, Any] = {}
    for name, p in model.state_dict(keep_vars=True).items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        name = name.replace(".base_layer.", ".").replace(".original_module.", ".")
        params.setdefault(name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name, p)
    return params


def merge_into(model: Any, folder: Path) -> Any:
    """Add an adapter's change to a loaded transformers model, in place, by zoo's own name
    mapping (PEFT would need the class the adapter was trained on); whole tensors of a
    matching shape (a head in ``modules_to_save``) replace the model's. Returns the model."""
    import torch

    params = model_params(model)
    ad = bind(read_adapter(folder), {c: tuple(p.shape) for c, p in params.items()}, type(model).__name__)
    with Reader(ad.header) as r, torch.no_grad():
        for m in ad.modules:
            c = ad.target(m)
            if c in params:
                p = params[c]
                p.add_(torch.from_numpy(dense_delta(*factors(m, r))).reshape(p.shape).to(p.dtype))
            if m.bias is not None and ad.bias_target(m) in params:
                p = params[ad.bias_target(m)]
                p.add_(torch.from_numpy(bias_delta(m, r)).reshape(p.shape).to(p.dtype))
        for t in ad.whole:
            c = ad.canon[t.name]
            if c in params and tuple(params[c].shape) == tuple(t.shape):
                params[c].copy_(torch.from_numpy(np.array(as_float(t, r.read(t)))).to(params[c].dtype))
    return model


def read_adapter(path: str | Path) -> Adapter:
    """Read and check an adapter folder; adapter types other than plain LoRA are refused by name."""
    folder = Path(path).expanduser().resolve()
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / CONFIG}: not valid JSON ({e}); re-save the adapter with save_pretrained") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{folder / CONFIG}: not a JSON object; re-save the adapter with save_pretrained")
    kind = str(config.get("peft_type", "")).upper()
    if kind != "LORA":
        raise CheckpointError(f"{folder}: adapter type {config.get('peft_type')!r} is not supported: zoo handles LoRA "
                              "adapters (peft_type LORA); merge it into its base and register the full checkpoint")
    for key, why in (("use_dora", "DoRA rescales the weight, so its change is not B·A"),
                     ("target_parameters", "LoRA on bare parameters is not a module's B·A"),
                     ("layer_replication", "replicated layers are not in the base's weights"),
                     ("trainable_token_indices", "trainable tokens are not B·A")):
        if config.get(key):
            raise CheckpointError(f"{folder}: {key} is set; {why}: zoo does not handle such adapters; merge it into "
                                  "its base (merge_and_unload) and register the full checkpoint")
    header = read_header(weight_file(folder))
    alpha = _number(config.get("lora_alpha", 8), "lora_alpha", folder)
    patterns = {str(k): _number(v, f"alpha_pattern[{k!r}]", folder) for k, v in (config.get("alpha_pattern") or {}).items()}
    rslora = bool(config.get("use_rslora"))
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    parts: dict[str, dict[str, TensorInfo]] = {}
    whole: list[TensorInfo] = []
    for t in header.tensors:
        name = t.name[len(WRAP):] if t.name.startswith(WRAP) else t.name
        if any(f in name for f in _FOREIGN):
            raise CheckpointError(f"{folder}: tensor {t.name!r} belongs to an adapter variant zoo does not handle "
                                  "(its change is not B·A); merge it into its base and register the full checkpoint")
        m = _LORA.match(name)
        if m is None:
            if not t.is_float:
                continue
            # Saved whole: the wrapper's attribute names are not the parent's.
            clean = name.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
            whole.append(replace(t, canonical=clean))
            continue
        parts.setdefault(m["mod"], {})[m["part"]] = t
    modules = []
    for mod, p in sorted(parts.items()):
        emb = "lora_embedding_A" in p or "lora_embedding_B" in p
        a, b = p.get("lora_embedding_A" if emb else "lora_A.weight"), p.get("lora_embedding_B" if emb else "lora_B.weight")
        if a is None or b is None or len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
            raise CheckpointError(f"{folder}: module {mod!r} lacks a matching lora_A/lora_B pair (A [r, in], B [out, r]); "
                                  "the adapter file is incomplete or not a LoRA adapter")
        r = int(a.shape[0])
        if r <= 0:
            raise CheckpointError(f"{folder}: module {mod!r} has rank 0")
        key = _pattern_key(list(patterns), mod, folder)
        al = patterns[key] if key is not None else alpha
        scale = al / math.sqrt(r) if rslora else al / r
        modules.append(Module(mod, a, b, float(scale), emb or fan_in_fan_out, emb, p.get("lora_B.bias")))
    if not modules:
        raise CheckpointError(f"{folder}: the adapter holds no lora_A/lora_B tensors; it is empty or not a LoRA adapter")
    return Adapter(folder, config, header, modules, whole)


def _number(v: Any, what: str, folder: Path) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x):
        raise CheckpointError(f"{folder / CONFIG}: {what} = {v!r} is not a finite number; fix the adapter config")
    return x


def _pattern_key(keys: list[str], name: str, folder: Path) -> str | None:
    """PEFT's rule: a pattern applies when the module name ends with it (after a dot)."""
    for k in keys:
        try:
            if re.match(rf"(.*\.)?({k})$", name):
                return k
        except re.error as e:
            raise CheckpointError(f"{folder / CONFIG}: alpha_pattern key {k!r} is not a valid pattern ({e})") from e
    return None


def _match(name: str, body: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """(canonical name, prefix dropped) of an adapter tensor name: as is, or without its first
    component (the task model's ``bert.``/``model.``) when that is what the family's body holds."""
    if name in body:
        return name, ""
    if "." in name:
        first, rest = name.split(".", 1)
        if rest in body:
            return rest, first + "."
    return name, ""


def bind(ad: Adapter, body: dict[str, tuple[int, ...]], family: str) -> Adapter:
    """Map the adapter's tensors onto a family's canonical names and check every shape;
    targets outside the body (a task head) stay as they are, like a full fine-tune's head."""
    ad.canon = {}
    prefixes = set()
    bound = 0
    for m in ad.modules:
        c, pre = _match(m.name + ".weight", body)
        if c in body:
            if tuple(body[c]) != m.stored_shape:
                raise FamilyMismatch(f"{ad.path}: module {m.name!r} changes a {list(m.stored_shape)} weight but family "
                                     f"{family!r} has {list(body[c])} for {c!r}; this adapter is not for this family")
            bound += 1
            prefixes.add(pre)
        ad.canon[m.name + ".weight"] = c
        if m.bias is not None:
            ad.canon[m.name + ".bias"] = _match(m.name + ".bias", body)[0]
    for t in ad.whole:
        c, pre = _match(t.canonical, body)
        if c in body and tuple(body[c]) != tuple(t.shape):
            raise FamilyMismatch(f"{ad.path}: tensor {t.name!r} has shape {list(t.shape)} but family {family!r} has "
                                 f"{list(body[c])} for {c!r}; this adapter is not for this family")
        ad.canon[t.name] = c
    if not bound:
        raise FamilyMismatch(f"{ad.path}: none of the adapter's {len(ad.modules)} target modules (e.g. "
                             f"{ad.modules[0].name!r}) is a weight of family {family!r}; this adapter is for another "
                             "architecture: pass --base NAME of its base")
    ad.prefix = sorted(prefixes)[-1] if prefixes else ""
    return ad


def factors(m: Module, reader: Reader) -> tuple[np.ndarray, np.ndarray]:
    """(Bs, As) with ΔW as the parent stores it = Bs @ As (float64), scale folded into one side."""
    a = np.asarray(as_float(m.a, reader.read(m.a)), dtype=np.float64)
    b = np.asarray(as_float(m.b, reader.read(m.b)), dtype=np.float64)
    for t, x in ((m.a, a), (m.b, b)):
        if not np.isfinite(x).all():
            raise BadWeights(f"{reader.header.path}: NaN or Inf in tensor {t.name!r}; zoo refuses such adapters: fix the "
                             "training run or drop the adapter")
    if m.transposed:  # stored = (s B A)^T = A^T (s B^T)
        return a.T, m.scale * b.T
    return m.scale * b, a


def bias_delta(m: Module, reader: Reader) -> np.ndarray:
    return m.scale * np.asarray(as_float(m.bias, reader.read(m.bias)), dtype=np.float64)


def delta_blocks(bs: np.ndarray, as_: np.ndarray, block: int = BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    """(flat offset, flat block) of Bs @ As, row blocks of at most ``block`` elements (float32 products)."""
    cols = as_.shape[1]
    step = max(1, block // max(cols, 1))
    a32 = as_.astype(np.float32)
    for i in range(0, bs.shape[0], step):
        yield i * cols, (bs[i:i + step].astype(np.float32) @ a32).reshape(-1)


def dense_delta(bs: np.ndarray, as_: np.ndarray) -> np.ndarray:
    return (bs @ as_).astype(np.float32)


def sketch_delta(ad: Adapter, spaces: Iterable[Any], body: dict[str, tuple[int, ...]], out: dict[tuple, np.ndarray],
                 parent: Any = None) -> None:
    """Add the sketch of the adapter's change of its parent into ``out`` (Space.key -> vector):
    B·A block by block, lora biases, and whole body tensors minus the parent's (``parent``: a
    reader of the parent's dense weights, needed only for those)."""
    from zoo.sketch import sketch_array
    from zoo.threads import governor

    specs = list(spaces)
    # The B·A products run on numpy's BLAS: its threads spin against busy neighbours unless governed.
    governor(max((int(np.prod(m.stored_shape)) for m in ad.modules), default=0), samples=1)
    with Reader(ad.header) as r:
        for m in ad.modules:
            c = ad.target(m)
            used = [s for s in specs if c in body and s.includes(c)]
            if used:
                bs, as_ = factors(m, r)
                for off, blk in delta_blocks(bs, as_):
                    for s in used:
                        sketch_array(blk, c, s.seed, s.dim, out[s.key], off)
            if m.bias is not None and ad.bias_target(m) in body:
                cb = ad.bias_target(m)
                for s in specs:
                    if s.includes(cb):
                        sketch_array(bias_delta(m, r), cb, s.seed, s.dim, out[s.key])
        for t in ad.body_whole(body):
            c = ad.canon[t.name]
            if parent is None:
                raise ZooValueError(f"{ad.path}: tensor {t.name!r} replaces a body tensor; its parent's weights are needed")
            d = np.asarray(as_float(t, r.read(t)), dtype=np.float64).reshape(-1) - parent.get(c).reshape(-1)
            parent.release_name(c)
            for s in specs:
                if s.includes(c):
                    sketch_array(d, c, s.seed, s.dim, out[s.key])
    for v in out.values():
        if not np.isfinite(v).all():
            raise BadWeights(f"{ad.path}: the adapter's weight change holds NaN or Inf; zoo refuses such adapters")


class AdapterReader:
    """The dense weights of parent + adapter, tensor by tensor, with the ``Reader`` interface
    (``info``, ``get``, ``release_name``, ``header``): what merges and exact distances read."""

    def __init__(self, ad: Adapter, parent: Any):
        self.ad, self.parent = ad, parent
        self.own = Reader(ad.header)
        self.mods = {ad.target(m): m for m in ad.modules}
        self.biases = {ad.bias_target(m): m for m in ad.modules if m.bias is not None}
        self.replaced = {ad.canon[t.name]: replace(t, canonical=ad.canon[t.name]) for t in ad.whole}
        ph = parent.header
        tensors = [t for t in ph.tensors if t.canonical not in self.replaced] + list(self.replaced.values())
        # Config, tokenizer and prefix are the parent's: the header path is the parent's.
        self.header = Header(ph.path, ph.format, tensors, ph.config, ph.prefix, [])

    def __enter__(self) -> "AdapterReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.own.close()

    def info(self, canonical: str) -> TensorInfo:
        return self.replaced[canonical] if canonical in self.replaced else self.parent.info(canonical)

    def get(self, canonical: str) -> np.ndarray:
        if canonical in self.replaced:
            t = self.replaced[canonical]
            return as_float(t, self.own.read(t))
        base = self.parent.get(canonical)
        m = self.mods.get(canonical)
        if m is not None:
            base = base + dense_delta(*factors(m, self.own)).reshape(base.shape)
        m = self.biases.get(canonical)
        if m is not None:
            base = base + bias_delta(m, self.own).astype(base.dtype).reshape(base.shape)
        return base

    def release_name(self, canonical: str) -> None:
        if canonical in self.replaced:
            self.own.release(self.replaced[canonical])
        self.parent.release_name(canonical)

    def factor_view(self, body: dict[str, tuple[int, ...]]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """canonical -> stored factors of this adapter's change of the body, or None when it also
        replaces whole body tensors (then only a dense read is exact)."""
        if any(c in body for c in self.replaced) or any(c in body for c in self.biases):
            return None
        return {c: factors(m, self.own) for c, m in self.mods.items() if c in body}


def factor_gram(views: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]]) -> np.ndarray:
    """G[i, j] = <ΔW_i, ΔW_j> summed over modules, from factors: per module, stacking every
    adapter's (Bs, As) gives (BᵀB) ⊙ (AAᵀ), whose (i, j) block sums to the inner product."""
    from zoo.threads import governor

    n = len(views)
    g = np.zeros((n, n), dtype=np.float64)
    governor(max((b.size + a.size for v in views for b, a in v.values()), default=0) * n, samples=1)
    for c in sorted({c for v in views for c in v}):
        idx = [i for i, v in enumerate(views) if c in v]
        bcat = np.hstack([views[i][c][0] for i in idx])
        acat = np.vstack([views[i][c][1] for i in idx])
        m = (bcat.T @ bcat) * (acat @ acat.T)
        edges = np.cumsum([0] + [views[i][c][1].shape[0] for i in idx])
        sums = np.add.reduceat(np.add.reduceat(m, edges[:-1], axis=0), edges[:-1], axis=1)
        g[np.ix_(idx, idx)] += sums
    return g


@dataclass
class MixReport:
    """What ``write_mix`` wrote."""

    rank: int
    rel_error: float  # ‖ΔW_written - Σ w ΔW‖ / ‖Σ w ΔW‖ over all modules (0 when exact)
    note: str


def write_mix(members: Sequence[Adapter], weights: Sequence[float], out_dir: Path, rank: int | None = None,
              heads: bool = False, parent_ref: str | None = None, head_from: int | None = None) -> MixReport:
    """Write Σ w_i ΔW_i as one PEFT LoRA adapter in ``out_dir`` (an existing, empty folder).

    Exact by default: per module the members' factors are concatenated, weights folded
    into B (PEFT's ``cat`` combination), rank Σ r_i; modules of lower total rank are
    zero-padded to the largest. ``rank`` truncates each module by SVD (through QR of the
    factors: r×r work) and reports the relative error. ``heads``: the members' whole
    (modules_to_save) tensors are averaged too (the caller checked they share a label space);
    ``head_from``: member whose whole tensors are copied as they are (a continued training's).
    """
    from zoo.merge import SafetensorsWriter
    from zoo.threads import governor

    first = members[0]
    # QR, SVD and products of (out x Σr) factors on numpy's BLAS, whose idle threads spin:
    # beside two busy processes an ungoverned rank-8 centroid of 4 adapters took 13 s, not 1.5.
    governor(sum(m.a.numel + m.b.numel for a in members for m in a.modules), samples=1)
    readers = [Reader(a.header) for a in members]
    try:
        stacks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        biases: dict[str, np.ndarray] = {}
        names: dict[str, tuple[str, bool]] = {}  # canonical -> (output module name, embedding)
        for ad, r, w in zip(members, readers, weights):
            for m in ad.modules:
                c = ad.target(m)
                bs, as_ = factors(m, r)
                stacks.setdefault(c, []).append((w * bs, as_))
                names.setdefault(c, (first.prefix + c[:-len(".weight")] if c.endswith(".weight") else m.name,
                                     m.embedding))
                if m.bias is not None:
                    biases[c] = biases.get(c, 0) + w * bias_delta(m, r)
        fif = bool(first.config.get("fan_in_fan_out"))
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        lost = total = 0.0
        for c, parts in stacks.items():
            bcat, acat = np.hstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])
            if rank is not None and rank < bcat.shape[1]:
                bcat, acat, dropped, kept = _truncate(bcat, acat, rank)
                lost, total = lost + dropped, total + dropped + kept
            else:
                total += float(np.sum((bcat.T @ bcat) * (acat @ acat.T)))
            out[c] = (bcat, acat)
        width = max(b.shape[1] for b, _ in out.values())
        layout, tensors = [], []
        for c in sorted(out):
            bcat, acat = out[c]
            pad = width - bcat.shape[1]
            bcat = np.hstack([bcat, np.zeros((bcat.shape[0], pad))])
            acat = np.vstack([acat, np.zeros((pad, acat.shape[1]))])
            mod, emb = names[c]
            # Written with scale 1 (lora_alpha = r): stored ΔW = Bs As; a transposed module wants
            # B A = ΔWᵀ, i.e. B = Asᵀ, A = Bsᵀ.
            b, a = (acat.T, bcat.T) if (emb or fif) else (bcat, acat)
            keys = (f"{WRAP}{mod}.lora_embedding_A", f"{WRAP}{mod}.lora_embedding_B") if emb else \
                (f"{WRAP}{mod}.lora_A.weight", f"{WRAP}{mod}.lora_B.weight")
            tensors += [(keys[0], a), (keys[1], b)]
            if biases:
                tensors.append((f"{WRAP}{mod}.lora_B.bias", biases.get(c, np.zeros(b.shape[0]))))
        if head_from is not None:
            src = members[head_from]
            for t in src.whole:
                tensors.append((t.name, np.asarray(as_float(t, readers[head_from].read(t)), dtype=np.float64)))
        elif heads:
            for t in first.whole:
                acc = sum(w * np.asarray(as_float(t, rd.read(next(x for x in ad.whole if x.name == t.name))),
                                         dtype=np.float64) for ad, rd, w in zip(members, readers, weights))
                tensors.append((t.name, acc))
        for k, v in tensors:
            layout.append((k, tuple(v.shape), "F32"))
        writer = SafetensorsWriter(out_dir / "adapter_model.safetensors", layout)
        for k, v in tensors:
            writer.write(k, v)
        writer.close()
    finally:
        for r in readers:
            r.close()
    cfg = dict(first.config)
    cfg.update(r=width, lora_alpha=width, use_rslora=False, rank_pattern={}, alpha_pattern={}, layers_to_transform=None,
               layers_pattern=None, target_modules=sorted(names[c][0] for c in out), lora_bias=bool(biases),
               modules_to_save=members[head_from].config.get("modules_to_save") if head_from is not None else
               first.config.get("modules_to_save") if heads else None, inference_mode=True,
               base_model_name_or_path=parent_ref or first.base_ref)
    (out_dir / CONFIG).write_text(json.dumps(cfg, indent=2))
    err = math.sqrt(lost / total) if total > 0 else 0.0
    how = f"truncated to rank {rank} by SVD, relative error {err:.3g}" if rank is not None and lost > 0 else \
        f"exact, rank {width} (the members' factors concatenated)"
    return MixReport(width, err, f"adapter of {len(members)} adapters: {how}")


def _truncate(b: np.ndarray, a: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Best rank-``rank`` factors of B·A (truncated SVD through QR of both factors), with the
    squared Frobenius norm dropped and kept."""
    qb, rb = np.linalg.qr(b)
    qa, ra = np.linalg.qr(a.T)
    u, s, vt = np.linalg.svd(rb @ ra.T)
    k = min(rank, s.size)
    root = np.sqrt(s[:k])
    return (qb @ (u[:, :k] * root)), ((root[:, None] * vt[:k]) @ qa.T), float(np.sum(s[k:] ** 2)), float(np.sum(s[:k] ** 2))


def check_rank(rank: int | None) -> int | None:
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise ZooValueError(f"--rank {rank!r} must be a whole number >= 1 (the adapter's rank after truncation)")
    return rank
