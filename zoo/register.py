"""Registration: checkpoints in (one streaming pass each, then one transaction), sketch
spaces backfilled, models removed.

Reading and sketching happen with the catalog closed; the write transaction only inserts.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from zoo import catalog
from zoo.adapter import FORMAT as ADAPTER_FORMAT
from zoo.cards import read_recipe
from zoo.checkpoint import (Header, arch_signature, default_name, expand_paths, file_stats, read_header,
                            weight_bytes)
from zoo.domain import (Family, Space, check_dim, check_filter, check_kind, check_meta, check_metric, check_name,
                         check_seed, union_body)
from zoo.errors import Conflict, ZooError, ZooValueError
from zoo.files import crash_point
from zoo.ingest import Decision, Scan, check_fits, choose_base, fill_missing, fits, float_body, scan
from zoo.results import AddResult, CacheScan, Edited, Removed, SpaceAdded
from zoo.store import Store

if TYPE_CHECKING:  # pragma: no cover
    from zoo.db import Conn

Edges = Sequence[tuple[str, str, "float | None"]]
RECORD = "zoo-record.json"


@dataclass
class Pending:
    """A scanned checkpoint waiting for the commit: what it is and where it goes."""

    scan: Scan
    decision: Decision
    kind: str
    parent_id: int | None
    family_key: int  # an existing family's id (>0) or a family founded in this batch (<0)
    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    stage_root: Path | None = None  # where its files were brought into the store, until settled


@dataclass
class _Batch:
    """What one add sees of the catalog before reading any weights."""

    fams: list[Family]
    base_names: dict[int, str]
    base_row: dict[str, Any] | None
    taken: set[str]
    new_fams: list[Family] = field(default_factory=list)
    # The DuckDB write connection the snapshot was read on: while that same connection is
    # open, nothing else can change the catalog, so the commit may trust the snapshot.
    held: tuple[Any, Any] | None = None

    def families_if_current(self, conn: Conn) -> dict[int, Family]:
        return {f.id: f for f in self.fams} if self.held == (conn, conn.raw) else {}


def add(store: Store, paths: Sequence[str | os.PathLike], name: str | None = None, base: str | None = None,
        dataset: str | None = None, task: str | None = None, seed: int | None = None,
        meta: dict[str, Any] | None = None, kind: str | None = None, lineage: Edges = (),
        expected: dict[int, np.ndarray] | None = None,
        on_commit: Callable[[Conn, list[AddResult]], None] | None = None,
        in_place: bool = False, ray: str | None = None) -> list[AddResult]:
    """Register checkpoints (see ``Zoo.add``): all of them or none. Their files are brought into
    the store first (``weights/<content hash>``) and read from there, unless ``in_place``.
    Hugging Face repo ids and cache folders resolve to their cached snapshot (``zoo.hub``).
    ``ray``: the passes run as tasks of that Ray cluster ("local": one started here; ``zoo.fanout``)."""
    from zoo import hub

    hub_refs: dict[Path, hub.HubRef] = {}
    raw = []
    for p in paths:
        ref = hub.resolve(str(p))
        if ref is not None:
            hub_refs[ref.path.absolute()] = ref
        raw.append(str(ref.path) if ref is not None else str(p))
    files = expand_paths(raw)
    if name and len(files) > 1:
        raise ZooValueError(f"--name {name!r} given for {len(files)} checkpoints; register them one by one or drop --name")
    check_kind(kind)
    check_name(name)
    check_seed(seed)
    if base is not None and kind == "base":
        raise ZooValueError("--base and --kind base contradict each other: a base has no base; drop one")
    # A small batch holds one connection throughout (one open, one schema check); a large
    # one closes the catalog while it reads weights, so other commands are not kept waiting.
    with store.held_for(sum(weight_bytes(f) for f in files)):
        with store.read() as conn:
            fams = catalog.families_snapshot(conn)
            # A taken --name is an error only for new weights (found at commit): adding the
            # same checkpoint again under its own name is a no-op, as scripts expect.
            batch = _Batch(fams, {f.id: f.base_name for f in fams if f.base_name is not None},
                           catalog.model(conn, base) if base else None, catalog.model_names(conn),
                           held=(conn, conn.raw) if conn.write and not conn.postgres else None)
        made: list[Path] = []  # folders this call put in the store: gone again if it fails
        try:
            def fields() -> dict[str, Any]:
                return dict(dataset=dataset, task=task, seed=seed, meta=dict(meta or {}))

            if ray is not None:
                from zoo.fanout import plan_on_ray

                pending = plan_on_ray(store, files, batch, name, kind, in_place, made, fields, hub_refs, ray)
            else:
                pending = [_scan_one(store, path, batch, name, kind, in_place, made, fields(),
                                     hub_refs.get(path.absolute())) for path in store.bar(files, "sketching")]
            for p in pending if expected is not None else []:
                for sp in p.decision.family.spaces if p.decision.family else []:
                    if sp.id in expected:
                        check_linearity(p.scan, sp, expected[sp.id])
            crash_point("add:staged")
            for p in pending:
                if p.stage_root is not None:
                    _settle(store, p, made)
            crash_point("add:settled")
            with store.write() as conn:
                results = commit(conn, pending, batch.new_fams, lineage, batch.families_if_current(conn))
                if on_commit is not None:
                    on_commit(conn, results)
                crash_point("add:in-transaction")
        except BaseException:
            for d in made:
                _drop_unregistered(store, d)
            raise
        crash_point("add:committed")
        _write_records(store, results)
        store.sync_indexes()
    return results


def add_from_cache(store: Store, cache: str | os.PathLike | None = None, dataset: str | None = None,
                   task: str | None = None) -> CacheScan:
    """Register every model of the Hugging Face cache that fits one of the zoo's families (as a
    fine-tune of it, one transaction each); the others are listed as skipped, with why."""
    from zoo import hub
    from zoo.adapter import is_adapter
    from zoo.errors import CheckpointError, FamilyMismatch, NotFound

    added, skipped = [], []
    with store.read() as conn:
        fams = catalog.families_snapshot(conn)
    if not fams:
        raise ZooValueError("the zoo has no family yet: register a base first (`zoo add PATH --kind base`), "
                            "then scan the cache for its fine-tunes")
    for ref in store.bar(hub.scan(Path(cache).expanduser() if cache else None), "cache", unit="repo"):
        try:
            if is_adapter(ref.path):  # an adapter joins its base's family, when the zoo holds the base
                [res] = add(store, [ref.path], dataset=dataset, task=task)
            else:
                if not any(fits(read_header(ref.path), f) for f in fams):
                    raise FamilyMismatch(f"its architecture fits none of this zoo's families "
                                         f"({', '.join(f.name for f in fams)})")
                [res] = add(store, [ref.path], dataset=dataset, task=task, kind="finetune")
        except (FamilyMismatch, CheckpointError, Conflict, NotFound) as e:
            skipped.append({"repo_id": ref.repo_id, "revision": ref.revision, "why": str(e)})
            continue
        added.append(dict(res.as_dict(), repo_id=ref.repo_id, revision=ref.revision))
    return CacheScan(str(Path(cache).expanduser() if cache else hub.cache_dir()), added, skipped)


def _scan_one(store: Store, path: Path, batch: _Batch, name: str | None, kind: str | None, in_place: bool,
              made: list[Path], fields: dict[str, Any], ref: Any = None,
              staged: tuple[Header, Path | None, Header] | None = None, planned: Pending | None = None) -> Pending:
    """Bring one checkpoint into the store (unless in place or already the zoo's), scan it and
    decide its family and name (a Hub snapshot: its repository's name, with repo id and commit).
    ``staged``/``planned``: the staging and the plan a Ray worker already made (``zoo.fanout``);
    the plan is used when the batch has founded no family since the worker saw the families."""
    from zoo.adapter import is_adapter

    if is_adapter(path):
        return _scan_adapter(store, path, batch, name, kind, in_place, made, fields, ref)
    source, root, header = staged or stage_one(store, path, in_place, made)
    with _as_source(root, source.path):
        p = planned if planned is not None and not batch.new_fams else \
            plan(header, batch.fams + batch.new_fams, batch.base_names, batch.base_row, kind, store.default_space)
    recipe = read_recipe(source.path)
    if recipe is not None and recipe["models"] and not p.decision.is_base:
        # A merge made by another tool (mergekit): its inputs become lineage at the commit.
        fields["meta"]["merge_recipe"] = recipe
        if kind is None:
            p.kind = "centroid" if recipe["method"] == "linear" else "external"
    p.name = name or catalog.first_free(ref.name if ref is not None else default_name(path), batch.taken)
    batch.taken.add(p.name)
    if p.decision.is_base:
        _found_family(batch, p, store.default_space)
    fields["meta"]["registered_from"] = str(source.path)
    if ref is not None:
        fields["meta"]["hub"] = ref.as_meta()
    p.fields, p.stage_root = fields, root
    return p


def stage_one(store: Store, path: Path, in_place: bool, made: list[Path]) -> tuple[Header, Path | None, Header]:
    """(source header, staging folder or None, the header the scan reads): the checkpoint's
    files linked into the store first, so the scan reads exactly the bytes the store keeps."""
    source = read_header(path)
    if in_place or store.owns(source.path):
        return source, None, source
    root, staged = store.stage(source.path, source.shards)
    made.append(root)
    top = source.path if source.path.is_dir() else source.path.parent
    # Hard links (the usual case) are the same files: the header needs no second parse.
    return source, root, _moved(source, top, root.resolve(), _file_ids(source.shards)) or read_header(staged)


def _scan_adapter(store: Store, path: Path, batch: _Batch, name: str | None, kind: str | None, in_place: bool,
                  made: list[Path], fields: dict[str, Any], ref: Any = None) -> Pending:
    """A LoRA adapter joins its parent's family (the parent: ``--base``, else the model its
    ``base_model_name_or_path`` names); its sketch is its parent's plus that of B·A."""
    from zoo.adapter import read_adapter, weight_file
    from zoo.sources import find_parent, scan_registered_parent

    if kind == "base":
        raise ZooValueError(f"{path}: a LoRA adapter cannot be a base (it changes one); register its base with --kind base")
    ad = read_adapter(path)
    source_path, root = ad.path, None
    if not in_place and not store.owns(ad.path):
        root, staged = store.stage(ad.path, [weight_file(ad.path)])
        made.append(root)
        ad = read_adapter(staged)
    with store.read() as conn, _as_source(root, source_path):
        parent = batch.base_row or find_parent(conn, ad.base_ref, source_path)
        fam, sc = scan_registered_parent(store, conn, ad, parent)
    how = "base given" if batch.base_row else f"base from adapter_config.json ({ad.base_ref})"
    note = f"LoRA adapter on {parent['name']} ({how}): {len(ad.modules)} module(s), rank " \
           f"{'/'.join(sorted({str(m.rank) for m in ad.modules}))}"
    p = Pending(sc, Decision(fam, False, note), kind or "adapter", parent["id"], fam.id)
    p.name = name or catalog.first_free(ref.name if ref is not None else default_name(source_path), batch.taken)
    batch.taken.add(p.name)
    fields["meta"].update(registered_from=str(source_path), adapter_parent=parent["id"],
                          adapter={"ranks": sorted({m.rank for m in ad.modules}), "modules": len(ad.modules),
                                   "base_model_name_or_path": ad.base_ref})
    if ref is not None:
        fields["meta"]["hub"] = ref.as_meta()
    p.fields, p.stage_root = fields, root
    return p


@contextmanager
def _as_source(root: Path | None, source: Path) -> Iterator[None]:
    """Errors about a staged copy name the path the user gave, not the store's staging folder."""
    try:
        yield
    except ZooError as e:
        if root is None or str(root) not in str(e):
            raise
        raise type(e)(str(e).replace(str(root), str(source if source.is_dir() else source.parent))) from e


def _settle(store: Store, p: Pending, made: list[Path]) -> None:
    """Move a staged checkpoint to its content address and point the scan's header there."""
    staged = p.scan.header.path
    ids = _file_ids(p.scan.header.shards)
    final = store.settle(p.stage_root, p.scan.content_hash)
    made[made.index(p.stage_root)] = final
    if p.scan.header.format == ADAPTER_FORMAT:
        from zoo.adapter import adapter_header, read_adapter

        ad = read_adapter(final)
        ad.prefix = p.scan.header.prefix
        p.scan.header = adapter_header(ad)
        return
    p.scan.header = _moved(p.scan.header, p.stage_root.resolve(), final.resolve(), ids) or \
        read_header(final if staged == p.stage_root else final / staged.name)


def _moved(header: Header, root: Path, final: Path, ids: list[tuple[int, int]] | None) -> Header | None:
    """The header of a checkpoint whose folder ``root`` is now (also) ``final``, renamed or
    hard-linked: the same files, same inodes as ``ids``, without parsing it again; None when
    the files differ (copies, or weights the store already held in files of their own)."""
    import dataclasses

    def rebase(p: Path) -> Path:
        return final / p.relative_to(root)

    try:
        shards = [rebase(f) for f in header.shards]
    except ValueError:
        return None
    if ids is None or _file_ids(shards) != ids:
        return None
    return dataclasses.replace(header, path=rebase(header.path), shards=shards)


def _file_ids(files: list[Path]) -> list[tuple[int, int]] | None:
    try:
        return [(st.st_dev, st.st_ino) for st in map(os.stat, files)]
    except OSError:
        return None


def _drop_unregistered(store: Store, folder: Path) -> None:
    """Remove a store folder no committed model uses (a failed add's, not an earlier add's)."""
    import shutil

    if folder.name.startswith(".stage-"):
        shutil.rmtree(folder, ignore_errors=True)
        return
    with store.read() as conn:
        if catalog.model_by_hash(conn, folder.name) is None:
            shutil.rmtree(folder, ignore_errors=True)


def _write_records(store: Store, results: list[AddResult]) -> None:
    """A record of each new model's catalog row beside its files in the store (not beside
    files referenced in place): what ``zoo doctor`` rebuilds a lost catalog from."""
    created = [r.id for r in results if r.created]
    if created:
        # Beside the index sync when the command holds the catalog: both only read committed rows.
        store.background(lambda conn: [write_record(store, conn, mid) for mid in created])


def write_record(store: Store, conn: Conn, model_id: int) -> None:
    """Write (whole) ``zoo-record.json`` for a model whose folder the zoo owns: its row, family,
    base and parents with relation and weight."""
    import json

    row = catalog.record_of(conn, model_id)
    path = Path(row["uri"])
    folder = path if path.is_dir() else path.parent
    if not store.owns(folder) or not folder.is_dir():
        return
    rec = {k: row[k] for k in ("id", "name", "kind", "dataset", "task", "seed", "content_hash", "format", "uri", "meta",
                               "family", "base", "parents", "evaluations")}
    rec["created_at"] = str(row["created_at"])
    tmp = folder / ".zoo-record.json.tmp"
    tmp.write_text(json.dumps(rec, default=str, indent=1))
    os.replace(tmp, folder / RECORD)


def _found_family(batch: _Batch, p: Pending, default: Space) -> None:
    """A checkpoint that founds a family: the family exists in this batch until the commit."""
    header = p.scan.header
    sp = Space(default.dim, default.seed, None, default.metric, base_vec=p.scan.raw[default.key])
    fam = Family(-(len(batch.new_fams) + 1), p.name, "", None, header.prefix, p.scan.body, [sp], base_uri=str(header.path))
    batch.new_fams.append(fam)
    batch.base_names[fam.id] = p.name
    p.family_key = fam.id


def plan(header: Header, fams: list[Family], base_names: dict[int, str], base_row: dict | None,
         kind: str | None, default_space: Space) -> Pending:
    """Scan a checkpoint (one pass) and decide its family: the given base's, the one it fits,
    the nearest of several, or a new one."""
    if base_row is not None:
        fam = next(f for f in fams if f.id == base_row["family_id"])
        check_fits(header, fam, base_row["name"])
        sc = scan(header, fam.spaces, fam.body)
        note = f"base given: {base_row['name']}" + filled_note(fill_missing(sc, fam))
        return Pending(sc, Decision(fam, False, note), kind or "finetune", base_row["id"], fam.id)
    fitting = [f for f in fams if fits(header, f)]
    if not fitting or kind == "base":
        sc = scan(header, [default_space], float_body(header))
        why = "registered as a base: new family" if fitting else "no family fits: new family"
        return Pending(sc, Decision(None, True, why), "base", None, 0)
    sc = scan(header, [sp for f in fitting for sp in f.spaces], union_body(fitting))
    decision = Decision(fitting[0], False, "family found by architecture") if len(fitting) == 1 else \
        choose_base(sc, fitting, base_names)
    fam = decision.family
    sc.body = fam.body
    sc.head = [t.name for t in header.tensors if t.is_float and fam.body.get(t.canonical) != t.shape]
    decision.note += filled_note(fill_missing(sc, fam))
    return Pending(sc, decision, kind or "finetune", fam.base_model_id, fam.id)


def commit(conn: Conn, pending: list[Pending], new_fams: list[Family], extra_lineage: Edges,
           current: dict[int, Family] | None = None) -> list[AddResult]:
    """Insert the batch in the caller's transaction; weights already registered are recognised, not repeated.
    ``current``: families known unchanged since the batch read them (else read again here)."""
    results: list[AddResult] = []
    fam_ids: dict[int, int] = {}
    fam_info: dict[int, tuple[str, list[Space]]] = {}  # family id -> (name, spaces), read once per batch
    seen: dict[str, AddResult] = {}
    for p in pending:
        h = p.scan.content_hash
        prev = seen.get(h) or _existing(conn, h, p.name)
        if prev is not None:
            results.append(AddResult(prev.name, prev.id, False, prev.kind, prev.family,
                                     f"same weights as {prev.name!r} (content hash); not registered again; "
                                     "change its metadata with `zoo set`"))
            continue
        if p.family_key < 0 and p.family_key not in fam_ids:
            fam_ids[p.family_key] = _insert_family(conn, next(f for f in new_fams if f.id == p.family_key))
        fid = fam_ids.get(p.family_key, p.family_key)
        if fid not in fam_info:
            known = (current or {}).get(fid)
            fam_info[fid] = (known.name, known.spaces) if known is not None else \
                (catalog.family_by_id(conn, fid)["name"], catalog.spaces(conn, fid))
        recipe = p.fields["meta"].get("merge_recipe") if not extra_lineage else None
        edges = _recipe_edges(conn, recipe) if recipe else []
        mid = _insert_model(conn, p, fid, fam_info[fid][1])
        parent = p.parent_id
        if parent is not None and not extra_lineage and not edges:
            catalog.insert_lineage(conn, mid, parent, "finetuned_from")
        for parent_id, rel, w in edges:
            catalog.insert_lineage(conn, mid, parent_id, rel, w)
        for parent_name, rel, w in extra_lineage:
            catalog.insert_lineage(conn, mid, catalog.model(conn, parent_name)["id"], rel, w)
        seen[h] = AddResult(p.name, mid, True, p.kind, fam_info[fid][0], p.decision.note)
        results.append(seen[h])
    return results


def _recipe_edges(conn: Conn, recipe: dict[str, Any]) -> list[tuple[int, str, float | None]]:
    """Lineage of a mergekit output from its recipe: its registered inputs as ``averaged_from``
    (linear; weights normalised as mergekit does unless ``normalize: false``) or
    ``merged_from`` (other methods); inputs not in the zoo are listed in the recipe's meta."""
    from zoo.errors import NotFound
    from zoo.sources import find_parent

    found, missing = [], []
    for ref, w in recipe["models"]:
        row = None
        for cand in ([ref.split("+", 1)[1], ref.split("+", 1)[0]] if "+" in ref else [ref]):  # "base+lora" syntax
            try:
                row = find_parent(conn, cand, Path(cand))
                break
            except (NotFound, ZooValueError):
                continue
        (found if row is not None else missing).append((row, w) if row is not None else ref)
    recipe["unresolved"] = missing
    linear = recipe["method"] == "linear"
    ws = [w for _, w in found]
    total = sum(ws) if all(w is not None for w in ws) else None
    scale = 1.0 / total if linear and recipe["normalize"] and total else 1.0
    seen: set[int] = set()
    edges = []
    for row, w in found:
        if row["id"] not in seen:
            seen.add(row["id"])
            edges.append((row["id"], "averaged_from" if linear else "merged_from", None if w is None else w * scale))
    return edges


def _existing(conn: Conn, content_hash: str, name: str) -> AddResult | None:
    """The model with these weights, if registered; else Conflict when ``name`` is taken."""
    row, name_taken = catalog.model_by_hash_or_name(conn, content_hash, name)
    if row is None:
        if name_taken:
            raise Conflict(f"a model named {name!r} already exists; choose another --name")
        return None
    return AddResult(row["name"], row["id"], False, row["kind"], catalog.family_by_id(conn, row["family_id"])["name"])


def _insert_family(conn: Conn, fam: Family) -> int:
    sp = fam.spaces[0]
    fid = catalog.insert_family(conn, catalog.unique_family_name(conn, fam.name), arch_signature(list(fam.body.items())),
                                fam.prefix, fam.body)
    catalog.insert_space(conn, fid, sp.dim, sp.seed, sp.metric, None, sp.base_vec)
    return fid


def _insert_model(conn: Conn, p: Pending, fid: int, spaces: list[Space]) -> int:
    header = p.scan.header
    meta = dict(p.fields["meta"])
    meta.update(prefix=header.prefix, head=p.scan.head, note=p.decision.note, files=file_stats(header))
    if header.config and header.config.get("id2label"):
        meta["id2label"] = header.config["id2label"]
    mid = catalog.insert_model(
        conn, name_checked=True, name=p.name, family_id=fid, kind=p.kind, uri=str(header.path), format=header.format,
        content_hash=p.scan.content_hash, dataset=p.fields["dataset"], task=p.fields["task"], seed=p.fields["seed"],
        n_params=header.n_params, dtype=header.dtype, meta=meta)
    if p.decision.is_base:
        catalog.set_family_base(conn, fid, mid)
    for sp in spaces:
        catalog.insert_sketch(conn, mid, sp.id, np.zeros(sp.dim) if p.decision.is_base else p.scan.delta(sp))
    return mid


def space_add(store: Store, family: str | None, dim: int, seed: int, metric: str,
              tensor_filter: str | None) -> SpaceAdded:
    """Add a sketch space to a family and backfill the sketches of its models (one read each)."""
    sp = Space(check_dim(dim), seed, check_filter(tensor_filter), check_metric(metric))
    with store.read() as conn:
        fam = store.family(conn, family)
        base = catalog.model_by_id(conn, fam.base_model_id)
        rows = [catalog.model(conn, m["name"]) for m in catalog.list_models(conn, family=fam.name)]
    raws: dict[int, np.ndarray] = {}
    for row in store.bar(rows, "backfilling"):  # by id: an adapter's parent comes before it
        if row["format"] == ADAPTER_FORMAT:
            sc = _adapter_backfill(store, row, fam, sp, raws)
        else:
            sc = scan(read_header(store.weights(row)), [sp], fam.body)
        if sc.content_hash != row["content_hash"]:
            raise Conflict(f"{row['uri']} changed since {row['name']!r} was registered (content hash differs); "
                           "re-register it or remove it before adding a space")
        raws[row["id"]] = sc.raw[sp.key]
    base_vec = raws[base["id"]]
    with store.write() as conn:
        sid = catalog.insert_space(conn, fam.id, dim, seed, metric, tensor_filter, base_vec)
        for mid, raw in raws.items():
            catalog.insert_sketch(conn, mid, sid, np.zeros(dim) if mid == base["id"] else raw - base_vec)
    store.sync_indexes()
    return SpaceAdded(sid, fam.name, dim, seed, metric, len(raws))


def _adapter_backfill(store: Store, row: dict[str, Any], fam: Family, sp: Space, raws: dict[int, np.ndarray]) -> Scan:
    """An adapter's raw sketch in a new space: its parent's (backfilled just before) plus B·A's."""
    from zoo.adapter import adapter_header, bind, read_adapter, sketch_delta
    from zoo.sources import open_readers, source

    ad = bind(read_adapter(store.weights(row)), fam.body, fam.name)
    raw = {sp.key: raws[row["meta"]["adapter_parent"]].copy()}
    if ad.body_whole(fam.body):
        with store.read() as conn:
            parent, base_path = catalog.model_by_id(conn, row["meta"]["adapter_parent"]), store.base_weights(conn, fam)
            src = source(store, conn, fam, parent)
        with open_readers(base_path, [src], fam) as (_, [reader]):
            sketch_delta(ad, [sp], fam.body, raw, reader)
    else:
        sketch_delta(ad, [sp], fam.body, raw)
    return Scan(adapter_header(ad), ad.content_hash(), raw, fam.body, [])


def edit(store: Store, name: str, new_name: str | None = None, dataset: str | None = None, task: str | None = None,
         seed: int | None = None, meta: dict[str, Any] | None = None) -> Edited:
    """Change a model's name, dataset, task, seed or metadata keys (its weights and sketches stay);
    an empty string clears dataset or task."""
    check_name(new_name)
    check_seed(seed)
    with store.write() as conn:
        row = catalog.model(conn, name)
        values: dict[str, Any] = {k: v for k, v in (("name", new_name), ("dataset", dataset), ("task", task),
                                                   ("seed", seed)) if v is not None and v != row[k]}
        for key in ("dataset", "task"):
            if values.get(key) == "":
                values[key] = None
        if meta:
            merged = dict(row["meta"], **check_meta(meta))
            if merged != row["meta"]:
                values["meta"] = merged
        if not values:
            raise ZooValueError(f"nothing to change on {row['name']!r}: give --name, --dataset, --task, --seed or --meta "
                                "with a new value")
        catalog.update_model(conn, row["id"], **values)
        write_record(store, conn, row["id"])
    changed = {k: {"old": row[k], "new": v} for k, v in values.items()}
    return Edited(new_name or row["name"], row["id"], changed)


def relocate(store: Store, name: str, path: str | os.PathLike) -> Edited:
    """Point a model at its checkpoint's new place, after one pass proves the weights are the
    registered ones (same content hash)."""
    header, content_hash = identify(path)
    with store.read() as conn:
        row = catalog.model(conn, name)
    if content_hash != row["content_hash"]:
        raise Conflict(f"{header.path} holds other weights than model {row['name']!r} (content hash differs); "
                       "give the checkpoint that was registered, or register this one under a new name")
    with store.write() as conn:
        catalog.update_model(conn, row["id"], uri=str(header.path), format=header.format,
                             meta=dict(row["meta"], files=file_stats(header)))
        write_record(store, conn, row["id"])
    return Edited(row["name"], row["id"], {"uri": {"old": row["uri"], "new": str(header.path)}})


def identify(path: str | os.PathLike) -> tuple[Header, str]:
    """(header, content hash) of a checkpoint or adapter folder, in one pass."""
    from zoo.adapter import adapter_header, is_adapter, read_adapter

    if is_adapter(path):
        ad = read_adapter(path)
        return adapter_header(ad), ad.content_hash()
    header = read_header(path)
    return header, scan(header, [], {}).content_hash


def rm(store: Store, name: str, force: bool = False) -> Removed:
    """Remove a model from the catalog; files the zoo wrote itself (under ``checkpoints/``) go too."""
    with store.write() as conn:
        m = catalog.model(conn, name)
        orphans = catalog.delete_model(conn, m["id"], force)
    path = Path(m["uri"])
    owned = store.owns(path)
    if owned:
        in_store = store.weights_dir.resolve() in path.resolve().parents
        path = store.weights_dir / m["content_hash"] if in_store else path
        shutil.rmtree(path, ignore_errors=True)
    store.sync_indexes()
    return Removed(m["name"], m["id"], orphans, str(path) if owned else None)


def filled_note(names: list[str]) -> str:
    if not names:
        return ""
    return f"; {len(names)} base tensor(s) absent, counted as unchanged (e.g. {names[0]})"


def check_linearity(sc: Scan, sp: Space, want: np.ndarray) -> None:
    """A materialized point's sketch must equal the weighted average of its members' sketches."""
    got = sc.delta(sp)
    scale = max(float(np.linalg.norm(want)), float(np.linalg.norm(got)), 1e-12)
    err = float(np.linalg.norm(got - want)) / scale
    if err > 1e-4:
        raise ZooError(f"internal error: the sketch of {sc.header.path} differs from the weighted average of its "
                       f"members' sketches by {err:.2e} (relative, space {sp.id}); the merge is wrong, nothing was "
                       "registered; please report this")
