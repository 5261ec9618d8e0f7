"""Questions answered from sketches: nearest, distance, region, inside, clusters, map.

Weights are read only where asked for (``exact``) or to sketch a query given as a path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from zoo import catalog
from zoo.checkpoint import read_header, weight_bytes
from zoo.domain import COLOR_BY, Family, check_choice, check_k, check_metric, check_seed, union_body
from zoo.errors import EmptyRegion, FamilyMismatch, NotFound, ZooValueError
from zoo.geometry import (brute_force, distances, gram_distances, inside_score, kmeans,
                          neighbour_agreement, purity, region_stats)
from zoo.sources import gram, source
from zoo.results import Clusters, Distance, Fidelity, Inside, Map, MapPoints, Neighbours, Region
from zoo.store import Store

if TYPE_CHECKING:  # pragma: no cover
    from zoo.db import Conn


def target(conn: Conn, name_or_path: str, family: str | None = None
           ) -> tuple[Family, dict[int, np.ndarray], dict | None]:
    """(family, {space id: task-vector sketch}, model row or None) of a model name or a checkpoint path."""
    from zoo.ingest import choose_base, fill_missing, fits, scan

    try:
        row = catalog.model(conn, name_or_path)
    except NotFound:
        if not Path(name_or_path).expanduser().exists():
            raise
        row = None
    if row is not None:
        fam = Store.family_of(conn, row)
        return fam, {sp.id: catalog.sketch_vectors(conn, sp.id, [row["id"]])[1][0].astype(np.float64)
                     for sp in fam.spaces}, row
    from zoo.adapter import is_adapter, read_adapter
    from zoo.sources import find_parent, scan_registered_parent

    if is_adapter(name_or_path):
        ad = read_adapter(name_or_path)
        fam, sc = scan_registered_parent(Store, conn, ad, find_parent(conn, ad.base_ref, ad.path))
        if family is not None and fam.name != family:
            raise FamilyMismatch(f"{name_or_path}: the adapter's base is in family {fam.name!r}, not {family!r}")
        return fam, {sp.id: sc.delta(sp) for sp in fam.spaces}, None
    fams = catalog.families_snapshot(conn)
    header = read_header(name_or_path)
    fitting = [f for f in fams if fits(header, f) and (family is None or f.name == family)]
    if not fitting:
        names = ", ".join(f.name for f in fams) or "(none)"
        raise FamilyMismatch(f"{name_or_path} fits none of this zoo's families ({names}): its architecture "
                             f"({len(header.tensors)} tensors, e.g. {header.tensors[0].canonical!r} "
                             f"{list(header.tensors[0].shape)}) differs; register its base first")
    sc = scan(header, [sp for f in fitting for sp in f.spaces], union_body(fitting))
    fam = fitting[0] if len(fitting) == 1 else choose_base(sc, fitting, {f.id: f.name for f in fitting}).family
    fill_missing(sc, fam)
    return fam, {sp.id: sc.delta(sp) for sp in fam.spaces}, None


def _read_bytes(row: dict[str, Any]) -> int:
    """Bytes an exact read of a model costs: its registered files (an adapter's are its factors)."""
    return sum(int(size) for _, size, _ in (row.get("meta") or {}).get("files") or [])


def _rows(meta: dict[int, dict[str, Any]], ids: Sequence[int], *keys: str) -> list[dict[str, Any]]:
    """One dict per id with the requested catalog fields."""
    return [{k: meta[int(i)][k] for k in keys} for i in ids]


# The automatic re-rank reads at most this many bytes of weights (ZOO_RERANK_BYTES).
RERANK_BYTES = 2 << 30


def auto_rerank(k: int, sizes: Sequence[int], budget: int) -> int:
    """How many sketch candidates the default query path re-ranks exactly: max(2k, 10) when
    reading them (``sizes``: bytes per candidate in sketch order, the query and the base
    included by the caller in ``budget``'s use) stays within ``budget``, else none (the sketch
    answer, milliseconds). Measured on the real zoo: kNN@5 against exact 0.79 by sketch
    (d=1024), 0.95 with the top 10 re-ranked (docs/REPRODUCTION-NOTES.md)."""
    n = min(max(2 * k, 10), len(sizes))
    return n if n > 0 and sum(sizes[:n]) <= budget else 0


def nearest(store: Store, query: str, k: int = 5, dataset: str | None = None, task: str | None = None,
            kind: str | None = None, metric: str | None = None, space: int | None = None,
            family: str | None = None, rerank: int | None = None) -> Neighbours:
    """The k models nearest to a model name or a checkpoint path (sketched on the fly, not registered).

    ``rerank`` > 0: the ``max(k, rerank)`` nearest by sketch are ranked again by their exact
    distance from the weights (one streaming pass over those checkpoints, the query and the
    base): the sketch's noise (about 1/sqrt(d) in cosine) no longer decides close calls.
    None (the default): ``auto_rerank`` decides from the bytes it would read; 0: sketch only.
    """
    from zoo.domain import env_number
    from zoo.index import FLAT_MAX

    check_k(k)
    auto = rerank is None
    budget = int(env_number("ZOO_RERANK_BYTES", RERANK_BYTES, int)) if auto else 0
    if not auto:
        check_k(rerank, "--rerank", least=0)
    want = max(2 * k, 10) if auto else max(k, rerank) if rerank else k
    with store.read() as conn:
        fam, vecs, row = target(conn, query, family)
        sp = fam.space(space)
        metric = check_metric(metric or sp.metric)
        q = vecs[sp.id]
        self_id = row["id"] if row else -1
        allowed = catalog.filtered_ids(conn, fam.id, dataset, task, kind) if (dataset or task or kind) else None
        if allowed is not None:
            allowed = [i for i in allowed if i != self_id]
        if metric != sp.metric or (allowed is not None and len(allowed) <= FLAT_MAX):
            ids, x = catalog.sketch_vectors(conn, sp.id, allowed)
            keep = ids != self_id
            got_ids, got_d = brute_force(q, ids[keep], x[keep], want, metric)
            how = "exact scan"
        else:
            idx = store.index(conn, sp)
            # Never ask FAISS for more than the index holds: it allocates k results per query.
            kk = min(want + (row is not None), int(idx.index.ntotal))
            res_ids, res_d = idx.search(q[None], kk, None if allowed is None else np.asarray(allowed)) if kk else ([[]], [[]])
            pairs = sorted(((int(i), float(d)) for i, d in zip(res_ids[0], res_d[0]) if i >= 0 and i != self_id),
                           key=lambda p: (p[1], p[0]))[:want]
            got_ids, got_d = np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs])
            how = idx.meta["spec"]["factory"]
        cand_rows = {int(i): catalog.model_by_id(conn, int(i)) for i in got_ids} if auto or rerank else {}
        if auto and len(got_ids):
            sizes = [_read_bytes(cand_rows[int(i)]) for i in got_ids]
            extra = _read_bytes(row) if row else weight_bytes(Path(query).expanduser())
            rerank = auto_rerank(k, sizes, budget - extra - _read_bytes(catalog.model_by_id(conn, fam.base_model_id)))
            if not rerank:  # too much to read: the sketch answer, and why
                how += f" (no exact re-rank: reading {len(got_ids)} candidates exceeds ZOO_RERANK_BYTES={budget})"
                got_ids, got_d = got_ids[:k], got_d[:k]
            else:
                got_ids, got_d = got_ids[:rerank], got_d[:rerank]
        if rerank and len(got_ids):
            base_path = store.base_weights(conn, fam)
            srcs = [source(store, conn, fam, row if row else Path(query).expanduser()),
                    *(source(store, conn, fam, cand_rows[int(i)]) for i in got_ids)]
        meta = catalog.models_meta(conn, got_ids.tolist())
    if rerank and len(got_ids):
        d = gram_distances(gram(base_path, srcs, fam), metric)[0, 1:]
        order = sorted(range(len(got_ids)), key=lambda j: (d[j], int(got_ids[j])))[:k]
        got_ids, got_d = got_ids[order], d[order]
        how += f", {len(d)} re-ranked by exact distance"
    results = [{"rank": r + 1, "name": m["name"], "id": int(i), "distance": float(d), "kind": m["kind"],
                "dataset": m["dataset"], "task": m["task"]}
               for r, (i, d, m) in enumerate(zip(got_ids, got_d, _rows(meta, got_ids, "name", "kind", "dataset", "task")))]
    return Neighbours(row["name"] if row else str(query), row is not None, fam.name, sp.id, metric, how, results)


