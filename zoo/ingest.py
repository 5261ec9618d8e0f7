"""Registration's compute side: one streaming pass per checkpoint, then family decisions.

``scan`` reads each tensor once and feeds it to the content hash, the finiteness check
and the sketch of every requested space. The catalog is not open meanwhile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from zoo.checkpoint import ContentHash, Header, as_float, stream
from zoo.domain import Family, Space
from zoo.errors import AmbiguousBase, BadWeights, FamilyMismatch
from zoo.sketch import sketch_array

if TYPE_CHECKING:  # pragma: no cover
    from zoo.adapter import Adapter

@dataclass
class Scan:
    """The result of one pass over a checkpoint."""

    header: Header
    content_hash: str
    raw: dict[tuple, np.ndarray]  # Space.key -> raw sketch of the weights (not of the delta)

    def delta(self, sp: Space) -> np.ndarray:
        """The sketch of the task vector in a stored space: raw minus the base's raw sketch."""
        return self.raw[sp.key] - sp.base_vec
    body: dict[str, tuple[int, ...]]
    head: list[str]


def float_body(header: Header) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every float tensor: the body when a checkpoint founds a family."""
    return {t.canonical: t.shape for t in header.tensors if t.is_float}


# A fine-tune may lack a few base tensors (a token-classification model has no pooler):
# up to this share of the body's parameters, missing tensors count as unchanged (delta 0).
MISSING_MAX = 0.05


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def missing_body(header: Header, fam: Family) -> list[str]:
    """Body tensors of the family that the checkpoint does not hold."""
    have = header.by_canonical()
    return [k for k in fam.body if k not in have]


def fits(header: Header, fam: Family) -> bool:
    """Whether the checkpoint holds the family's body with equal shapes (a few small tensors may be absent)."""
    have = header.by_canonical()
    if any(k in have and have[k].shape != s for k, s in fam.body.items()):
        return False
    total = sum(_numel(s) for s in fam.body.values()) or 1
    gone = sum(_numel(fam.body[k]) for k in missing_body(header, fam))
    return gone <= MISSING_MAX * total and gone < total


def check_fits(header: Header, fam: Family, base_name: str) -> None:
    """Raise FamilyMismatch naming the first clashing or missing tensors."""
    have = header.by_canonical()
    clash = [(k, have[k].shape, s) for k, s in fam.body.items() if k in have and have[k].shape != s]
    missing = [] if fits(header, fam) else missing_body(header, fam)
    if clash:
        k, got, want = clash[0]
        raise FamilyMismatch(
            f"{header.path}: tensor {k!r} has shape {list(got)} but base {base_name!r} (family {fam.name!r}) has {list(want)}"
            f" ({len(clash)} clash(es)); this checkpoint is not a fine-tune of {base_name!r}: drop --base or name the right base")
    if missing:
        raise FamilyMismatch(
            f"{header.path}: {len(missing)} body tensor(s) of base {base_name!r} are missing (e.g. {missing[0]!r}), "
            f"more than {MISSING_MAX:.0%} of its parameters; this checkpoint is not a fine-tune of {base_name!r}")


def scan(header: Header, spaces: Iterable[Space], body: dict[str, tuple[int, ...]]) -> Scan:
    """One pass: content hash of every tensor, sketch of body tensors in every space, NaN/Inf check."""
    from zoo.threads import governor

    specs = list({s.key: s for s in spaces}.values())
    # Parallelism is within one tensor: the largest decides how many threads can help.
    governor(max((t.numel for t in header.tensors if t.is_float), default=0), samples=1)
    raw = {s.key: np.zeros(s.dim, dtype=np.float64) for s in specs}
    hasher = ContentHash()
    head: list[str] = []
    for info, tensor in stream(header):
        hasher.update(info, tensor)
        if not info.is_float:
            continue
        used = [s for s in specs if s.includes(info.canonical)] if body.get(info.canonical) == info.shape else []
        if info.canonical not in body or body[info.canonical] != info.shape:
            head.append(info.name)
        values = as_float(info, tensor)
        for s in used:
            sketch_array(values, info.canonical, s.seed, s.dim, raw[s.key])
        # A NaN or Inf always reaches a bucket, so a sketch that was finite tells for free;
        # tensors no sketch covers get an explicit check.
        finite = np.isfinite(raw[used[0].key]).all() if used else bool(np.isfinite(values).all())
        if not finite:
            raise BadWeights(f"{header.path}: NaN or Inf in tensor {info.name!r}; zoo refuses such checkpoints: "
                             "fix the training run or drop the checkpoint")
    return Scan(header, hasher.hexdigest(), raw, body, head)


def scan_adapter(ad: "Adapter", fam: Family, parent_delta: dict[int, np.ndarray], parent: Any = None) -> Scan:
    """The scan of a LoRA adapter bound to ``fam``: its raw sketch is the base's, plus its
    parent's task vector (``parent_delta`` by space id), plus the sketch of its own change
    (B·A block by block). ``parent`` reads the parent's dense weights, needed only when the
    adapter replaces whole body tensors."""
    from zoo.adapter import adapter_header, sketch_delta

    raw = {sp.key: sp.base_vec + parent_delta[sp.id] for sp in fam.spaces}
    sketch_delta(ad, fam.spaces, fam.body, raw, parent)
    head = sorted({m.name for m in ad.modules if ad.target(m) not in fam.body} |
                  {t.name for t in ad.whole if ad.canon[t.name] not in fam.body})
    return Scan(adapter_header(ad), ad.content_hash(), raw, fam.body, head)


def fill_missing(sc: Scan, fam: Family) -> list[str]:
    """Add the base's sketch of body tensors the checkpoint lacks: they count as unchanged.

    By linearity this makes S(theta) - S(base) ignore them, as a delta of zero would.
    Returns the names filled in.
    """
    from zoo.checkpoint import Reader, read_header

    gone = missing_body(sc.header, fam)
    if not gone:
        return []
    base = read_header(fam.base_uri)
    with Reader(base) as r:
        by = base.by_canonical()
        for name in gone:
            values = as_float(by[name], r.read(by[name]))
            for s in fam.spaces:
                if s.includes(name) and s.key in sc.raw:
                    sketch_array(values, name, s.seed, s.dim, sc.raw[s.key])
            r.release(by[name])
    return gone


@dataclass
class Decision:
    """Which family a checkpoint joins (or founds), and why."""

    family: Family | None
    is_base: bool
    note: str = ""


def choose_base(scan_: Scan, fams: list[Family], base_names: dict[int, str]) -> Decision:
    """Among families that fit, the one whose base is nearest in weight space.

    By linearity the distance to each base comes from sketches: S(theta) - S(base).
    The nearest must be at most half as far as the runner-up, else the choice is ambiguous.
    """
    scored = []
    for f in fams:
        scored.append((float(np.linalg.norm(scan_.delta(f.space()))), f))
    scored.sort(key=lambda x: x[0])
    cands = [(base_names.get(f.id, f.name), d) for d, f in scored]
    best, runner = scored[0], scored[1]
    if best[0] <= 0.5 * runner[0]:
        return Decision(best[1], False, f"base inferred from weights: {cands[0][0]} (distance {cands[0][1]:.4g}, "
                                        f"next {cands[1][0]} at {cands[1][1]:.4g})")
    listing = ", ".join(f"{n} ({d:.4g})" for n, d in cands)
    raise AmbiguousBase(f"{scan_.header.path}: several bases fit this checkpoint and its weights do not single one out: "
                        f"{listing}; pass --base NAME")
