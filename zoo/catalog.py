"""Every query of the catalog. Nothing else in zoo writes SQL against it.

Functions take an open ``zoo.db.Conn`` (see ``zoo.db.connect``); a write function runs
inside the caller's transaction, so one command is one transaction. The statements are
DuckDB SQL with ``$name`` parameters, run on DuckDB's own connection: the tables are
SQLAlchemy's (``zoo.schema``, Alembic's target), but a read needs neither SQLAlchemy's
import (0.2 s per command) nor its per-statement cost (DESIGN-NOTES, note 27).

On a PostgreSQL catalog (``conn.postgres``) the same statements run through psycopg; the
few that use DuckDB's own functions have their PostgreSQL twin beside them here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from zoo.domain import SORT_COLUMNS, Family, Space
from zoo.errors import CatalogUnreadable, Conflict, NotFound, ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from zoo.db import Conn


# The store's folders whose files the catalog records relative to the store's root.
STORE_DIRS = ("weights", "checkpoints")


def _json(v: Any) -> Any:
    if v is None or isinstance(v, (dict, list)):
        return v
    return json.loads(v)


def _dump(v: Any) -> Any:
    """A JSON column's value as text (None stays NULL)."""
    return None if v is None else json.dumps(v, default=str)


# ---------------------------------------------------------------- reads

MODEL_COLS = ("id, name, family_id, kind, uri, format, content_hash, dataset, task, seed, n_params, dtype, meta, "
              "created_at")


def families_snapshot(conn: Conn, family_id: int | None = None) -> list[Family]:
    """All families (or the one with ``family_id``) with their spaces, base sketches included."""
    fams = {}
    for r in conn.rows("SELECT f.*, m.uri AS base_uri, m.name AS base_name FROM families f "
                       "LEFT JOIN models m ON m.id = f.base_model_id WHERE $f IS NULL OR f.id = $f ORDER BY f.id",
                       {"f": family_id}):
        body = {k: tuple(v) for k, v in _json(r["body"]).items()}
        fams[r["id"]] = Family(r["id"], r["name"], r["arch_signature"], r["base_model_id"], r["prefix"], body,
                               base_uri=_abs(conn, r["base_uri"]), base_name=r["base_name"])
    for s in spaces(conn, family_id):
        if s.family_id in fams:
            fams[s.family_id].spaces.append(s)
    return list(fams.values())


def spaces(conn: Conn, family_id: int | None = None) -> list[Space]:
    import numpy as np

    rows = conn.rows("SELECT * FROM sketch_spaces WHERE $f IS NULL OR family_id = $f ORDER BY id", {"f": family_id})
    return [Space(r["dim"], int(r["seed"]), r["tensor_filter"], r["metric"], r["id"], r["family_id"],
                  np.asarray(r["base_vec"], dtype=np.float64), r["method"]) for r in rows]


def space(conn: Conn, space_id: int) -> Space:
    for s in spaces(conn):
        if s.id == space_id:
            return s
    raise NotFound(f"sketch space {space_id} does not exist; list spaces with `zoo space ls`")


def _model_where(column: str, value: Any, conn: Conn) -> dict[str, Any] | None:
    row = conn.row(f"SELECT {MODEL_COLS} FROM models WHERE {column} = $v ORDER BY id LIMIT 1", {"v": value})
    return _model_dict(row, conn) if row else None


