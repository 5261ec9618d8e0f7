"""``zoo doctor``: the catalog, the weight store, the zoo's own checkpoints and the indexes,
checked against each other; with ``repair``, what can be put right is.

Every model folder the zoo owns holds ``zoo-record.json`` (its row, family, base, parents),
so a catalog that is lost, or unreadable (set aside by ``--repair``), is rebuilt from the
store: names, kinds, datasets, tasks, seeds, metadata, lineage and evaluations come back;
the runs' history and extra sketch spaces do not.

Opening the catalog already finishes pending write-backs and fails runs whose process is
gone (``Store.ensure``); the doctor reports what else it finds:

- a model whose files are missing or changed (repaired, for a store copy, by bringing the
  weights in again from ``meta.registered_from`` when they still hash as registered);
- folders no model uses: ``weights/<hash>`` of no model, ``checkpoints/NAME`` of no model
  and no pending write-back, a staging folder of a process that is gone, a hidden temporary
  folder with no writer (repaired by removing them);
- a FAISS index that disagrees with the catalog (repaired by rebuilding it).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from zoo import catalog
from zoo.errors import CatalogUnreadable, Conflict, SourceChanged, ZooError
from zoo.results import Checkup
from zoo.store import Store, process_alive


def doctor(store: Store, repair: bool = False) -> Checkup:
    """Check (and with ``repair`` mend) the zoo; ``ok`` when nothing is left wrong."""
    problems = []
    try:
        store.ensure()
    except CatalogUnreadable as e:
        if not repair:
            raise
        aside = store.set_aside_catalog()
        problems.append(_problem("catalog", store.catalog_name, str(e), True,
                                 f"set aside as {aside.name}; rebuilt from the store's records"))
        store.ensure()
    problems += _unregistered(store, repair)
    with store.read() as conn:
        rows = [catalog.model_by_id(conn, m["id"]) for m in catalog.list_models(conn)]
    problems += [*_models(store, rows, repair), *_orphans(store, rows, repair), *_indexes(store, repair)]
    checked = {"models": len(rows), "store_folders": _count(store.weights_dir), "checkpoint_folders":
               _count(store.checkpoints_dir)}
    return Checkup(all(p["repaired"] for p in problems), checked, problems)


def _records(store: Store) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, record) of every model folder the zoo owns that has a ``zoo-record.json``, oldest first."""
    from zoo.register import RECORD

    found = []
    for top in (store.weights_dir, store.checkpoints_dir):
        for f in top.glob(f"*/{RECORD}") if top.is_dir() else []:
            try:
                found.append((f.parent, json.loads(f.read_text())))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda fr: (fr[1].get("kind") != "base", fr[1].get("id", 0)))


def _unregistered(store: Store, repair: bool) -> list[dict[str, Any]]:
    """Models in the store whose rows the catalog lacks (a lost or set-aside catalog): registered
    again from their records, bases first, parents before children, lineage and metadata kept."""
    from zoo.domain import RESERVED_META
    from zoo.register import add

    keep = {"members_key", "merge", "spec", "run_id", "start_kind", "registered_from", "merge_recipe"}
    out = []
    records = _records(store)
    names = {rec.get("id"): rec["name"] for _, rec in records}  # an adapter's parent is recorded by id
    for folder, rec in records:
        with store.read() as conn:
            if catalog.model_by_hash(conn, rec["content_hash"]) is not None:
                continue
            known = {n for n in [p["name"] for p in rec.get("parents", [])] + [rec.get("base")]
                     if n and catalog.name_taken(conn, n)}
        fixed = False
        if repair:
            parents = [p for p in rec.get("parents", []) if p["name"] in known]
            up = next((p["name"] for p in parents if p["relation"] == "finetuned_from"), None)
            base = None if rec["kind"] == "base" else up or (rec.get("base") if rec.get("base") in known else None)
            parent_of_adapter = names.get((rec.get("meta") or {}).get("adapter_parent"))
            if parent_of_adapter is not None:
                base = parent_of_adapter
            meta = {k: v for k, v in (rec.get("meta") or {}).items() if k not in RESERVED_META or k in keep}
            path = folder / Path(rec["uri"]).name if Path(rec["uri"]).name != folder.name else folder
            evals = rec.get("evaluations") or []

            def restore_evaluations(conn: Any, results: list[Any]) -> None:
                for e in evals:
                    catalog.insert_evaluation(conn, model_id=results[0].id, **e)

            add(store, [path], name=rec["name"], base=base, dataset=rec.get("dataset"), task=rec.get("task"),
                seed=rec.get("seed"), meta=meta, kind=rec["kind"], in_place=True, on_commit=restore_evaluations,
                lineage=[(p["name"], p["relation"], p["weight"]) for p in parents if p["relation"] != "finetuned_from"])
            fixed = True
        out.append(_problem("unregistered model", rec["name"], f"{folder} holds a model the catalog does not list",
                            fixed, "registered again from its record" if fixed else "`zoo doctor --repair`"))
    return out


