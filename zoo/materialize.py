"""Points of weight space made real: centroids, hull samples and interpolations written as
checkpoints and registered with lineage; start specs resolved to a model row.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zoo import catalog
from zoo.checkpoint import read_header
from zoo.domain import Family, check_name, check_seed, parse_start
from zoo.errors import Conflict, FamilyMismatch, ZooValueError
from zoo.files import crash_point
from zoo.merge import dirichlet_weights, interpolation_weights, plan_merge, weighted_merge
from zoo.queries import members
from zoo.register import add
from zoo.results import Exported, Materialized
from zoo.store import Store


def member_weights(n: int, names: list[str], weights: Sequence[float] | None, dirichlet: float | None,
                   seed: int) -> list[float]:
    """Normalised weights: given (one per member), a Dirichlet sample, or uniform."""
    if weights is not None:
        if len(weights) != n:
            raise ZooValueError(f"{len(weights)} weights for {n} members ({', '.join(names)}); give one weight per member")
        w = np.asarray(weights, dtype=np.float64)
        with np.errstate(over="ignore"):
            total = w.sum()
        if not (np.all(np.isfinite(w)) and np.isfinite(total)) or total == 0:
            raise ZooValueError(f"weights {list(weights)} must be finite, not sum to zero, and their sum must be finite")
        if np.any(w < 0):
            raise ZooValueError(f"weights {list(weights)} include negative ones: a centroid lies inside its members' hull; "
                                "use `zoo interpolate A B --alpha X --extrapolate` to go past a member")
        return (w / total).tolist()
    if dirichlet is not None:
        return dirichlet_weights(n, dirichlet, seed)
    return [1.0 / n] * n


def centroid(store: Store, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
             all_models: bool = False, exclude_dataset: str | None = None, weights: Sequence[float] | None = None,
             dirichlet: float | None = None, seed: int = 0, out: str | None = None,
             family: str | None = None) -> Materialized:
    """Materialize the (weighted) average of a region's members as a checkpoint and register it."""
    with store.read() as conn:
        fam, ids = members(conn, dataset, task, names, family, exclude_dataset, all_models)
        rows = [catalog.model_by_id(conn, i) for i in ids]
    check_name(out, "--out", folder=True)
    check_seed(seed)
    w = member_weights(len(rows), [r["name"] for r in rows], weights, dirichlet, seed)
    spec: dict[str, Any] = {k: v for k, v in (("dataset", dataset), ("task", task), ("exclude_dataset", exclude_dataset)) if v}
    if all_models:
        spec["all"] = True
    if names:
        spec["names"] = list(names)
    kind = "interpolation" if dirichlet is not None else "centroid"
    return materialize(store, fam, rows, w, out, kind, "averaged_from", spec)


def interpolate(store: Store, a: str, b: str, alpha: float, extrapolate: bool = False,
                out: str | None = None) -> Materialized:
    """Materialize (1 - alpha) A + alpha B (alpha outside [0, 1] needs ``extrapolate``)."""
    w = interpolation_weights(alpha, extrapolate)
    check_name(out, "--out", folder=True)
    with store.read() as conn:
        rows = [catalog.model(conn, a), catalog.model(conn, b)]
        if rows[0]["family_id"] != rows[1]["family_id"]:
            raise FamilyMismatch(f"{a!r} and {b!r} are in different families; interpolation needs one family")
        fam = store.family_of(conn, rows[0])
    return materialize(store, fam, rows, w, out, "interpolation", "interpolated_from", {"a": a, "b": b, "alpha": alpha})


def materialize(store: Store, fam: Family, rows: list[dict[str, Any]], w: list[float], out: str | None, kind: str,
                relation: str, spec: dict[str, Any]) -> Materialized:
    """Write sum w_i theta_i (streaming) and register it; the same members and weights again
    return the model made before. Its sketch must equal the weighted sketches (linearity)."""
    import xxhash

    key = xxhash.xxh3_64("|".join(f"{r['id']}:{wi:.12g}" for r, wi in sorted(zip(rows, w), key=lambda x: x[0]["id"]))
                         .encode()).hexdigest()
    with store.read() as conn:
        cached = catalog.model_by_meta(conn, "members_key", key)
        if cached is None and out and catalog.name_taken(conn, out):
            raise Conflict(f"a model named {out!r} already exists; choose another --out")
        base_row = catalog.model_by_id(conn, fam.base_model_id)
        expected = {}
        for sp in fam.spaces:
            ids, x = catalog.sketch_vectors(conn, sp.id, [r["id"] for r in rows])
            order = [int(np.where(ids == r["id"])[0][0]) for r in rows]
            expected[sp.id] = np.asarray(w) @ x[order].astype(np.float64)
    names = [r["name"] for r in rows]
    if cached is not None:
        return Materialized(cached["name"], cached["id"], False, cached["kind"], cached["uri"], names, w,
                            f"same members and weights already materialized as {cached['name']!r}")
    name = out or f"{kind}-{key[:10]}"
    headers = [read_header(store.weights(r)) for r in rows]
    base_h = read_header(store.weights(base_row))
    plan = plan_merge(headers, fam.body, base_h, [r["meta"].get("id2label") for r in rows])
    with store.output(name) as out_dir:
        path = weighted_merge(headers, w, plan, base_h, out_dir, progress=store.progress)
        crash_point("materialize:written")
        try:
            [res] = add(store, [path], name=name, kind=kind, base=base_row["name"],
                        meta={"members_key": key, "merge": plan.note, "spec": spec},
                        lineage=[(r["name"], relation, wi) for r, wi in zip(rows, w)], expected=expected)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    if not res.created:  # the weights are an existing model's (e.g. --weights 1,0): keep no second copy
        shutil.rmtree(path, ignore_errors=True)
        with store.read() as conn:
            path = Path(catalog.model_by_id(conn, res.id)["uri"])
        return Materialized(res.name, res.id, False, res.kind, str(path), names, w, res.note)
    return Materialized(res.name, res.id, res.created, kind, str(path), names, w, plan.note)


def export(store: Store, name: str, dest: str | os.PathLike) -> Exported:
    """Copy a model's checkpoint (weights and support files) to a new folder ``dest`` that
    transformers loads; written whole. The copy is the user's: zoo keeps no reference to it."""
    from zoo.files import atomic_dir, model_files

    with store.read() as conn:
        row = catalog.model(conn, name)
    src = store.weights(row)
    header = read_header(src)
    top = src if src.is_dir() else src.parent
    files = [f for f in model_files(src, header.shards) if f.name != "zoo-record.json"]
    out = Path(dest).expanduser()
    with atomic_dir(out) as tmp:
        for f in files:
            (tmp / f.relative_to(top)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / f.relative_to(top))
    rel = [str(f.relative_to(top)) for f in files]
    return Exported(row["name"], str(out), rel, sum((out / r).stat().st_size for r in rel))


def resolve_start(store: Store, start: str, family: str | None = None) -> dict[str, Any]:
    """A model row for START: a model name, ``base`` (the family base), or a region spec
    ``centroid:task=T[,dataset=D][,exclude_dataset=D]`` / ``centroid:all[,exclude_dataset=D]``,
    materialized first (cached by member set)."""
    spec = parse_start(start)
    if spec.kind == "centroid":
        res = centroid(store, family=family, **spec.region)
        with store.read() as conn:
            return catalog.model(conn, res.name)
    with store.read() as conn:
        if spec.kind == "base" and not catalog.name_taken(conn, "base"):
            return catalog.model_by_id(conn, store.family(conn, family).base_model_id)
        return catalog.model(conn, start)