def distance(store: Store, a: str, b: str, exact: bool = False, space: int | None = None) -> Distance:
    """Cosine and L2 distance between two task vectors: sketch estimate, and the exact value from weights."""
    with store.read() as conn:
        fa, va, ra = target(conn, a)
        fb, vb, rb = target(conn, b)
        if fa.id != fb.id:
            raise FamilyMismatch(f"{a!r} is in family {fa.name!r} and {b!r} in {fb.name!r}; distances are defined within a family")
        sp = fa.space(space)
        base_path = store.base_weights(conn, fa) if exact else None
        srcs = [source(store, conn, fa, r if r else p) for r, p in ((ra, a), (rb, b))] if exact else []
    x, y = va[sp.id], vb[sp.id]
    out = Distance(a, b, fa.name, sp.id, sp.dim, {"cosine": float(distances(x, y[None], "cosine")[0]),
                                                  "l2": float(distances(x, y[None], "l2")[0]),
                                                  "norm_a": float(np.linalg.norm(x)), "norm_b": float(np.linalg.norm(y))})
    if exact:
        g = gram(base_path, srcs, fa)
        out.exact = {"cosine": float(gram_distances(g, "cosine")[0, 1]), "l2": float(gram_distances(g, "l2")[0, 1]),
                     "norm_a": float(np.sqrt(g[0, 0])), "norm_b": float(np.sqrt(g[1, 1]))}
        out.relative_error_l2 = abs(out.sketch["l2"] - out.exact["l2"]) / out.exact["l2"] if out.exact["l2"] > 0 else 0.0
    return out


