"""``zoo doctor``: the catalog, the weight store, the zoo's own checkpoints and the indexes,
checked against each other; with ``repair``, what can be put right is.

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

import shutil
from pathlib import Path
from typing import Any

from zoo import catalog
from zoo.errors import Conflict, SourceChanged, ZooError
from zoo.results import Checkup
from zoo.store import Store, process_alive


def doctor(store: Store, repair: bool = False) -> Checkup:
    """Check (and with ``repair`` mend) the zoo; ``ok`` when nothing is left wrong."""
    store.ensure()
    with store.read() as conn:
        rows = [catalog.model_by_id(conn, m["id"]) for m in catalog.list_models(conn)]
    problems = [*_models(store, rows, repair), *_orphans(store, rows, repair), *_indexes(store, repair)]
    checked = {"models": len(rows), "store_folders": _count(store.weights_dir), "checkpoint_folders":
               _count(store.checkpoints_dir)}
    return Checkup(all(p["repaired"] for p in problems), checked, problems)


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
    from zoo.checkpoint import file_stats, read_header
    from zoo.ingest import scan

    source = row["meta"].get("registered_from")
    if not source or not store.owns(row["uri"]) or not Path(source).exists():
        return False
    try:
        header = read_header(source)
        root, staged = store.stage(header.path, header.shards)
        sc = scan(read_header(staged), [], {})
    except ZooError:
        return False
    if sc.content_hash != row["content_hash"]:
        shutil.rmtree(root, ignore_errors=True)
        return False
    shutil.rmtree(store.weights_dir / row["content_hash"], ignore_errors=True)
    final = store.settle(root, row["content_hash"])
    fixed = read_header(final if staged == root else final / staged.name)
    with store.write() as conn:
        catalog.update_model(conn, row["id"], uri=str(fixed.path), meta=dict(row["meta"], files=file_stats(fixed)))
    return True


def _orphans(store: Store, rows: list[dict[str, Any]], repair: bool) -> list[dict[str, Any]]:
    hashes = {r["content_hash"] for r in rows}
    used = {Path(r["uri"]).resolve() for r in rows} | {Path(p["path"]).resolve() for p in store.pending()}
    found = []
    for d in sorted(store.weights_dir.iterdir()) if store.weights_dir.is_dir() else []:
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
        if d.resolve() in used or _being_written(store, name):
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
