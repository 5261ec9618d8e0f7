"""Every query of the catalog. Nothing else in zoo writes SQL against it.

Functions take an open SQLAlchemy connection (see ``zoo.db.connect``); a write
function runs inside the caller's transaction, so one command is one transaction.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import numpy as np
import sqlalchemy as sa

from zoo.domain import Family, Space
from zoo.errors import Conflict, NotFound
from zoo.schema import evaluations, families, lineage, models, runs, sketch_spaces, sketches


def _json(v: Any) -> Any:
    if v is None or isinstance(v, (dict, list)):
        return v
    return json.loads(v)


# ---------------------------------------------------------------- reads

def families_snapshot(conn: sa.Connection, family_id: int | None = None) -> list[Family]:
    """All families (or the one with ``family_id``) with their spaces, base sketches included."""
    fams = {}
    q = sa.select(families).order_by(families.c.id)
    if family_id is not None:
        q = q.where(families.c.id == family_id)
    for r in conn.execute(q).mappings():
        body = {k: tuple(v) for k, v in _json(r["body"]).items()}
        fams[r["id"]] = Family(r["id"], r["name"], r["arch_signature"], r["base_model_id"], r["prefix"], body)
    for s in spaces(conn, family_id):
        if s.family_id in fams:
            fams[s.family_id].spaces.append(s)
    for f in fams.values():
        if f.base_model_id is not None:
            f.base_uri = conn.execute(sa.select(models.c.uri).where(models.c.id == f.base_model_id)).scalar()
    return list(fams.values())


def spaces(conn: sa.Connection, family_id: int | None = None) -> list[Space]:
    q = sa.select(sketch_spaces).order_by(sketch_spaces.c.id)
    if family_id is not None:
        q = q.where(sketch_spaces.c.family_id == family_id)
    return [Space(r["dim"], int(r["seed"]), r["tensor_filter"], r["metric"], r["id"], r["family_id"],
                  np.asarray(r["base_vec"], dtype=np.float64), r["method"])
            for r in conn.execute(q).mappings()]


def space(conn: sa.Connection, space_id: int) -> Space:
    for s in spaces(conn):
        if s.id == space_id:
            return s
    raise NotFound(f"sketch space {space_id} does not exist; list spaces with `zoo space ls`")


def model(conn: sa.Connection, name: str) -> dict[str, Any]:
    """A model row by name (or by numeric id given as text)."""
    row = conn.execute(sa.select(models).where(models.c.name == name)).mappings().first()
    if row is None and str(name).isdigit():
        row = conn.execute(sa.select(models).where(models.c.id == int(name))).mappings().first()
    if row is None:
        hint = similar_names(conn, name)
        raise NotFound(f"no model named {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "; list models with `zoo ls`"))
    return _model_dict(row)


def _one(conn: sa.Connection, query: sa.Select, missing: str) -> Any:
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(missing)
    return row


def model_by_id(conn: sa.Connection, model_id: int) -> dict[str, Any]:
    return _model_dict(_one(conn, sa.select(models).where(models.c.id == model_id), f"no model with id {model_id}"))


def similar_names(conn: sa.Connection, name: str, n: int = 3) -> list[str]:
    rows = conn.execute(sa.text("SELECT name FROM models ORDER BY jaro_winkler_similarity(name, :n) DESC LIMIT :k"),
                        {"n": name, "k": n}).scalars().all()
    return list(rows)


def _model_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["meta"] = _json(d.get("meta")) or {}
    return d


def model_by_hash(conn: sa.Connection, content_hash: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(models).where(models.c.content_hash == content_hash)).mappings().first()
    return _model_dict(row) if row else None


def model_by_meta(conn: sa.Connection, key: str, value: str) -> dict[str, Any] | None:
    """The first model whose ``meta`` JSON has ``key`` equal to ``value``."""
    row = conn.execute(sa.select(models).where(sa.func.json_extract_string(models.c.meta, f"$.{key}") == value)
                       .order_by(models.c.id)).mappings().first()
    return _model_dict(row) if row else None


def model_by_uri(conn: sa.Connection, uri: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(models).where(models.c.uri == uri).order_by(models.c.id)).mappings().first()
    return _model_dict(row) if row else None


def name_taken(conn: sa.Connection, name: str) -> bool:
    return conn.execute(sa.select(models.c.id).where(models.c.name == name)).first() is not None


def _model_filter(q: sa.Select, family_id: int | None = None, family: str | None = None, dataset: str | None = None,
                  task: str | None = None, kind: str | None = None, exclude_dataset: str | None = None) -> sa.Select:
    """The one filter chain over ``models`` (``family`` by name needs ``families`` joined)."""
    for col, value in ((models.c.family_id, family_id), (families.c.name, family), (models.c.dataset, dataset),
                       (models.c.task, task), (models.c.kind, kind)):
        if value is not None and value != "":
            q = q.where(col == value)
    if exclude_dataset:
        q = q.where(sa.or_(models.c.dataset.is_(None), models.c.dataset != exclude_dataset))
    return q.order_by(models.c.id)


def list_models(conn: sa.Connection, family: str | None = None, dataset: str | None = None, task: str | None = None,
                kind: str | None = None) -> list[dict[str, Any]]:
    q = (sa.select(models.c.id, models.c.name, families.c.name.label("family"), models.c.kind, models.c.dataset,
                   models.c.task, models.c.seed, models.c.n_params, models.c.dtype, models.c.uri, models.c.created_at)
         .join(families, families.c.id == models.c.family_id))
    return [dict(r) for r in conn.execute(_model_filter(q, family=family, dataset=dataset, task=task, kind=kind)).mappings()]


def family_by_id(conn: sa.Connection, family_id: int) -> dict[str, Any]:
    return dict(_one(conn, sa.select(families).where(families.c.id == family_id), f"no family with id {family_id}"))


def family_by_name(conn: sa.Connection, name: str) -> dict[str, Any]:
    return dict(_one(conn, sa.select(families).where(families.c.name == name),
                     f"no family named {name!r}; list families with `zoo sql 'SELECT name FROM families'`"))


def parents(conn: sa.Connection, model_id: int) -> list[dict[str, Any]]:
    q = (sa.select(models.c.id, models.c.name, lineage.c.relation, lineage.c.weight)
         .join(models, models.c.id == lineage.c.parent_id).where(lineage.c.child_id == model_id).order_by(models.c.id))
    return [dict(r) for r in conn.execute(q).mappings()]


def children(conn: sa.Connection, model_id: int) -> list[dict[str, Any]]:
    q = (sa.select(models.c.id, models.c.name, lineage.c.relation, lineage.c.weight)
         .join(models, models.c.id == lineage.c.child_id).where(lineage.c.parent_id == model_id).order_by(models.c.id))
    return [dict(r) for r in conn.execute(q).mappings()]


def lineage_edges(conn: sa.Connection, model_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ancestor edges, descendant edges) of a model, each edge with depth, via recursive CTEs."""
    sql_up = """
        WITH RECURSIVE up(child_id, parent_id, relation, weight, depth) AS (
            SELECT child_id, parent_id, relation, weight, 1 FROM lineage WHERE child_id = :id
            UNION
            SELECT l.child_id, l.parent_id, l.relation, l.weight, up.depth + 1
            FROM lineage l JOIN up ON l.child_id = up.parent_id WHERE up.depth < 64)
        SELECT up.*, c.name AS child, p.name AS parent FROM up
        JOIN models c ON c.id = up.child_id JOIN models p ON p.id = up.parent_id
        ORDER BY depth, parent"""
    sql_down = sql_up.replace("WHERE child_id = :id", "WHERE parent_id = :id").replace(
        "ON l.child_id = up.parent_id", "ON l.parent_id = up.child_id").replace("ORDER BY depth, parent", "ORDER BY depth, child")
    up = [dict(r) for r in conn.execute(sa.text(sql_up), {"id": model_id}).mappings()]
    down = [dict(r) for r in conn.execute(sa.text(sql_down), {"id": model_id}).mappings()]
    return up, down


