"""LoRA adapters as models: kind 'adapter' allowed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A PEFT LoRA adapter registers in its base's family as kind ``adapter`` (format
``peft-lora``). DuckDB cannot alter a CHECK constraint, so the models table is rebuilt with
the new one, rows and ids unchanged (the views and macros name it and bind again);
PostgreSQL swaps the constraint in place.
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = ("base", "finetune", "centroid", "interpolation", "external")
NEW = ("base", "finetune", "adapter", "centroid", "interpolation", "external")

COLUMNS = """id INTEGER DEFAULT(nextval('models_id_seq')) PRIMARY KEY, "name" VARCHAR NOT NULL UNIQUE,
    family_id INTEGER NOT NULL, kind VARCHAR NOT NULL, uri VARCHAR NOT NULL, format VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL UNIQUE, dataset VARCHAR, task VARCHAR, seed INTEGER, n_params BIGINT NOT NULL,
    dtype VARCHAR NOT NULL, meta JSON NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    CONSTRAINT models_kind CHECK (kind IN ({kinds}))"""


def _kinds(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _swap(kinds: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE models DROP CONSTRAINT models_kind")
        op.execute(f"ALTER TABLE models ADD CONSTRAINT models_kind CHECK (kind IN ({_kinds(kinds)}))")
        return
    op.execute("CREATE TABLE models_0004 AS SELECT * FROM models")
    op.execute("DROP TABLE models")
    op.execute(f"CREATE TABLE models ({COLUMNS.format(kinds=_kinds(kinds))})")
    op.execute("INSERT INTO models SELECT * FROM models_0004")
    op.execute("DROP TABLE models_0004")


def upgrade() -> None:
    _swap(NEW)


def downgrade() -> None:
    op.execute("DELETE FROM models WHERE kind = 'adapter'")
    _swap(OLD)
