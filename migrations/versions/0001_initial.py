"""Initial catalog: families, models, sketch spaces, sketches, lineage, runs, evaluations.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.schema import CreateSequence, DropSequence

from zoo.schema import DoubleList, FloatList

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SEQS = ("families", "models", "sketch_spaces", "runs")


def _id(table: str) -> sa.Column:
    seq = sa.Sequence(f"{table}_id_seq")
    return sa.Column("id", sa.Integer, server_default=seq.next_value(), primary_key=True)


def upgrade() -> None:
    for t in _SEQS:
        op.execute(CreateSequence(sa.Sequence(f"{t}_id_seq")))
    now = sa.text("current_timestamp")
    op.create_table(
        "families", _id("families"),
        sa.Column("name", sa.String, nullable=False, unique=True),
        sa.Column("arch_signature", sa.String, nullable=False),
        sa.Column("base_model_id", sa.Integer),
        sa.Column("prefix", sa.String, nullable=False, server_default=""),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=now),
    )
    op.create_table(
        "models", _id("models"),
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
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=now),
        sa.CheckConstraint("kind IN ('base', 'finetune', 'centroid', 'interpolation', 'external')", name="models_kind"),
    )
    op.create_table(
        "sketch_spaces", _id("sketch_spaces"),
        sa.Column("family_id", sa.Integer, nullable=False),
        sa.Column("method", sa.String, nullable=False, server_default="countsketch-splitmix64"),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("metric", sa.String, nullable=False),
        sa.Column("tensor_filter", sa.String),
        sa.Column("base_vec", DoubleList(), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=now),
        sa.UniqueConstraint("family_id", "dim", "seed", "tensor_filter", name="sketch_spaces_unique"),
        sa.CheckConstraint("metric IN ('cosine', 'l2')", name="sketch_spaces_metric"),
    )
    op.create_table(
        "sketches",
        sa.Column("model_id", sa.Integer, primary_key=True),
        sa.Column("space_id", sa.Integer, primary_key=True),
        sa.Column("vec", FloatList(), nullable=False),
        sa.Column("norm", sa.Float(53), nullable=False),
    )
    op.create_table(
        "lineage",
        sa.Column("child_id", sa.Integer, primary_key=True),
        sa.Column("parent_id", sa.Integer, primary_key=True),
        sa.Column("relation", sa.String, primary_key=True),
        sa.Column("weight", sa.Float(53)),
        sa.CheckConstraint("relation IN ('finetuned_from', 'averaged_from', 'interpolated_from')", name="lineage_relation"),
    )
    op.create_table(
        "runs", _id("runs"),
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
    op.create_table(
        "evaluations",
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("dataset", sa.String, nullable=False),
        sa.Column("split", sa.String, nullable=False),
        sa.Column("metric", sa.String, nullable=False),
        sa.Column("value", sa.Float(53), nullable=False),
        sa.Column("n_examples", sa.Integer),
        sa.Column("run_id", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False, server_default=now),
    )


def downgrade() -> None:
    for t in ("evaluations", "runs", "lineage", "sketches", "sketch_spaces", "models", "families"):
        op.drop_table(t)
    for t in _SEQS:
        op.execute(DropSequence(sa.Sequence(f"{t}_id_seq")))