def evaluations_of(conn: sa.Connection, model_id: int) -> list[dict[str, Any]]:
    q = sa.select(evaluations).where(evaluations.c.model_id == model_id).order_by(evaluations.c.created_at)
    return [dict(r) for r in conn.execute(q).mappings()]


def sketch_vectors(conn: sa.Connection, space_id: int, ids: Iterable[int] | None = None,
                   after_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(model ids, float32 matrix) of the sketches in a space (ids above ``after_id`` when given),
    ordered by model id."""
    dbapi = conn.connection.driver_connection
    params: list[Any] = [space_id]
    where = "space_id = ?"
    if after_id is not None:
        where += " AND model_id > ?"
        params.append(int(after_id))
    if ids is not None:
        ids = [int(i) for i in ids]
        if not ids:
            sp = space(conn, space_id)
            return np.zeros(0, dtype=np.int64), np.zeros((0, sp.dim), dtype=np.float32)
        where += " AND list_contains(?, model_id)"
        params.append(ids)
    # Unnesting into one flat float column avoids a Python object per vector (1M x 1024
    # floats load in seconds, not minutes); the ordered subquery keeps rows in id order.
    mids = np.asarray(dbapi.execute(f"SELECT model_id FROM sketches WHERE {where} ORDER BY model_id", params)
                      .fetchnumpy()["model_id"], dtype=np.int64)
    if len(mids) == 0:
        sp = space(conn, space_id)
        return mids, np.zeros((0, sp.dim), dtype=np.float32)
    flat = dbapi.execute(f"SELECT unnest(vec) AS x FROM (SELECT vec FROM sketches WHERE {where} ORDER BY model_id)",
                         params).fetchnumpy()["x"]
    return mids, np.asarray(flat, dtype=np.float32).reshape(len(mids), -1)


def sketch_fingerprint(conn: sa.Connection, space_id: int, max_id: int | None = None) -> dict[str, Any]:
    """Count, id checksum and norm checksum of a space's sketches (of ids <= ``max_id`` when
    given): what an index must match."""
    r = conn.execute(sa.text(
        "SELECT count(*) AS n, coalesce(sum(hash(model_id) % 1000000007), 0) AS ids, "
        "coalesce(sum(norm), 0) AS norms FROM sketches WHERE space_id = :s AND (:m IS NULL OR model_id <= :m)"),
        {"s": space_id, "m": max_id}).mappings().one()
    return {"count": int(r["n"]), "ids": int(r["ids"]), "norms": round(float(r["norms"]), 6)}


def models_meta(conn: sa.Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Name, kind, dataset, task and family of each model id."""
    if not ids:
        return {}
    q = sa.select(models.c.id, models.c.name, models.c.kind, models.c.dataset, models.c.task, models.c.family_id,
                  models.c.uri).where(models.c.id.in_([int(i) for i in ids]))
    return {r["id"]: dict(r) for r in conn.execute(q).mappings()}


