"""Where a model's dense weights come from: its checkpoint, or for an adapter its parent's
weights plus B·A. Exact distances and merges read every model through here.

Two steps, so the catalog is not held while weights are read: ``source`` looks up what a
model is made of (inside a read), ``open_readers`` opens the chain of readers (outside).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from zoo import catalog
from zoo.db import Conn
from zoo.domain import Family
from zoo.errors import NotFound, ZooValueError


@dataclass
class Source:
    """A model's weights: a checkpoint path, or an adapter folder on top of ``parent``
    (None: the family base)."""

    path: Path
    adapter: bool = False
    parent: "Source | None" = None


def source(store: Any, conn: Conn, fam: Family, item: dict[str, Any] | str | Path) -> Source:
    """The source of a model row, or of an unregistered checkpoint or adapter path."""
    from zoo.adapter import FORMAT, is_adapter, read_adapter

    if isinstance(item, dict):
        path = store.weights(item)
        if item["format"] != FORMAT:
            return Source(path)
        pid = item["meta"].get("adapter_parent")
        if pid is None:
            raise NotFound(f"adapter {item['name']!r} has no recorded parent; re-register it with `zoo add PATH --base NAME`")
        return Source(path, True, None if pid == fam.base_model_id else source(store, conn, fam, catalog.model_by_id(conn, pid)))
    path = Path(item).expanduser()
    if not is_adapter(path):
        return Source(path)
    parent = find_parent(conn, read_adapter(path).base_ref, path)
    if parent["family_id"] != fam.id:
        raise ZooValueError(f"{path}: the adapter's base {parent['name']!r} is not in family {fam.name!r}")
    return Source(path, True, None if parent["id"] == fam.base_model_id else source(store, conn, fam, parent))


def find_parent(conn: Conn, ref: str | None, path: Path) -> dict[str, Any]:
    """The registered model an adapter's ``base_model_name_or_path`` names: a model name, the
    path it was registered from, or its Hugging Face repo id (``org/name[@rev]``)."""
    if not ref:
        raise ZooValueError(f"{path}: the adapter names no base (base_model_name_or_path is empty); pass --base NAME")
    if catalog.name_taken(conn, ref):
        return catalog.model(conn, ref)
    p = Path(ref).expanduser()
    if p.exists():
        resolved = str(p.resolve())
        row = catalog.model_by_meta(conn, "registered_from", resolved) or catalog.model_by_uri(conn, resolved)
        if row is not None:
            return row
    repo = ref.split("@", 1)[0]
    row = catalog.model_by_meta(conn, "hub.repo_id", repo) if repo.count("/") == 1 else None
    if row is not None:
        return row
    raise NotFound(f"{path}: its base {ref!r} (base_model_name_or_path) is not in this zoo; register the base first "
                   f"(`zoo add {ref} --kind base`) or pass --base NAME")


def _open(src: Source, fam: Family, base: Any, stack: ExitStack) -> Any:
    from zoo.adapter import AdapterReader, bind, read_adapter
    from zoo.checkpoint import Reader, read_header

    if not src.adapter:
        return stack.enter_context(Reader(read_header(src.path), fallback=base))
    parent = base if src.parent is None else _open(src.parent, fam, base, stack)
    return stack.enter_context(AdapterReader(bind(read_adapter(src.path), fam.body, fam.name), parent))


@contextmanager
def open_readers(base_path: Path, srcs: Sequence[Source], fam: Family) -> Iterator[tuple[Any, list[Any]]]:
    """(the base's reader, one dense reader per source); all closed at the end."""
    from zoo.checkpoint import Reader, read_header

    with ExitStack() as stack:
        base = stack.enter_context(Reader(read_header(base_path)))
        yield base, [_open(s, fam, base, stack) for s in srcs]


def gram(base_path: Path, srcs: Sequence[Source], fam: Family) -> np.ndarray:
    """Exact Gram matrix of the sources' task vectors (see ``geometry.exact_gram``)."""
    from zoo.geometry import exact_gram

    with open_readers(base_path, srcs, fam) as (base, readers):
        return exact_gram(base, readers, fam.body)


def scan_registered_parent(store: Any, conn: Conn, ad: Any, parent: dict[str, Any]) -> tuple[Family, Any]:
    """(family, scan) of an adapter on a registered ``parent`` (see ``ingest.scan_adapter``)."""
    from zoo.adapter import FORMAT, bind
    from zoo.ingest import scan_adapter

    if parent["format"] == FORMAT:
        raise ZooValueError(f"{ad.path}: its base {parent['name']!r} is itself an adapter; zoo keeps adapters on full "
                            f"checkpoints: merge it first (`zoo centroid --names {parent['name']} --merged`)")
    fam = store.family_of(conn, parent)
    bind(ad, fam.body, fam.name)
    delta = {sp.id: catalog.sketch_vectors(conn, sp.id, [parent["id"]])[1][0].astype(np.float64) for sp in fam.spaces}
    if not ad.body_whole(fam.body):
        return fam, scan_adapter(ad, fam, delta)
    with open_readers(store.base_weights(conn, fam), [source(store, conn, fam, parent)], fam) as (_, [reader]):
        return fam, scan_adapter(ad, fam, delta, reader)


def model_ref(store: Any, row: dict[str, Any]) -> Any:
    """What transformers loads for a model row (``finetune.ModelRef``): its checkpoint, or for
    an adapter its parent's checkpoint with the adapter merged in memory."""
    from zoo.adapter import FORMAT
    from zoo.finetune import ModelRef

    if row["format"] != FORMAT:
        return ModelRef(store.weights(row))
    with store.read() as conn:
        parent = catalog.model_by_id(conn, row["meta"]["adapter_parent"])
    return ModelRef(store.weights(parent), store.weights(row))