def _count(d: Path) -> int:
    return sum(1 for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else 0


def _problem(kind: str, what: str, detail: str, repaired: bool, fix: str) -> dict[str, Any]:
    return {"kind": kind, "what": what, "detail": detail, "repaired": repaired, "fix": fix}


def _models(store: Store, rows: list[dict[str, Any]], repair: bool) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        try:
            store.weights(row)
        except SourceChanged as e:
            fixed = repair and _bring_back(store, row)
            out.append(_problem("model files", row["name"], str(e), fixed,
                                "brought in again from its source" if fixed else
                                f"restore the files, `zoo relocate {row['name']} PATH`, or `zoo rm {row['name']}`"))
    return out


def _bring_back(store: Store, row: dict[str, Any]) -> bool:
    """Re-link a store model's files from the path it was registered from, if they still hash the same."""
    from zoo.checkpoint import file_stats
    from zoo.register import identify

    source = row["meta"].get("registered_from")
    if not source or not store.owns(row["uri"]) or not Path(source).exists():
        return False
    try:
        header, _ = identify(source)
        root, staged = store.stage(header.path, header.shards)
        _, content_hash = identify(staged)
    except ZooError:
        return False
    if content_hash != row["content_hash"]:
        shutil.rmtree(root, ignore_errors=True)
        return False
    shutil.rmtree(store.weights_dir / row["content_hash"], ignore_errors=True)
    final = store.settle(root, row["content_hash"])
    fixed, _ = identify(final if staged == root else final / staged.name)
    with store.write() as conn:
        catalog.update_model(conn, row["id"], uri=str(fixed.path), meta=dict(row["meta"], files=file_stats(fixed)))
    return True


def _orphans(store: Store, rows: list[dict[str, Any]], repair: bool) -> list[dict[str, Any]]:
    hashes = {r["content_hash"] for r in rows}
    used = {Path(r["uri"]).resolve() for r in rows} | {Path(p["path"]).resolve() for p in store.pending()}
    found = []
    from zoo.register import RECORD

    for d in sorted(store.weights_dir.iterdir()) if store.weights_dir.is_dir() else []:
        if (d / RECORD).is_file():
            continue  # a model folder: registered, or handled by _unregistered; never removed
        if d.name.startswith(".stage-"):
            pid = d.name.split("-")[1]  # .stage-<pid>-<random>
            if not (pid.isdigit() and process_alive(int(pid))):
                found.append((d, "a staging folder of a process that is gone"))
        elif d.is_dir() and d.name not in hashes:
            found.append((d, "store folder of no model"))
    for d in sorted(store.checkpoints_dir.iterdir()) if store.checkpoints_dir.is_dir() else []:
        if not d.is_dir():
            continue
        name = d.name[1:].rsplit(".", 1)[0] if d.name.startswith(".") else d.name  # .<name>.<random>: a temp folder
        if d.resolve() in used or (d / RECORD).is_file() or _being_written(store, name):
            continue
        found.append((d, "temporary folder with no writer" if d.name.startswith(".") else "checkpoint folder of no model"))
    out = []
    for d, why in found:
        if repair:
            shutil.rmtree(d, ignore_errors=True)
        out.append(_problem("orphan", str(d), why, repair and not d.exists(), "removed" if repair else "`zoo doctor --repair`"))
    return out


def _being_written(store: Store, name: str) -> bool:
    from zoo.files import exclusive

    try:
        with exclusive(store.checkpoints_dir / f".{name}.lock", f"checkpoints/{name}"):
            return False
    except Conflict:
        return True


def _indexes(store: Store, repair: bool) -> list[dict[str, Any]]:
    from zoo.index import SpaceIndex, choose_index

    out = []
    with store.read() as conn:
        for sp in catalog.spaces(conn):
            idx = SpaceIndex(store.index_dir, sp.id)
            fp = catalog.sketch_fingerprint(conn, sp.id)
            if idx.load() and idx.matches(fp, choose_index(fp["count"], sp.dim, store.memory_budget, sp.metric)):
                continue
            if repair:
                store.index(conn, sp, force=True)
            out.append(_problem("index", f"space {sp.id}", "missing, corrupt or behind the catalog", repair,
                                "rebuilt" if repair else "`zoo reindex` (queries also rebuild it when they need it)"))
    return out