def filtered_ids(conn: sa.Connection, family_id: int, dataset: str | None = None, task: str | None = None,
                 kind: str | None = None, exclude_dataset: str | None = None) -> list[int]:
    q = _model_filter(sa.select(models.c.id), family_id, None, dataset, task, kind, exclude_dataset)
    return [int(i) for i in conn.execute(q).scalars()]


def finished_runs(conn: sa.Connection, family_id: int) -> list[dict[str, Any]]:
    """Finished runs of a family with their eval accuracy: the store's outcome history."""
    q = sa.text("""
        SELECT r.id, r.dataset, r.params, e.value AS accuracy
        FROM runs r JOIN models m ON m.id = r.result_model_id
        JOIN evaluations e ON e.run_id = r.id AND e.metric = 'accuracy'
        WHERE r.status = 'finished' AND m.family_id = :f ORDER BY r.id""")
    return [dict(r, params=_json(r["params"])) for r in conn.execute(q, {"f": family_id}).mappings()]


def run_start_members(conn: sa.Connection, family_id: int) -> dict[int, list[tuple[str | None, str | None]]]:
    """For finished runs that started from a centroid: run id -> (dataset, task) of each member."""
    q = sa.text("""
        SELECT r.id AS run_id, p.dataset, p.task
        FROM runs r JOIN models m ON m.id = r.result_model_id
        JOIN lineage l ON l.child_id = r.start_model_id AND l.relation = 'averaged_from'
        JOIN models p ON p.id = l.parent_id
        WHERE r.status = 'finished' AND m.family_id = :f ORDER BY r.id, p.id""")
    out: dict[int, list[tuple[str | None, str | None]]] = {}
    for r in conn.execute(q, {"f": family_id}).mappings():
        out.setdefault(r["run_id"], []).append((r["dataset"], r["task"]))
    return out


