"""Reading the catalog as records: models, one model, lineage, runs, sketch spaces, and
read-only SQL. No weights, no indexes, no heavy imports: these verbs start fast.
"""
from __future__ import annotations

import os
from typing import Any

from zoo import catalog
from zoo.domain import RUN_STATUSES, SORT_COLUMNS, check_choice, check_k, check_kind
from zoo.errors import ZooValueError
from zoo.results import Lineage, Snapshot
from zoo.store import Store


def ls(store: Store, family: str | None = None, dataset: str | None = None, task: str | None = None,
       kind: str | None = None, search: str | None = None, sort: str = "id", descending: bool = False,
       limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Models, filtered by family name, dataset, task, kind and free text; sorted and paged."""
    _check_listing(kind, sort, limit, offset)
    with store.read() as conn:
        if family:
            catalog.family_by_name(conn, family)
        return catalog.list_models(conn, family, dataset, task, kind, search, sort, descending, limit, offset)


def count(store: Store, family: str | None = None, dataset: str | None = None, task: str | None = None,
          kind: str | None = None, search: str | None = None) -> int:
    """How many models ``ls`` lists with these filters (the total behind a page)."""
    _check_listing(kind, "id", None, 0)
    with store.read() as conn:
        if family:
            catalog.family_by_name(conn, family)
        return catalog.count_models(conn, family, dataset, task, kind, search)


def _check_listing(kind: str | None, sort: str, limit: int | None, offset: int) -> None:
    check_kind(kind)
    if sort not in SORT_COLUMNS:
        raise ZooValueError(f"--sort {sort!r} is not a column models sort by; use one of {', '.join(SORT_COLUMNS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit < 2**63):
        raise ZooValueError(f"--limit must be a whole number >= 1 (below 2**63), got {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**63:
        raise ZooValueError(f"--offset must be a whole number >= 0 (below 2**63), got {offset!r}")


def show(store: Store, name: str) -> dict[str, Any]:
    """A model's row, family, parents, children, evaluations and sketch norms."""
    with store.read() as conn:
        m = catalog.model(conn, name)
        m["family"] = catalog.family_by_id(conn, m["family_id"])["name"]
        m["parents"] = catalog.parents(conn, m["id"])
        m["children"] = catalog.children(conn, m["id"])
        m["evaluations"] = catalog.evaluations_of(conn, m["id"])
        m["sketches"] = [{"space_id": sp.id, "dim": sp.dim, "seed": sp.seed,
                          "norm": float(_norm(catalog.sketch_vectors(conn, sp.id, [m["id"]])[1]))}
                         for sp in catalog.spaces(conn, m["family_id"])]
        return m


def lineage(store: Store, name: str) -> Lineage:
    """The tree above (ancestors) and below (descendants) a model."""
    with store.read() as conn:
        m = catalog.model(conn, name)
        up, down = catalog.lineage_edges(conn, m["id"])
        return Lineage(m["name"], up, down)


def runs(store: Store, status: str | None = None, limit: int | None = None,
         model: str | None = None) -> list[dict[str, Any]]:
    """Fine-tuning runs, newest first, with start and result names and the eval accuracy;
    ``model``: only the runs that started from it or made it."""
    check_choice(status, RUN_STATUSES, "--status")
    if limit is not None:
        check_k(limit, "--limit")
    with store.read() as conn:
        mid = catalog.model(conn, model)["id"] if model is not None else None
        return catalog.list_runs(conn, status, limit, mid)


def spaces(store: Store) -> list[dict[str, Any]]:
    """Sketch spaces with their family and model count."""
    with store.read() as conn:
        return [{"id": sp.id, "family": catalog.family_by_id(conn, sp.family_id)["name"], "dim": sp.dim,
                 "seed": sp.seed, "metric": sp.metric, "tensor_filter": sp.tensor_filter, "method": sp.method,
                 "sketches": catalog.sketch_fingerprint(conn, sp.id)["count"]} for sp in catalog.spaces(conn)]


def snapshot(store: Store, out: str | os.PathLike | None = None) -> Snapshot:
    """A read-only copy of the catalog for outside tools (notebooks, Datasette, BI): they never
    block zoo. The default one in the home is refreshed after every change."""
    path = store.snapshot(out)
    with store.read() as conn:
        n = len(catalog.list_models(conn))
    return Snapshot(str(path), n, path.stat().st_size, path == store.snapshot_path)


def sql(store: Store, query: str, limit: int | None = None, timeout: float | None = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only query on the catalog in the SQL sandbox (see ``zoo.sql``); (columns, rows)."""
    from zoo.sql import DEFAULT_TIMEOUT, run_readonly

    store.ensure()
    return run_readonly(store.catalog, query, limit, DEFAULT_TIMEOUT if timeout is None else timeout)


def _norm(x: Any) -> float:
    import numpy as np

    return float(np.linalg.norm(x))