def members(conn: Conn, dataset: str | None = None, task: str | None = None,
            names: Sequence[str] | None = None, family: str | None = None, exclude_dataset: str | None = None,
            all_models: bool = False) -> tuple[Family, list[int]]:
    """A region's family and member ids: NAMES, or the fine-tuned models of a dataset / task
    (of the whole family with ``all_models``), less ``exclude_dataset`` and less models that
    have no dataset when one is excluded. Never the base or materialized points: a region
    made of fine-tunes stays the same set however many centroids are made from it."""
    if not (dataset or task or names or all_models):
        raise ZooValueError("say which region: --dataset D, --task T, --all, or model NAMES")
    if names:
        rows = [catalog.model(conn, n) for n in names]
        if len({r["family_id"] for r in rows}) > 1:
            raise FamilyMismatch(f"the models {', '.join(names)} span {len({r['family_id'] for r in rows})} families; "
                                 "a region lies within one")
        fam, ids = Store.family_of(conn, rows[0]), [r["id"] for r in rows if r["dataset"] != exclude_dataset or not exclude_dataset]
    else:
        fams = catalog.families_snapshot(conn)
        cand = [f for f in fams if family is None or f.name == family]
        if family is not None and not cand:
            raise NotFound(f"no family named {family!r}")
        hits = {f.id: catalog.filtered_ids(conn, f.id, dataset, task, "trained",
                                           exclude_dataset=exclude_dataset) for f in cand}
        hits = {k: v for k, v in hits.items() if v}
        if len(hits) > 1:
            raise ZooValueError(f"the region spans families {', '.join(f.name for f in fams if f.id in hits)}; pass --family")
        if not hits:
            what = ", ".join(f"{k}={v}" for k, v in (("dataset", dataset), ("task", task), ("family", family),
                                                      ("exclude-dataset", exclude_dataset)) if v) or "all"
            raise EmptyRegion(f"no fine-tuned models match {what}; check the spelling with `zoo ls` or register models first")
        [(fid, ids)] = hits.items()
        fam = next(f for f in fams if f.id == fid)
    if not ids:
        raise EmptyRegion("the region has no members after exclusions; relax --exclude-dataset")
    return fam, ids


def region(store: Store, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
           family: str | None = None, metric: str | None = None, space: int | None = None,
           exclude_dataset: str | None = None, all_models: bool = False) -> Region:
    """Members, centroid (exact by linearity) and spread of a region in sketch space."""
    with store.read() as conn:
        fam, ids = members(conn, dataset, task, names, family, exclude_dataset, all_models)
        sp = fam.space(space)
        metric = check_metric(metric or sp.metric)
        mids, x = catalog.sketch_vectors(conn, sp.id, ids)
        meta = catalog.models_meta(conn, mids.tolist())
    st = region_stats(x, metric)
    rows = _rows(meta, mids, "name", "id", "dataset", "task")
    for r, d, loo in zip(rows, st.member_dist, st.loo_dist):
        r.update(distance_to_centroid=float(d), loo_distance=float(loo))
    return Region(fam.name, sp.id, metric, len(rows), rows, st.summary(), st.centroid.tolist())