def model(conn: Conn, name: str) -> dict[str, Any]:
    """A model row by name (or by numeric id given as text)."""
    row = _model_where("name", str(name), conn)
    if row is None and str(name).isdigit():
        row = _model_where("id", int(name), conn)
    if row is None:
        hint = similar_names(conn, name)
        raise NotFound(f"no model named {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint else "; list models with `zoo ls`"))
    return row


def model_by_id(conn: Conn, model_id: int) -> dict[str, Any]:
    row = _model_where("id", int(model_id), conn)
    if row is None:
        raise NotFound(f"no model with id {model_id}")
    return row


def similar_names(conn: Conn, name: str, n: int = 3) -> list[str]:
    if conn.postgres:  # no string-similarity function without an extension: rank here
        import difflib

        names = sorted(model_names(conn))
        return difflib.get_close_matches(str(name), names, n, 0.0)
    return [r["name"] for r in conn.rows(
        "SELECT name FROM models ORDER BY jaro_winkler_similarity(name, $n) DESC, id LIMIT $k", {"n": str(name), "k": n})]


def _model_dict(row: dict[str, Any], conn: Conn | None = None) -> dict[str, Any]:
    row["meta"] = _json(row.get("meta")) or {}
    if conn is not None and conn.root is not None:
        _located(conn, row, _abs)
    return row


# ---------------------------------------------------------------- locations
# A file under the weight store's root (``weights/``, ``checkpoints/``) is stored as a path
# relative to it: ``weights/<hash>/model.safetensors``. Every row read gives it back absolute
# under this process's root, so one catalog serves machines that mount the store at different
# places (docs/SCALING.md). Files registered in place, outside the store, stay absolute.

def _rel(conn: Conn, path: Any) -> Any:
    if conn.root is None or not isinstance(path, str) or not os.path.isabs(path):
        return path
    p = Path(path)
    if not p.is_relative_to(conn.root):  # named through the real path of a mounted or linked root
        p, root = p.resolve(), conn.root.resolve()
        if not p.is_relative_to(root):
            return path
        rel = p.relative_to(root)
    else:
        rel = p.relative_to(conn.root)
    return rel.as_posix() if rel.parts and rel.parts[0] in STORE_DIRS else path


def _abs(conn: Conn, path: Any) -> Any:
    if conn.root is None or not isinstance(path, str) or not path or os.path.isabs(path):
        return path
    return str(conn.root / path)


def _located(conn: Conn, values: dict[str, Any], how: Any) -> dict[str, Any]:
    """``values`` with its ``uri`` and ``meta.files`` paths passed through ``how`` (``_rel`` or ``_abs``)."""
    if "uri" in values:
        values["uri"] = how(conn, values["uri"])
    meta = values.get("meta")
    if isinstance(meta, dict) and meta.get("files"):
        values["meta"] = dict(meta, files=[[how(conn, f[0]), *f[1:]] for f in meta["files"]])
    return values


def model_by_hash(conn: Conn, content_hash: str) -> dict[str, Any] | None:
    return _model_where("content_hash", content_hash, conn)


def model_by_meta(conn: Conn, key: str, value: str) -> dict[str, Any] | None:
    """The first model whose ``meta`` JSON has ``key`` (dotted: ``hub.repo_id``) equal to ``value``."""
    if conn.postgres:
        where, p = "meta #>> $p", key.split(".")
    else:
        where, p = "json_extract_string(meta, $p)", f"$.{key}"
    row = conn.row(f"SELECT {MODEL_COLS} FROM models WHERE {where} = $v ORDER BY id LIMIT 1", {"p": p, "v": value})
    return _model_dict(row, conn) if row else None


def model_by_uri(conn: Conn, uri: str) -> dict[str, Any] | None:
    """The model registered from ``uri`` (stored relative to the store's root or, in catalogs
    written before, absolute)."""
    row = conn.row(f"SELECT {MODEL_COLS} FROM models WHERE uri = $v OR uri = $r ORDER BY id LIMIT 1",
                   {"v": str(uri), "r": _rel(conn, str(uri))})
    return _model_dict(row, conn) if row else None


def model_by_hash_or_name(conn: Conn, content_hash: str, name: str) -> tuple[dict[str, Any] | None, bool]:
    """(the model with these weights or None, whether ``name`` is taken), in one statement."""
    rows = conn.rows(f"SELECT {MODEL_COLS} FROM models WHERE content_hash = $h OR name = $n ORDER BY id",
                     {"h": content_hash, "n": name})
    same = next((r for r in rows if r["content_hash"] == content_hash), None)
    return (_model_dict(same, conn) if same else None), any(r["name"] == name for r in rows)


def name_taken(conn: Conn, name: str) -> bool:
    return conn.scalar("SELECT count(*) FROM models WHERE name = $n", {"n": name}) > 0


# The one filter over ``models m`` joined to ``families f``: every argument may be NULL.
_FILTER = """($family_id IS NULL OR m.family_id = $family_id) AND ($family IS NULL OR f.name = $family)
    AND ($dataset IS NULL OR m.dataset = $dataset) AND ($task IS NULL OR m.task = $task)
    AND ($kind IS NULL OR m.kind = $kind OR ($kind = 'trained' AND m.kind IN ('finetune', 'adapter')))
    AND ($exclude_dataset IS NULL OR m.dataset <> $exclude_dataset)"""
# A model without a dataset may have been trained on the excluded one: a region that leaves a
# dataset out leaves them out too. kind 'trained': full fine-tunes and adapters (domain.TRAINED_KINDS).


def _filter_params(family_id: int | None = None, family: str | None = None, dataset: str | None = None,
                   task: str | None = None, kind: str | None = None, exclude_dataset: str | None = None) -> dict[str, Any]:
    """The filter's parameters; an empty string filters nothing, like None."""
    vals = dict(family_id=family_id, family=family, dataset=dataset, task=task, kind=kind,
                exclude_dataset=exclude_dataset)
    return {k: (None if v == "" else v) for k, v in vals.items()}


# Free text matches a substring of the name, dataset, task or family, in any case.
_SEARCH = ("($q IS NULL OR strpos(lower(m.name || ' ' || coalesce(m.dataset, '') || ' ' || coalesce(m.task, '') "
           "|| ' ' || f.name), lower($q)) > 0)")


_LISTING = f"FROM models m JOIN families f ON f.id = m.family_id WHERE {_FILTER} AND {_SEARCH}"


def _listing_params(family: str | None, dataset: str | None, task: str | None, kind: str | None,
                    search: str | None) -> dict[str, Any]:
    return dict(_filter_params(family=family, dataset=dataset, task=task, kind=kind), q=search or None)


def list_models(conn: Conn, family: str | None = None, dataset: str | None = None, task: str | None = None,
                kind: str | None = None, search: str | None = None, sort: str = "id", descending: bool = False,
                limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Models matching the filters and ``search``, ordered by ``sort`` (one of ``SORT_COLUMNS``;
    missing values last, then by id), ``limit`` rows from ``offset``."""
    if sort not in SORT_COLUMNS:
        raise ZooValueError(f"sort column {sort!r} is not one of {', '.join(SORT_COLUMNS)}")
    col = "f.name" if sort == "family" else f"m.{sort}"
    page = f" LIMIT {int(limit)}" if limit is not None else ""
    page += f" OFFSET {int(offset)}" if offset else ""
    rows = conn.rows(
        "SELECT m.id, m.name, f.name AS family, m.kind, m.dataset, m.task, m.seed, m.n_params, m.dtype, m.uri, "
        f"m.created_at {_LISTING} ORDER BY {col} {'DESC' if descending else 'ASC'} NULLS LAST, m.id{page}",
        _listing_params(family, dataset, task, kind, search))
    return [_located(conn, r, _abs) for r in rows] if conn.root is not None else rows


def count_models(conn: Conn, family: str | None = None, dataset: str | None = None, task: str | None = None,
                 kind: str | None = None, search: str | None = None) -> int:
    """How many models ``list_models`` finds with these filters, without a page."""
    return int(conn.scalar(f"SELECT count(*) {_LISTING}", _listing_params(family, dataset, task, kind, search)))


def model_names(conn: Conn) -> set[str]:
    return {r["name"] for r in conn.rows("SELECT name FROM models")}


def family_by_id(conn: Conn, family_id: int) -> dict[str, Any]:
    row = conn.row("SELECT * FROM families WHERE id = $i", {"i": family_id})
    if row is None:
        raise NotFound(f"no family with id {family_id}")
    return row


def family_by_name(conn: Conn, name: str) -> dict[str, Any]:
    row = conn.row("SELECT * FROM families WHERE name = $n", {"n": name})
    if row is None:
        raise NotFound(f"no family named {name!r}; list families with `zoo sql 'SELECT name FROM families'`")
    return row


_EDGES = """SELECT m.id, m.name, l.relation, l.weight FROM lineage l JOIN models m ON m.id = l.{other}
            WHERE l.{this} = $id ORDER BY m.id"""


def parents(conn: Conn, model_id: int) -> list[dict[str, Any]]:
    return conn.rows(_EDGES.format(other="parent_id", this="child_id"), {"id": model_id})


def children(conn: Conn, model_id: int) -> list[dict[str, Any]]:
    return conn.rows(_EDGES.format(other="child_id", this="parent_id"), {"id": model_id})


def lineage_edges(conn: Conn, model_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(ancestor edges, descendant edges) of a model, each edge with depth, via recursive CTEs."""
    sql_up = """
        WITH RECURSIVE up(child_id, parent_id, relation, weight, depth) AS (
            SELECT child_id, parent_id, relation, weight, 1 FROM lineage WHERE child_id = $id
            UNION
            SELECT l.child_id, l.parent_id, l.relation, l.weight, up.depth + 1
            FROM lineage l JOIN up ON l.child_id = up.parent_id WHERE up.depth < 64)
        SELECT up.*, c.name AS child, p.name AS parent FROM up
        JOIN models c ON c.id = up.child_id JOIN models p ON p.id = up.parent_id
        ORDER BY depth, parent"""
    sql_down = sql_up.replace("WHERE child_id = $id", "WHERE parent_id = $id").replace(
        "ON l.child_id = up.parent_id", "ON l.parent_id = up.child_id").replace("ORDER BY depth, parent", "ORDER BY depth, child")
    return conn.rows(sql_up, {"id": model_id}), conn.rows(sql_down, {"id": model_id})


def record_of(conn: Conn, model_id: int) -> dict[str, Any]:
    """A model's row with its family's name, its base's name, its parents (name, relation,
    weight) and its evaluations (written beside its files at every add). Three plain
    statements: DuckDB plans them in 4 ms together, the one with correlated lists in 8."""
    row = conn.row("SELECT m.*, f.name AS family, b.name AS base FROM models m JOIN families f ON f.id = m.family_id "
                   "LEFT JOIN models b ON b.id = f.base_model_id WHERE m.id = $id", {"id": model_id})
    if row is None:
        raise NotFound(f"no model with id {model_id}")
    row["parents"] = conn.rows("SELECT p.name, l.relation, l.weight FROM lineage l JOIN models p ON p.id = l.parent_id "
                               "WHERE l.child_id = $id ORDER BY p.id", {"id": model_id})
    row["evaluations"] = conn.rows("SELECT dataset, split, metric, value, n_examples FROM evaluations "
                                   "WHERE model_id = $id ORDER BY created_at", {"id": model_id})
    return _model_dict(row, conn)


def evaluations_of(conn: Conn, model_id: int) -> list[dict[str, Any]]:
    return conn.rows("SELECT * FROM evaluations WHERE model_id = $id ORDER BY created_at", {"id": model_id})


# Up to this many rows come back as Python lists; more stream as Arrow batches.
_FEW = 256


def sketch_vectors(conn: Conn, space_id: int, ids: Iterable[int] | None = None,
                   after_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(model ids, float32 matrix) of the sketches in a space (ids above ``after_id`` when given),
    ordered by model id."""
    import numpy as np

    params: dict[str, Any] = {"s": space_id, "after": None if after_id is None else int(after_id), "ids": None}
    if ids is not None:
        params["ids"] = [int(i) for i in ids]
        if not params["ids"]:
            return _vectors_of(conn, space_id, [])
    where = f"space_id = $s AND ($after IS NULL OR model_id > $after) AND ($ids IS NULL OR {_in(conn, 'model_id', 'ids')})"
    if conn.postgres:
        rows = conn.rows(f"SELECT model_id, vec FROM sketches WHERE {where} ORDER BY model_id", params)
        return _vectors_of(conn, space_id, [(r["model_id"], r["vec"]) for r in rows])
    if after_id is not None:  # an index catching up: usually a few rows, read in one statement
        few = conn.raw.execute(f"SELECT model_id, vec FROM sketches WHERE {where} ORDER BY model_id LIMIT {_FEW + 1}",
                               params).fetchall()
        if len(few) <= _FEW:
            return _vectors_of(conn, space_id, few)
    mids = np.asarray(conn.raw.execute(f"SELECT model_id FROM sketches WHERE {where} ORDER BY model_id", params)
                      .fetchnumpy()["model_id"], dtype=np.int64)
    if len(mids) == 0:
        return _vectors_of(conn, space_id, [])
    out: np.ndarray | None = None
    # Arrow batches in storage order, each scattered to its rows: no Python object per vector,
    # no sort of the vectors in DuckDB and one copy in memory (4 GB at 1M sketches of d = 1024).
    # A relation streams; Arrow from an executed DB-API result copies every row first.
    rel = conn.raw.sql(f"SELECT model_id, vec FROM sketches WHERE {where}", params=params)
    reader = rel.to_arrow_reader(1 << 16) if hasattr(rel, "to_arrow_reader") else rel.record_batch(1 << 16)  # DuckDB 2 / 1
    for batch in reader:
        bid = batch.column(0).to_numpy()
        vecs = batch.column(1)
        dim = len(vecs[0]) if out is None else out.shape[1]
        flat = vecs.flatten().to_numpy(zero_copy_only=False)
        if flat.size != len(bid) * dim:
            raise CatalogUnreadable(f"sketches of space {space_id} differ in length; run `zoo doctor`")
        if out is None:
            out = np.empty((len(mids), dim), dtype=np.float32)
        out[np.searchsorted(mids, bid)] = flat.reshape(len(bid), dim)
    return mids, out


def _vectors_of(conn: Conn, space_id: int, pairs: Sequence[tuple[int, Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 matrix) from (model id, vector) rows already in id order."""
    import numpy as np

    mids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    if not pairs:
        return mids, np.zeros((0, space(conn, space_id).dim), dtype=np.float32)
    if len({len(p[1]) for p in pairs}) > 1:
        raise CatalogUnreadable(f"sketches of space {space_id} differ in length; run `zoo doctor`")
    return mids, np.asarray([p[1] for p in pairs], dtype=np.float32)


def sketch_fingerprint(conn: Conn, space_id: int, max_id: int | None = None) -> dict[str, Any]:
    """Count, id checksum and norm checksum of a space's sketches (of ids <= ``max_id`` when
    given): what an index must match."""
    return sketch_fingerprints(conn, space_id, max_id)[1 if max_id is not None else 0]


def sketch_fingerprints(conn: Conn, space_id: int, max_id: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fingerprint of all of a space's sketches and of those with ids <= ``max_id``, in one
    scan (an index checks both when it is behind: may it append, or must it rebuild)."""
    # Integer sums of hashes: exact whatever the order of rows and of DuckDB's threads (a
    # float sum of norms changed in its last bits when the rows were rewritten in list order).
    ids, norms = ("hashint8(model_id)", "hashtextextended(model_id || ':' || float8send(norm)::text, 0)") \
        if conn.postgres else ("hash(model_id)", "hash(model_id, norm)")
    upto = "FILTER (WHERE $m IS NULL OR model_id <= $m)"
    r = conn.row(f"SELECT count(*) AS n, coalesce(sum({ids} % 1000000007), 0) AS ids, "
                 f"coalesce(sum({norms} % 1000000007), 0) AS norms, count(*) {upto} AS n_m, "
                 f"coalesce(sum({ids} % 1000000007) {upto}, 0) AS ids_m, "
                 f"coalesce(sum({norms} % 1000000007) {upto}, 0) AS norms_m "
                 "FROM sketches WHERE space_id = $s", {"s": space_id, "m": max_id})
    return ({"count": int(r["n"]), "ids": int(r["ids"]), "norms": int(r["norms"])},
            {"count": int(r["n_m"]), "ids": int(r["ids_m"]), "norms": int(r["norms_m"])})


def _in(conn: Conn, column: str, param: str) -> str:
    """``column`` is one of the list parameter ``$param``."""
    return f"{column} = ANY(${param})" if conn.postgres else f"list_contains(${param}, {column})"


def models_meta(conn: Conn, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Name, kind, dataset, task and family of each model id."""
    if not ids:
        return {}
    rows = conn.rows(f"SELECT id, name, kind, dataset, task, family_id, uri FROM models WHERE {_in(conn, 'id', 'ids')}",
                     {"ids": [int(i) for i in ids]})
    return {r["id"]: _located(conn, r, _abs) for r in rows}


def filtered_ids(conn: Conn, family_id: int, dataset: str | None = None, task: str | None = None,
                 kind: str | None = None, exclude_dataset: str | None = None) -> list[int]:
    rows = conn.rows(f"SELECT m.id FROM models m JOIN families f ON f.id = m.family_id WHERE {_FILTER} ORDER BY m.id",
                     _filter_params(family_id, None, dataset, task, kind, exclude_dataset))
    return [int(r["id"]) for r in rows]


def finished_runs(conn: Conn, family_id: int) -> list[dict[str, Any]]:
    """Finished runs of a family with their eval accuracy: the store's outcome history."""
    rows = conn.rows("""
        SELECT r.id, r.dataset, r.params, e.value AS accuracy
        FROM runs r JOIN models m ON m.id = r.result_model_id
        JOIN evaluations e ON e.run_id = r.id AND e.metric = 'accuracy'
        WHERE r.status = 'finished' AND m.family_id = $f ORDER BY r.id""", {"f": family_id})
    return [dict(r, params=_json(r["params"])) for r in rows]


def run_start_members(conn: Conn, family_id: int) -> dict[int, list[tuple[str | None, str | None]]]:
    """For finished runs that started from a centroid: run id -> (dataset, task) of each member."""
    out: dict[int, list[tuple[str | None, str | None]]] = {}
    for r in conn.rows("""
        SELECT r.id AS run_id, p.dataset, p.task
        FROM runs r JOIN models m ON m.id = r.result_model_id
        JOIN lineage l ON l.child_id = r.start_model_id AND l.relation = 'averaged_from'
        JOIN models p ON p.id = l.parent_id
        WHERE r.status = 'finished' AND m.family_id = $f ORDER BY r.id, p.id""", {"f": family_id}):
        out.setdefault(r["run_id"], []).append((r["dataset"], r["task"]))
    return out


def running_runs(conn: Conn) -> list[dict[str, Any]]:
    """Runs still marked running: id, params (pid, host) and start time."""
    rows = conn.rows("SELECT id, params, started_at FROM runs WHERE status = 'running' ORDER BY id")
    return [dict(r, params=_json(r["params"]) or {}) for r in rows]


def list_runs(conn: Conn, status: str | None = None, limit: int | None = None,
              model_id: int | None = None) -> list[dict[str, Any]]:
    """Runs, newest first; ``model_id``: only those that started from or made that model."""
    rows = conn.rows("""
        SELECT r.id, r.status, s.name AS start, m.name AS result, r.dataset, r.method, r.device,
               r.started_at, r.finished_at, r.metrics->>'eval_accuracy' AS eval_accuracy, r.error
        FROM runs r LEFT JOIN models s ON s.id = r.start_model_id LEFT JOIN models m ON m.id = r.result_model_id
        WHERE ($status IS NULL OR r.status = $status)
          AND ($model IS NULL OR r.start_model_id = $model OR r.result_model_id = $model)
        ORDER BY r.id DESC LIMIT $limit""",
                     {"status": status, "limit": int(limit) if limit else None, "model": model_id})
    for r in rows:
        r["eval_accuracy"] = float(r["eval_accuracy"]) if r["eval_accuracy"] is not None else None
    return rows


# ---------------------------------------------------------------- writes

# Columns written as JSON text; DuckDB casts the text on insert.
_JSON_COLUMNS = {"meta", "body", "params", "metrics"}


def _as_stored(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (_dump(v) if k in _JSON_COLUMNS else v) for k, v in values.items()}


def _insert(conn: Conn, table: str, values: dict[str, Any], returning: bool = False) -> int | None:
    vals = _as_stored(values)
    sql = f"INSERT INTO {table} ({', '.join(vals)}) VALUES ({', '.join('$' + k for k in vals)})"
    if returning:
        return int(conn.scalar(sql + " RETURNING id", vals))
    conn.run(sql, vals)
    return None


def _update(conn: Conn, table: str, row_id: int, values: dict[str, Any]) -> None:
    if not values:
        return
    vals = _as_stored(values)
    conn.run(f"UPDATE {table} SET {', '.join(f'{k} = ${k}' for k in vals)} WHERE id = $row_id", dict(vals, row_id=row_id))


def insert_family(conn: Conn, name: str, signature: str, prefix: str, body: dict[str, Sequence[int]]) -> int:
    return _insert(conn, "families", dict(name=name, arch_signature=signature, prefix=prefix,
                                          body={k: list(v) for k, v in body.items()}), returning=True)


def set_family_base(conn: Conn, family_id: int, model_id: int) -> None:
    _update(conn, "families", family_id, {"base_model_id": model_id})


def first_free(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted-2``, ``wanted-3``, ... whichever is not in ``taken``."""
    name, i = wanted, 2
    while name in taken:
        name, i = f"{wanted}-{i}", i + 1
    return name


def unique_family_name(conn: Conn, wanted: str) -> str:
    return first_free(wanted, {r["name"] for r in conn.rows("SELECT name FROM families")})


def unique_model_name(conn: Conn, wanted: str) -> str:
    return first_free(wanted, model_names(conn))


def insert_space(conn: Conn, family_id: int, dim: int, seed: int, metric: str, tensor_filter: str | None,
                 base_vec: np.ndarray) -> int:
    dup = conn.scalar("SELECT id FROM sketch_spaces WHERE family_id = $f AND dim = $d AND seed = $s "
                      "AND tensor_filter IS NOT DISTINCT FROM $t", {"f": family_id, "d": dim, "s": seed, "t": tensor_filter})
    if dup is not None:
        raise Conflict(f"family {family_id} already has a sketch space with dim={dim}, seed={seed} (space {dup}); "
                       "pick another --dim or --seed")
    sid = _insert(conn, "sketch_spaces", dict(family_id=family_id, dim=dim, seed=seed, metric=metric,
                                              tensor_filter=tensor_filter, base_vec=[float(x) for x in base_vec]),
                  returning=True)
    if conn.postgres:
        vector_index(conn, sid, dim, metric)
    return sid


# pgvector indexes vectors of at most 2,000 dimensions; wider spaces are scanned exactly.
PG_HNSW_MAX_DIM = 2000


def vector_index(conn: Conn, space_id: int, dim: int, metric: str) -> bool:
    """On PostgreSQL with pgvector, an HNSW index over one space's sketches (a partial
    expression index: spaces differ in dimension), the one ``zoo_nearest`` uses. False when
    pgvector is missing or the space is too wide; SQL nearest then scans exactly."""
    if dim > PG_HNSW_MAX_DIM or not conn.scalar("SELECT to_regtype('vector') IS NOT NULL"):
        return False
    ops = "vector_cosine_ops" if metric == "cosine" else "vector_l2_ops"
    conn.run(f"CREATE INDEX IF NOT EXISTS zoo_hnsw_{int(space_id)} ON sketches USING hnsw "
             f"((vec::vector({int(dim)})) {ops}) WHERE space_id = {int(space_id)}")
    return True


def insert_model(conn: Conn, name_checked: bool = False, **values: Any) -> int:
    """Insert a model row; its id. ``name_checked``: the caller found the name free in this transaction."""
    if not name_checked and name_taken(conn, values["name"]):
        raise Conflict(f"a model named {values['name']!r} already exists; choose another --name")
    return _insert(conn, "models", _located(conn, values, _rel), returning=True)


def insert_sketch(conn: Conn, model_id: int, space_id: int, vec: np.ndarray) -> None:
    import numpy as np

    v = np.asarray(vec, dtype=np.float64)
    _insert(conn, "sketches", dict(model_id=model_id, space_id=space_id, vec=v.astype(np.float32),
                                   norm=float(np.linalg.norm(v))))


def insert_lineage(conn: Conn, child_id: int, parent_id: int, relation: str, weight: float | None = None) -> None:
    _insert(conn, "lineage", dict(child_id=child_id, parent_id=parent_id, relation=relation, weight=weight))


def insert_evaluation(conn: Conn, **values: Any) -> None:
    _insert(conn, "evaluations", values)


def insert_run(conn: Conn, **values: Any) -> int:
    return _insert(conn, "runs", values, returning=True)


def update_run(conn: Conn, run_id: int, **values: Any) -> None:
    _update(conn, "runs", run_id, values)


def update_model(conn: Conn, model_id: int, **values: Any) -> None:
    if "name" in values and name_taken(conn, values["name"]):
        raise Conflict(f"a model named {values['name']!r} already exists; choose another --name")
    _update(conn, "models", model_id, _located(conn, values, _rel))


def has_lists(conn: Conn, space_id: int) -> bool:
    if conn.postgres:  # SQL nearest there goes through pgvector's HNSW index instead
        return False
    return conn.scalar("SELECT count(*) FROM sketch_lists WHERE space_id = $s", {"s": space_id}) > 0


CLUSTER_BYTES = 512 << 20  # vector bytes moved at a time when a space is rewritten in list order


def publish_lists(conn: Conn, space_id: int, nprobe: int, ids: np.ndarray,
                  coarse: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Replace a space's IVF lists: ``coarse`` = (centroids, list of each ``ids[i]``), or None
    when the space has none (SQL scans it whole).

    With lists, the space's rows are rewritten in list order: DuckDB skips storage by
    min/max ranges, so a probe reads only a list's rows when they are contiguous and most
    of the column when they are scattered (the macro at 100k sketches: 55 -> 28 ms). The
    blocks freed are reused by later writes.
    """
    if conn.postgres:  # pgvector's index serves SQL there (see ``insert_space``)
        return
    s = {"s": space_id}
    conn.run("DELETE FROM sketch_lists WHERE space_id = $s", s)
    if coarse is None or not len(coarse[0]):
        conn.run("UPDATE sketches SET list_id = NULL WHERE space_id = $s AND list_id IS NOT NULL", s)
        return
    centroids, lists = coarse
    conn.run("INSERT INTO sketch_lists SELECT $s, i - 1, $p, c FROM (SELECT unnest($c) AS c, "
             "generate_subscripts($c, 1) AS i)", {**s, "p": int(nprobe), "c": centroids.tolist()})
    conn.run("CREATE OR REPLACE TEMP TABLE zoo_lists AS SELECT unnest($ids) AS model_id, unnest($lists) AS list_id",
             {"ids": [int(i) for i in ids], "lists": [int(v) for v in lists]})
    # Moved a slice of lists at a time, in list order: the copy in flight stays small
    # (a whole space is 4 GB at 1M sketches of d = 1024); rows without a list go last.
    n = int(conn.scalar("SELECT count(*) FROM sketches WHERE space_id = $s", s))
    dim = int(conn.scalar("SELECT dim FROM sketch_spaces WHERE id = $s", s))
    step = max(1, len(centroids) * CLUSTER_BYTES // max(1, n * dim * 4))
    bounds = [(lo, min(lo + step, len(centroids)) - 1) for lo in range(0, len(centroids), step)] + [(None, None)]
    for lo, hi in bounds:
        p = {**s, "lo": lo, "hi": hi}
        conn.run("CREATE OR REPLACE TEMP TABLE zoo_moving AS SELECT s.model_id, s.space_id, s.vec, s.norm, l.list_id "
                 "FROM sketches s LEFT JOIN zoo_lists l ON l.model_id = s.model_id WHERE s.space_id = $s AND "
                 "(CASE WHEN $lo IS NULL THEN l.list_id IS NULL ELSE l.list_id BETWEEN $lo AND $hi END)", p)
        conn.run("DELETE FROM sketches WHERE space_id = $s AND model_id IN (SELECT model_id FROM zoo_moving)", s)
        conn.run("INSERT INTO sketches (model_id, space_id, vec, norm, list_id) SELECT model_id, space_id, vec, norm, "
                 "list_id FROM zoo_moving ORDER BY list_id, model_id")
    conn.run("DROP TABLE zoo_moving")
    conn.run("DROP TABLE zoo_lists")


def assign_lists(conn: Conn, space_id: int, ids: np.ndarray, lists: np.ndarray) -> None:
    """Set the IVF list of each sketch ``ids[i]`` of a space to ``lists[i]``."""
    if len(ids) and not conn.postgres:
        conn.run("UPDATE sketches SET list_id = a.l FROM (SELECT unnest($ids) AS id, unnest($lists) AS l) a "
                 "WHERE sketches.space_id = $s AND sketches.model_id = a.id",
                 {"s": space_id, "ids": [int(i) for i in ids], "lists": [int(v) for v in lists]})


def delete_model(conn: Conn, model_id: int, force: bool) -> list[str]:
    """Delete a model with its sketches, edges and evaluations; returns the names of children it had.

    Refuses while other models derive from it unless ``force`` (their edges are dropped,
    the children stay). A family's base cannot go while the family has other models.
    """
    kids = children(conn, model_id)
    if kids and not force:
        names = ", ".join(k["name"] for k in kids[:5]) + (" ..." if len(kids) > 5 else "")
        raise Conflict(f"{len(kids)} model(s) derive from this one ({names}); remove them first or pass --force")
    fam = conn.row("SELECT id, name FROM families WHERE base_model_id = $m", {"m": model_id})
    if fam is not None:
        others = conn.scalar("SELECT count(*) FROM models WHERE family_id = $f AND id <> $m",
                             {"f": fam["id"], "m": model_id})
        if others:
            raise Conflict(f"this is the base of family {fam['name']!r}, which has {others} other model(s); "
                           "every sketch in the family is relative to it, so remove those models first")
    p = {"m": model_id}
    conn.run("DELETE FROM sketches WHERE model_id = $m", p)
    conn.run("DELETE FROM lineage WHERE child_id = $m OR parent_id = $m", p)
    conn.run("DELETE FROM evaluations WHERE model_id = $m", p)
    conn.run("UPDATE runs SET result_model_id = NULL WHERE result_model_id = $m", p)
    conn.run("DELETE FROM models WHERE id = $m", p)
    if fam is not None:
        conn.run("DELETE FROM sketch_lists WHERE space_id IN (SELECT id FROM sketch_spaces WHERE family_id = $f)",
                 {"f": fam["id"]})
        if conn.postgres:
            for r in conn.rows("SELECT id FROM sketch_spaces WHERE family_id = $f", {"f": fam["id"]}):
                conn.run(f"DROP INDEX IF EXISTS zoo_hnsw_{int(r['id'])}")
        conn.run("DELETE FROM sketch_spaces WHERE family_id = $f", {"f": fam["id"]})
        conn.run("DELETE FROM families WHERE id = $f", {"f": fam["id"]})
    return [k["name"] for k in kids]
