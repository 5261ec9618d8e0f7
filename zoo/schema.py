"""SQLAlchemy tables of the catalog: Alembic's target metadata.

Integer keys come from DuckDB sequences (DuckDB has no SERIAL). Sketch vectors are
``FLOAT[]`` lists: one table holds every sketch space, and spaces differ in dimension, so
a fixed-size ``FLOAT[d]`` column cannot hold them all; the SQL macros use DuckDB's
``list_cosine_similarity`` / ``list_distance``, the same math as the array functions.

No FOREIGN KEY clauses: DuckDB checks them against the committed state, so deleting a
model and the rows that reference it in one transaction fails. ``catalog.py`` keeps
referential integrity instead, inside the same transactions.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import UserDefinedType

from zoo.domain import KINDS, METRICS, RELATIONS


def one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    """``column IN (...)`` from a vocabulary of ``zoo.domain``."""
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


class FloatList(UserDefinedType):
    """DuckDB ``FLOAT[]``."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "FLOAT[]"


class DoubleList(UserDefinedType):
    """DuckDB ``DOUBLE[]``."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "DOUBLE[]"


metadata = sa.MetaData()

SEQUENCES = {name: sa.Sequence(f"{name}_id_seq", metadata=metadata) for name in ("families", "models", "sketch_spaces", "runs")}


def _id(table: str) -> sa.Column:
    seq = SEQUENCES[table]
    return sa.Column("id", sa.Integer, seq, server_default=seq.next_value(), primary_key=True)


NOW = sa.text("current_timestamp")

families = sa.Table(
    "families", metadata,
    _id("families"),
    sa.Column("name", sa.String, nullable=False, unique=True),
    sa.Column("arch_signature", sa.String, nullable=False),
    sa.Column("base_model_id", sa.Integer),
    sa.Column("prefix", sa.String, nullable=False, server_default=""),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
)

models = sa.Table(
    "models", metadata,
    _id("models"),
    sa.Column("name", sa.String, nullable=False, unique=True),
    sa.Column("family_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("uri", sa.String, nullable=False),
    sa.Column("format", sa.String, nullable=False),
    sa.Column("content_hash", sa.String, nullable=False, unique=True),
    sa.Column("dataset", sa.String),
    sa.Column("task", sa.String),
    sa.Column("seed", sa.Integer),
    sa.Column("n_params", sa.BigInteger, nullable=False),
    sa.Column("dtype", sa.String, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
    one_of("kind", KINDS, "models_kind"),
)

sketch_spaces = sa.Table(
    "sketch_spaces", metadata,
    _id("sketch_spaces"),
    sa.Column("family_id", sa.Integer, nullable=False),
    sa.Column("method", sa.String, nullable=False, server_default="countsketch-splitmix64"),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("metric", sa.String, nullable=False),
    sa.Column("tensor_filter", sa.String),
    sa.Column("base_vec", DoubleList(), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
    sa.UniqueConstraint("family_id", "dim", "seed", "tensor_filter", name="sketch_spaces_unique"),
    one_of("metric", METRICS, "sketch_spaces_metric"),
)

sketches = sa.Table(
    "sketches", metadata,
    sa.Column("model_id", sa.Integer, primary_key=True),
    sa.Column("space_id", sa.Integer, primary_key=True),
    sa.Column("vec", FloatList(), nullable=False),
    sa.Column("norm", sa.Float(53), nullable=False),
    # The inverted list of the space's published IVF lists this sketch is in (NULL: none yet).
    sa.Column("list_id", sa.Integer),
)

# A space's IVF coarse centroids, published from its FAISS index for SQL probes (migration 0003).
sketch_lists = sa.Table(
    "sketch_lists", metadata,
    sa.Column("space_id", sa.Integer, primary_key=True),
    sa.Column("list_id", sa.Integer, primary_key=True),
    sa.Column("nprobe", sa.Integer, nullable=False),
    sa.Column("centroid", FloatList(), nullable=False),
)

lineage = sa.Table(
    "lineage", metadata,
    sa.Column("child_id", sa.Integer, primary_key=True),
    sa.Column("parent_id", sa.Integer, primary_key=True),
    sa.Column("relation", sa.String, primary_key=True),
    sa.Column("weight", sa.Float(53)),
    one_of("relation", RELATIONS, "lineage_relation"),
)

runs = sa.Table(
    "runs", metadata,
    _id("runs"),
    sa.Column("start_model_id", sa.Integer),
    sa.Column("result_model_id", sa.Integer),
    sa.Column("dataset", sa.String),
    sa.Column("method", sa.String),
    sa.Column("params", sa.JSON),
    sa.Column("device", sa.String),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("metrics", sa.JSON),
    sa.Column("error", sa.String),
)

evaluations = sa.Table(
    "evaluations", metadata,
    sa.Column("model_id", sa.Integer, nullable=False),
    sa.Column("dataset", sa.String, nullable=False),
    sa.Column("split", sa.String, nullable=False),
    sa.Column("metric", sa.String, nullable=False),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("n_examples", sa.Integer),
    sa.Column("run_id", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=NOW),
)


# PostgreSQL spells the list types its own way: sketches as single-precision arrays (what
# pgvector casts to its ``vector``), base vectors in double precision.
@compiles(FloatList, "postgresql")
def _float_list_pg(type_: FloatList, compiler: Any, **kw: Any) -> str:
    return "REAL[]"


@compiles(DoubleList, "postgresql")
def _double_list_pg(type_: DoubleList, compiler: Any, **kw: Any) -> str:
    return "DOUBLE PRECISION[]"