def inside(store: Store, query: str, dataset: str | None = None, task: str | None = None,
           names: Sequence[str] | None = None, family: str | None = None, metric: str | None = None,
           space: int | None = None) -> Inside:
    """Whether a model or checkpoint lies inside a region (see geometry.inside_score for the rule)."""
    with store.read() as conn:
        fam_t, vecs, row = target(conn, query, family)
        fam, ids = members(conn, dataset, task, names, family or fam_t.name)
        if fam.id != fam_t.id:
            raise FamilyMismatch(f"{query!r} is in family {fam_t.name!r} but the region is in {fam.name!r}")
        ids = [i for i in ids if row is None or i != row["id"]]
        if len(ids) < 2:
            raise EmptyRegion("a region needs at least 2 other members to judge membership; add models or widen it")
        sp = fam.space(space)
        metric = check_metric(metric or sp.metric)
        _, x = catalog.sketch_vectors(conn, sp.id, ids)
    return Inside(**inside_score(vecs[sp.id], region_stats(x, metric), metric), target=query, family=fam.name,
                  metric=metric, n_members=len(ids),
                  region={k: v for k, v in (("dataset", dataset), ("task", task)) if v} or {"names": list(names or [])})


def clusters(store: Store, k: int, family: str | None = None, metric: str | None = None, space: int | None = None,
             seed: int = 0, kind: str | None = "finetune", exact: bool = False) -> Clusters:
    """faiss k-means on sketches (or, with ``exact``, on exact task vectors), with purity against
    dataset and task labels.

    Exact: the Gram matrix comes from the weights in one lockstep pass, and k-means runs on an
    embedding that reproduces every inner product (rows of V sqrt(L) from its
    eigendecomposition), so the geometry is exactly that of the full vectors.
    """
    check_k(k)
    check_seed(seed)
    with store.read() as conn:
        fam = store.family(conn, family)
        sp = fam.space(space)
        metric = check_metric(metric or sp.metric)
        ids = catalog.filtered_ids(conn, fam.id, kind=kind)
        if not ids:
            raise EmptyRegion(f"family {fam.name!r} has no {kind or ''} models to cluster")
        mids, x = catalog.sketch_vectors(conn, sp.id, ids)
        meta = catalog.models_meta(conn, mids.tolist())
        base_path = store.base_weights(conn, fam) if exact else None
        srcs = [source(store, conn, fam, catalog.model_by_id(conn, int(i))) for i in mids] if exact else []
    if exact:
        g = gram(base_path, srcs, fam)
        vals, vecs = np.linalg.eigh(g)
        x = vecs * np.sqrt(np.clip(vals, 0.0, None))
    assign, _ = kmeans(x, k, metric, seed)
    rows = [{"name": m["name"], "cluster": int(a), "dataset": m["dataset"], "task": m["task"]}
            for m, a in zip(_rows(meta, mids, "name", "dataset", "task"), assign)]
    groups: dict[int, list[str]] = {}
    for r in rows:
        groups.setdefault(r["cluster"], []).append(r["name"])
    return Clusters(fam.name, None if exact else sp.id, exact, metric, k, len(rows),
                    purity(assign, [r["dataset"] for r in rows]), purity(assign, [r["task"] for r in rows]), rows,
                    [{"cluster": c, "size": len(v), "members": v} for c, v in sorted(groups.items())])


