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
             family: str | None = None, rank: int | None = None, merged: bool = False) -> Materialized:
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
    return materialize(store, fam, rows, w, out, kind, "averaged_from", spec, rank, merged)


def interpolate(store: Store, a: str, b: str, alpha: float, extrapolate: bool = False,
                out: str | None = None, rank: int | None = None, merged: bool = False) -> Materialized:
    """Materialize (1 - alpha) A + alpha B (alpha outside [0, 1] needs ``extrapolate``)."""
    w = interpolation_weights(alpha, extrapolate)
    check_name(out, "--out", folder=True)
    with store.read() as conn:
        rows = [catalog.model(conn, a), catalog.model(conn, b)]
        if rows[0]["family_id"] != rows[1]["family_id"]:
            raise FamilyMismatch(f"{a!r} and {b!r} are in different families; interpolation needs one family")
        fam = store.family_of(conn, rows[0])
    return materialize(store, fam, rows, w, out, "interpolation", "interpolated_from", {"a": a, "b": b, "alpha": alpha},
                       rank, merged)


def materialize(store: Store, fam: Family, rows: list[dict[str, Any]], w: list[float], out: str | None, kind: str,
                relation: str, spec: dict[str, Any], rank: int | None = None, merged: bool = False,
                prefix: str | None = None) -> Materialized:
    """Write sum w_i theta_i (streaming) and register it; the same members and weights again
    return the model made before. Its sketch must equal the weighted sketches (linearity).

    Adapters on one parent give an adapter (exact, or ``rank`` by truncated SVD); ``merged``,
    a mix with full checkpoints, or adapters that replace body tensors give a full checkpoint.
    Unnamed, it is called ``{prefix or kind}-{hash of members and weights}``.
    """
    import json

    import xxhash

    from zoo.adapter import FORMAT, check_rank
    from zoo.cards import RECIPE, copy_support, ref_of, write_card, write_recipe
    from zoo.sources import source

    check_rank(rank)
    mode = "".join(x for x in (f"|rank={rank}" if rank is not None else "", "|merged" if merged else ""))
    key = xxhash.xxh3_64(("|".join(f"{r['id']}:{wi:.12g}" for r, wi in sorted(zip(rows, w), key=lambda x: x[0]["id"]))
                          + mode).encode()).hexdigest()
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
        srcs = [source(store, conn, fam, r) for r in rows]
        base_path = store.base_weights(conn, fam)
        refs = [ref_of(r) if r["format"] != FORMAT else  # mergekit's "base+lora" names an adapter on its base
                f"{ref_of(catalog.model_by_id(conn, r['meta']['adapter_parent']))}+{ref_of(r)}" for r in rows]
        parents = {r["meta"].get("adapter_parent") for r in rows}
        parent = catalog.model_by_id(conn, parents.pop()) if all(r["format"] == FORMAT for r in rows) and \
            len(parents) == 1 else None
    names = [r["name"] for r in rows]
    if cached is not None:
        return Materialized(cached["name"], cached["id"], False, cached["kind"], cached["uri"], names, w,
                            f"same members and weights already materialized as {cached['name']!r}")
    if rank is not None and (parent is None or merged):
        raise ZooValueError("--rank truncates an adapter made of adapters on one parent; these members make a full "
                            "checkpoint (drop --rank)")
    name = out or f"{prefix or kind}-{key[:10]}"
    meta: dict[str, Any] = {"members_key": key, "spec": spec}
    with store.output(name) as out_dir:
        adapters = _adapter_members(srcs, fam) if parent is not None and not merged else None
        if adapters is not None:
            report = _write_adapter(adapters, w, rows, out_dir, rank, parent)
            meta.update(merge=report.note, adapter_rel_error=report.rel_error)
            path, note, base_name = out_dir, report.note, parent["name"]
            expected = expected if report.rel_error == 0 else None  # a truncation is its own point
        else:
            path, note = _write_full(store, fam, rows, w, srcs, base_path, out_dir)
            meta["merge"], base_name = note, base_row["name"]
            write_recipe(path, list(zip(refs, w)), read_header(base_path).dtype)
        lines = [f"Made by zoo: {'an interpolation' if kind == 'interpolation' else 'the weighted average'} of "
                 f"{len(rows)} model(s) of family {fam.name!r} ({note}).", "",
                 f"Region: `{json.dumps(spec, sort_keys=True)}`."]
        if adapters is not None:
            copy_support(base_path, [], path)
            write_card(path, name, "adapter", [ref_of(parent)], lines, "peft", list(zip(refs, w)))
        else:
            write_card(path, name, "merge", refs, lines + ["", f"`{RECIPE}` remakes it with mergekit."],
                       weights=list(zip(refs, w)))
        crash_point("materialize:written")
        try:
            [res] = add(store, [path], name=name, kind=kind, base=base_name, meta=meta,
                        lineage=[(r["name"], relation, wi) for r, wi in zip(rows, w)], expected=expected)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
    if not res.created:  # the weights are an existing model's (e.g. --weights 1,0): keep no second copy
        shutil.rmtree(path, ignore_errors=True)
        with store.read() as conn:
            path = Path(catalog.model_by_id(conn, res.id)["uri"])
        return Materialized(res.name, res.id, False, res.kind, str(path), names, w, res.note)
    return Materialized(res.name, res.id, res.created, kind, str(path), names, w, note)


