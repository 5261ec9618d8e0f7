"""The domain: families, sketch spaces, start specs and the vocabularies (kinds, metrics,
relations, devices) that the schema, the library and the CLI all use.

Pure: the error types only (numpy arrays pass through untouched), so every layer may import it.
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zoo.errors import NotFound, ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# What a model listing sorts by: names put in ORDER BY, never parameters (lookup.ls checks).
SORT_COLUMNS = ("id", "name", "family", "kind", "dataset", "task", "seed", "n_params", "created_at")
KINDS = ("base", "finetune", "adapter", "centroid", "interpolation", "external")
# Kinds that are trained models (what ``--all`` and region members mean): not bases, not points zoo made.
TRAINED_KINDS = ("finetune", "adapter")
METRICS = ("cosine", "l2")
RELATIONS = ("finetuned_from", "averaged_from", "interpolated_from", "merged_from")
RUN_STATUSES = ("running", "finished", "failed")
DEVICES = ("auto", "cpu", "cuda")
TRAIN_METHODS = ("full", "bitfit", "lora")
HEAD_INITS = ("random", "probe")
COLOR_BY = ("dataset", "task", "kind")
MAP_METHODS = ("pca", "tsne")

DEFAULT_DIM = 1024
DEFAULT_SEED = 0
DEFAULT_METRIC = "cosine"
SKETCH_METHOD = "countsketch-splitmix64"
MIN_DIM, MAX_DIM = 8, 1 << 20


def env_number(name: str, default: float, kind: type = float, minimum: float = 0.0) -> Any:
    """A numeric environment variable, or ``default`` when unset; a one-line error when malformed."""
    import math
    import os

    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        raise ZooValueError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number >= {minimum:g}; "
                            f"fix or unset it (default {default:g})")
    return value


def check_choice(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    """``value`` when it is one of ``choices`` (or None), else a ZooValueError naming both."""
    if value is not None and value not in choices:
        raise ZooValueError(f"{what} {value!r} is not one of {', '.join(choices)}")
    return value


def check_metric(metric: str) -> str:
    return str(check_choice(metric, METRICS, "metric"))


def check_kind(kind: str | None) -> str | None:
    return check_choice(kind, KINDS, "kind")


def check_k(k: int, what: str = "-k", least: int = 1) -> int:
    """An integer count of at least ``least`` (``-k``, ``--neighbours``, ``--folds``...)."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < least:
        what_int = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise ZooValueError(f"{what} must be {what_int}, got {k!r}")
    return int(k)


MAX_SEED = 2**31 - 1
# Keys zoo writes into a model's meta itself; a user's --meta may not set them.
RESERVED_META = ("members_key", "merge", "spec", "prefix", "head", "note", "id2label", "run_id", "start_kind", "files",
                 "registered_from", "hub", "adapter", "adapter_parent", "merge_recipe")


def check_seed(seed: int | None, what: str = "--seed") -> int | None:
    """A seed in [0, 2**31 - 1] (what the catalog column, numpy and torch all take), or None."""
    if seed is None:
        return None
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= int(seed) <= MAX_SEED:
        raise ZooValueError(f"{what} {seed!r} is out of range: use an integer between 0 and {MAX_SEED}")
    return int(seed)


def check_name(name: str | None, what: str = "--name", folder: bool = False) -> str | None:
    """A model name: not empty, no control characters (they break tables and terminals), or None.

    ``folder``: the name also names the folder zoo writes in its store, so it may not be a
    path (no ``/`` or ``\\``, no leading dot).
    """
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ZooValueError(f"{what} {name!r} is empty or has leading/trailing spaces; give a plain name")
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) < 0xA0]
    if bad:
        raise ZooValueError(f"{what} {name!r} contains control characters ({', '.join(repr(c) for c in bad[:3])}); "
                            "use letters, digits and punctuation")
    if folder and ("/" in name or "\\" in name or name.startswith(".")):
        raise ZooValueError(f"{what} {name!r} is a model name, not a path: zoo writes only inside its store; "
                            "drop the slashes and leading dots")
    return name


def folder_safe(name: str) -> str:
    """A derived name made fit to name a folder in the store (path separators and control
    characters replaced, no leading dot)."""
    out = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in name).lstrip(".")
    return out or "model"