def running_runs(conn: sa.Connection) -> list[dict[str, Any]]:
    """Runs still marked running: id, params (pid, host) and start time."""
    q = sa.select(runs.c.id, runs.c.params, runs.c.started_at).where(runs.c.status == "running").order_by(runs.c.id)
    return [dict(r, params=_json(r["params"]) or {}) for r in conn.execute(q).mappings()]


def list_runs(conn: sa.Connection, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    q = """
        SELECT r.id, r.status, s.name AS start, m.name AS result, r.dataset, r.method, r.device,
               r.started_at, r.finished_at, r.metrics->>'eval_accuracy' AS eval_accuracy, r.error
        FROM runs r LEFT JOIN models s ON s.id = r.start_model_id LEFT JOIN models m ON m.id = r.result_model_id
        WHERE (:status IS NULL OR r.status = :status) ORDER BY r.id DESC"""
    if limit:
        q += f" LIMIT {int(limit)}"
    rows = [dict(r) for r in conn.execute(sa.text(q), {"status": status}).mappings()]
    for r in rows:
        r["eval_accuracy"] = float(r["eval_accuracy"]) if r["eval_accuracy"] is not None else None
    return rows


# ---------------------------------------------------------------- writes

def insert_family(conn: sa.Connection, name: str, signature: str, prefix: str, body: dict[str, Sequence[int]]) -> int:
    return int(conn.execute(families.insert().values(
        name=name, arch_signature=signature, prefix=prefix, body={k: list(v) for k, v in body.items()})
        .returning(families.c.id)).scalar_one())


def set_family_base(conn: sa.Connection, family_id: int, model_id: int) -> None:
    conn.execute(families.update().where(families.c.id == family_id).values(base_model_id=model_id))


def first_free(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``, ... whichever is not in ``taken``."""
    name, i = wanted, 2
    while name in taken:
        name, i = f"{wanted}-{i}", i + 1
    return name


def unique_family_name(conn: sa.Connection, wanted: str) -> str:
    return first_free(wanted, set(conn.execute(sa.select(families.c.name)).scalars()))


def unique_model_name(conn: sa.Connection, wanted: str) -> str:
    return first_free(wanted, set(conn.execute(sa.select(models.c.name)).scalars()))


def insert_space(conn: sa.Connection, family_id: int, dim: int, seed: int, metric: str, tensor_filter: str | None,
                 base_vec: np.ndarray) -> int:
    dup = conn.execute(sa.select(sketch_spaces.c.id).where(
        sketch_spaces.c.family_id == family_id, sketch_spaces.c.dim == dim, sketch_spaces.c.seed == seed,
        sketch_spaces.c.tensor_filter.is_(None) if tensor_filter is None else sketch_spaces.c.tensor_filter == tensor_filter)).first()
    if dup:
        raise Conflict(f"family {family_id} already has a sketch space with dim={dim}, seed={seed} (space {dup[0]}); pick another --dim or --seed")
    return int(conn.execute(sketch_spaces.insert().values(
        family_id=family_id, dim=dim, seed=seed, metric=metric, tensor_filter=tensor_filter,
        base_vec=[float(x) for x in base_vec]).returning(sketch_spaces.c.id)).scalar_one())


def insert_model(conn: sa.Connection, **values: Any) -> int:
    if name_taken(conn, values["name"]):
        raise Conflict(f"a model named {values['name']!r} already exists; choose another --name")
    return int(conn.execute(models.insert().values(**values).returning(models.c.id)).scalar_one())


def insert_sketch(conn: sa.Connection, model_id: int, space_id: int, vec: np.ndarray) -> None:
    v = np.asarray(vec, dtype=np.float64)
    conn.execute(sketches.insert().values(model_id=model_id, space_id=space_id,
                                          vec=[float(x) for x in v.astype(np.float32)], norm=float(np.linalg.norm(v))))


def insert_lineage(conn: sa.Connection, child_id: int, parent_id: int, relation: str, weight: float | None = None) -> None:
    conn.execute(lineage.insert().values(child_id=child_id, parent_id=parent_id, relation=relation, weight=weight))


def insert_evaluation(conn: sa.Connection, **values: Any) -> None:
    conn.execute(evaluations.insert().values(**values))


def insert_run(conn: sa.Connection, **values: Any) -> int:
    return int(conn.execute(runs.insert().values(**values).returning(runs.c.id)).scalar_one())


def update_run(conn: sa.Connection, run_id: int, **values: Any) -> None:
    conn.execute(runs.update().where(runs.c.id == run_id).values(**values))


def update_model(conn: sa.Connection, model_id: int, **values: Any) -> None:
    if "name" in values and name_taken(conn, values["name"]):
        raise Conflict(f"a model named {values['name']!r} already exists; choose another --name")
    conn.execute(models.update().where(models.c.id == model_id).values(**values))


def delete_model(conn: sa.Connection, model_id: int, force: bool) -> list[str]:
    """Delete a model with its sketches, edges and evaluations; returns the names of children it had.

    Refuses while other models derive from it unless ``force`` (their edges are dropped,
    the children stay). A family's base cannot go while the family has other models.
    """
    kids = children(conn, model_id)
    if kids and not force:
        names = ", ".join(k["name"] for k in kids[:5]) + (" ..." if len(kids) > 5 else "")
        raise Conflict(f"{len(kids)} model(s) derive from this one ({names}); remove them first or pass --force")
    fam = conn.execute(sa.select(families).where(families.c.base_model_id == model_id)).mappings().first()
    if fam is not None:
        others = conn.execute(sa.select(sa.func.count()).select_from(models).where(
            models.c.family_id == fam["id"], models.c.id != model_id)).scalar_one()
        if others:
            raise Conflict(f"this is the base of family {fam['name']!r}, which has {others} other model(s); "
                           "every sketch in the family is relative to it, so remove those models first")
    conn.execute(sketches.delete().where(sketches.c.model_id == model_id))
    conn.execute(lineage.delete().where(sa.or_(lineage.c.child_id == model_id, lineage.c.parent_id == model_id)))
    conn.execute(evaluations.delete().where(evaluations.c.model_id == model_id))
    conn.execute(runs.update().where(runs.c.result_model_id == model_id).values(result_model_id=None))
    conn.execute(models.delete().where(models.c.id == model_id))
    if fam is not None:
        conn.execute(sketch_spaces.delete().where(sketch_spaces.c.family_id == fam["id"]))
        conn.execute(families.delete().where(families.c.id == fam["id"]))
    return [k["name"] for k in kids]