def _adapter_members(srcs: list[Any], fam: Family) -> list[Any] | None:
    """The members as bound adapters when an adapter can hold their average: none of them
    replaces a body tensor (a trained bias, a saved body module); else None."""
    from zoo.adapter import bind, read_adapter

    ads = [bind(read_adapter(s.path), fam.body, fam.name) for s in srcs]
    return None if any(a.body_whole(fam.body) for a in ads) else ads


def _write_adapter(ads: list[Any], w: list[float], rows: list[dict[str, Any]], out_dir: Path, rank: int | None,
                   parent: dict[str, Any]) -> Any:
    """Σ w ΔW as one PEFT adapter; the heads (modules_to_save) averaged when all members share them."""
    from zoo.adapter import write_mix
    from zoo.files import atomic_dir

    heads = [{(t.name, t.shape) for t in a.whole} for a in ads]
    labels = [r["meta"].get("id2label") for r in rows]
    same_head = bool(heads[0]) and all(h == heads[0] for h in heads) and all(lab == labels[0] for lab in labels)
    ref = (parent["meta"].get("hub") or {}).get("repo_id") or parent["meta"].get("registered_from") or parent["uri"]
    with atomic_dir(out_dir) as tmp:
        report = write_mix(ads, w, tmp, rank, same_head, ref)
        if same_head and (ads[0].path / "config.json").is_file():  # the task config: the averaged head's labels
            shutil.copy2(ads[0].path / "config.json", tmp / "config.json")
        return report


def _write_full(store: Store, fam: Family, rows: list[dict[str, Any]], w: list[float], srcs: list[Any],
                base_path: Path, out_dir: Path) -> tuple[Path, str]:
    """Σ w θ as a full checkpoint, every member read densely (adapters as parent + B·A)."""
    from zoo.sources import open_readers

    with open_readers(base_path, srcs, fam) as (base, readers):
        plan = plan_merge([r.header for r in readers], fam.body, base.header, [r["meta"].get("id2label") for r in rows])
        return weighted_merge(readers, w, plan, base, out_dir, progress=store.progress), plan.note


def export(store: Store, name: str, dest: str | os.PathLike) -> Exported:
    """Copy a model's checkpoint (weights and support files) to a new folder ``dest`` that
    transformers loads; written whole. The copy is the user's: zoo keeps no reference to it."""
    from zoo.files import atomic_dir, model_files

    with store.read() as conn:
        row = catalog.model(conn, name)
    from zoo.adapter import is_adapter, weight_file

    src = store.weights(row)
    shards = [weight_file(src)] if is_adapter(src) else read_header(src).shards
    top = src if src.is_dir() else src.parent
    files = [f for f in model_files(src, shards) if f.name != "zoo-record.json"]
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