def check_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """User metadata: string keys, none of those zoo writes itself."""
    meta = dict(meta or {})
    taken = sorted(k for k in meta if k in RESERVED_META)
    if taken:
        raise ZooValueError(f"--meta key(s) {', '.join(taken)} are zoo's own (reserved: {', '.join(RESERVED_META)}); "
                            "choose other keys")
    return meta


def check_dim(dim: int) -> int:
    """Validate a sketch dimension; any integer in [8, 2**20] works (powers of two not required)."""
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or not MIN_DIM <= int(dim) <= MAX_DIM:
        raise ZooValueError(f"sketch dimension {dim!r} is out of range: use an integer between {MIN_DIM} and {MAX_DIM}, e.g. 1024")
    return int(dim)


def check_filter(tensor_filter: str | None) -> str | None:
    if tensor_filter is not None:
        try:
            re.compile(tensor_filter)
        except re.error as e:
            raise ZooValueError(f"--filter {tensor_filter!r} is not a valid regular expression ({e})") from e
    return tensor_filter


@dataclass
class Space:
    """A sketch space: dimension, seed and tensor filter (what a sketch needs), and, once
    stored, its id, family, metric and the base's raw sketch.

    ``key`` identifies the sketch operator: two spaces with one key sketch alike.
    """

    dim: int
    seed: int = DEFAULT_SEED
    tensor_filter: str | None = None
    metric: str = DEFAULT_METRIC
    id: int = 0
    family_id: int = 0
    base_vec: np.ndarray | None = None
    method: str = SKETCH_METHOD

    @property
    def key(self) -> tuple[int, int, str | None]:
        return (self.dim, self.seed, self.tensor_filter)

    def includes(self, canonical: str) -> bool:
        return self.tensor_filter is None or re.search(self.tensor_filter, canonical) is not None


@dataclass
class Family:
    """A family: a base checkpoint's body (canonical name -> shape) and its sketch spaces."""

    id: int
    name: str
    arch_signature: str
    base_model_id: int | None
    prefix: str
    body: dict[str, tuple[int, ...]]
    spaces: list[Space] = field(default_factory=list)
    base_uri: str | None = None
    base_name: str | None = None

    def space(self, space_id: int | None = None) -> Space:
        """The space with this id, or the family's first (its default) when None."""
        if space_id is None:
            return self.spaces[0]
        for sp in self.spaces:
            if sp.id == space_id:
                return sp
        raise NotFound(f"family {self.name!r} has no sketch space {space_id}; its spaces: {[s.id for s in self.spaces]}")


def union_body(fams: list[Family]) -> dict[str, tuple[int, ...]]:
    """Every body tensor of several families (one scan serves them all)."""
    body: dict[str, tuple[int, ...]] = {}
    for f in fams:
        body.update(f.body)
    return body


REGION_KEYS = ("task", "dataset", "exclude_dataset")


@dataclass(frozen=True)
class Start:
    """A parsed ``--from`` spec: ``base``, a model name, or a region centroid.

    ``region`` holds keyword arguments of ``Zoo.centroid`` (task, dataset, exclude_dataset,
    all_models) for ``centroid:...`` specs.
    """

    spec: str
    kind: str  # base | model | centroid
    region: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        """How select-start counts a run from this start: base, task-, family- or dataset-centroid, or model."""
        if self.kind != "centroid":
            return self.kind
        if "task" in self.region:
            return "task-centroid"
        if self.region.get("all_models"):
            return "family-centroid"
        return "dataset-centroid"


def parse_start(spec: str) -> Start:
    """``base``, a model name, or ``centroid:task=T[,dataset=D][,exclude_dataset=D]`` /
    ``centroid:all[,exclude_dataset=D]`` (the one parser of start specs)."""
    if spec == "base":
        return Start(spec, "base")
    if not spec.startswith("centroid:"):
        return Start(spec, "model")
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(":", 1)[1].split(","))):
        if part == "all":
            out["all_models"] = True
            continue
        k, _, v = part.partition("=")
        k = k.strip().replace("-", "_")
        if k not in REGION_KEYS or not v:
            raise ZooValueError(f"bad start spec {spec!r}: use centroid:task=T, centroid:dataset=D or centroid:all, "
                                "optionally with ,exclude_dataset=D")
        out[k] = v.strip()
    if not out or set(out) == {"exclude_dataset"}:
        raise ZooValueError(f"start spec {spec!r} names no region; e.g. centroid:task=sentiment,exclude_dataset=sst2")
    return Start(spec, "centroid", out)