def fidelity(store: Store, k: int = 5, rerank: Sequence[int] = (20,), family: str | None = None,
             kind: str | None = "finetune") -> Fidelity:
    """Sketch answers against exact ones on a family's models (see ``Zoo.fidelity``), with a
    row for the default query path of ``nearest`` (its automatic re-rank)."""
    from zoo.domain import env_number

    check_k(k)
    for r in rerank:
        check_k(r, "--rerank")
    with store.read() as conn:
        fam = store.family(conn, family)
        ids = catalog.filtered_ids(conn, fam.id, kind=kind)
        if len(ids) < k + 1:
            raise EmptyRegion(f"family {fam.name!r} has {len(ids)} {kind or ''} model(s); -k {k} needs at least {k + 1}")
        sketches = {sp.id: catalog.sketch_vectors(conn, sp.id, ids)[1].astype(np.float64) for sp in fam.spaces}
        meta = catalog.models_meta(conn, ids)
        base_path = store.base_weights(conn, fam)
        rows_ = [catalog.model_by_id(conn, i) for i in ids]
        srcs = [source(store, conn, fam, r) for r in rows_]
        # What `zoo nearest` does by default for a typical query of this family (auto_rerank).
        typical = int(np.median([_read_bytes(r) for r in rows_]))
        budget = int(env_number("ZOO_RERANK_BYTES", RERANK_BYTES, int))
        default_n = auto_rerank(k, [typical] * (len(ids) - 1), budget - 2 * typical)
    metric = fam.spaces[0].metric
    labels = [meta[i]["dataset"] for i in ids]
    d_true = gram_distances(gram(base_path, srcs, fam), metric)
    rows = [dict(setting="exact", **neighbour_agreement(d_true, d_true, k, labels), reads_models=len(ids))]
    for sp in fam.spaces:
        x = sketches[sp.id]
        d_sk = gram_distances(x @ x.T, metric)
        rows.append(dict(setting=f"sketch d={sp.dim} (space {sp.id})", **neighbour_agreement(d_sk, d_true, k, labels),
                         reads_models=0))
        for r in rerank:
            rows.append(dict(setting=f"sketch d={sp.dim} (space {sp.id}) + exact re-rank of {max(k, r)}",
                             **neighbour_agreement(d_sk, d_true, k, labels, rerank=r), reads_models=max(k, r) + 1))
        if sp.id == fam.spaces[0].id:
            how = f"exact re-rank of {default_n}" if default_n else "sketch only (over ZOO_RERANK_BYTES)"
            rows.append(dict(setting=f"default query path: sketch d={sp.dim} + {how}",
                             **neighbour_agreement(d_sk, d_true, k, labels, rerank=default_n),
                             reads_models=default_n + 2 if default_n else 0))
    return Fidelity(fam.name, metric, len(ids), k, rows)


def map_points(store: Store, family: str | None = None, method: str = "pca", space: int | None = None,
               kind: str | None = None, seed: int = 0, max_points: int | None = None) -> MapPoints:
    """A 2-D projection of a family's sketches (PCA, or t-SNE where scikit-learn is installed):
    each model's point with its name, kind, dataset and task. With ``max_points``, a larger
    family is drawn from a uniform sample of that many models (seeded), its total reported."""
    from zoo.plot import project

    if max_points is not None:
        check_k(max_points, "max_points", least=2)
    with store.read() as conn:
        fam = store.family(conn, family)
        sp = fam.space(space)
        ids = catalog.filtered_ids(conn, fam.id, kind=kind)
        total = len(ids)
        if max_points is not None and total > max_points:
            ids = sorted(np.random.default_rng(seed).choice(np.asarray(ids), max_points, replace=False).tolist())
        mids, x = catalog.sketch_vectors(conn, sp.id, ids)
        meta = catalog.models_meta(conn, mids.tolist())
    if sp.metric == "cosine":  # cosine geometry: project directions, not lengths
        x = np.asarray(x, dtype=np.float64)
        n = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
    coords, explained = project(x, method, seed)
    points = [{"name": meta[int(i)]["name"], "id": int(i), "kind": meta[int(i)]["kind"], "dataset": meta[int(i)]["dataset"],
               "task": meta[int(i)]["task"], "x": float(c[0]), "y": float(c[1])} for i, c in zip(mids, coords)]
    return MapPoints(fam.name, sp.id, sp.dim, method, explained, points, total)


def draw_map(store: Store, out: str | os.PathLike, color_by: str = "dataset", family: str | None = None,
             method: str = "pca", space: int | None = None, kind: str | None = None, annotate: bool = True,
             seed: int = 0) -> Map:
    """Draw a 2-D projection of a family's sketches (PCA, or t-SNE where scikit-learn is installed)."""
    from zoo.plot import draw

    check_choice(color_by, COLOR_BY, "--color-by")
    pts = map_points(store, family, method, space, kind, seed)
    coords = np.array([[p["x"], p["y"]] for p in pts.points]).reshape(-1, 2)
    names = [p["name"] for p in pts.points]
    groups = [p[color_by] for p in pts.points]
    explained = pts.explained
    axes = f" (PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%} of variance)" if explained else ""
    title = f"zoo map of family {pts.family}: {len(names)} models, {method.upper()} of d={pts.dim} sketches{axes}"
    path = draw(coords, names, groups, color_by, title, Path(out), annotate)
    return Map(str(path), pts.family, method, explained, color_by,
               [{"name": n, color_by: g, "x": p["x"], "y": p["y"]} for n, g, p in zip(names, groups, pts.points)])
