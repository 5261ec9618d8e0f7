"""LoRA adapters as models (kind 'adapter'); merges made elsewhere (relation 'merged_from').

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A PEFT LoRA adapter registers in its base's family as kind ``adapter`` (format
``peft-lora``). DuckDB cannot alter a CHECK constraint, so the models table is rebuilt with
the new one, rows and ids unchanged (the views and macros name it and bind again);
PostgreSQL swaps the constraint in place. A model merged by another tool with a method
other than a linear average (mergekit's TIES, DARE, SLERP...) records its inputs as
``merged_from``; the lineage table is rebuilt the same way.
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD = ("base", "finetune", "centroid", "interpolation", "external")
NEW = ("base", "finetune", "adapter", "centroid", "interpolation", "external")
OLD_RELATIONS = ("finetuned_from", "averaged_from", "interpolated_from")
NEW_RELATIONS = ("finetuned_from", "averaged_from", "interpolated_from", "merged_from")

COLUMNS = """id INTEGER DEFAULT(nextval('models_id_seq')) PRIMARY KEY, "name" VARCHAR NOT NULL UNIQUE,
    family_id INTEGER NOT NULL, kind VARCHAR NOT NULL, uri VARCHAR NOT NULL, format VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL UNIQUE, dataset VARCHAR, task VARCHAR, seed INTEGER, n_params BIGINT NOT NULL,
    dtype VARCHAR NOT NULL, meta JSON NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    CONSTRAINT models_kind CHECK (kind IN ({kinds}))"""


LINEAGE = """child_id INTEGER NOT NULL, parent_id INTEGER NOT NULL, relation VARCHAR NOT NULL, weight DOUBLE,
    PRIMARY KEY (child_id, parent_id, relation), CONSTRAINT lineage_relation CHECK (relation IN ({kinds}))"""


def _kinds(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _swap(table: str, constraint: str, column: str, ddl: str, kinds: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({column} IN ({_kinds(kinds)}))")
        return
    op.execute(f"CREATE TABLE {table}_0004 AS SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")
    op.execute(f"CREATE TABLE {table} ({ddl.format(kinds=_kinds(kinds))})")
    op.execute(f"INSERT INTO {table} SELECT * FROM {table}_0004")
    op.execute(f"DROP TABLE {table}_0004")


def upgrade() -> None:
    _swap("models", "models_kind", "kind", COLUMNS, NEW)
    _swap("lineage", "lineage_relation", "relation", LINEAGE, NEW_RELATIONS)


def downgrade() -> None:
    op.execute("DELETE FROM lineage WHERE relation = 'merged_from'")
    op.execute("DELETE FROM lineage WHERE child_id IN (SELECT id FROM models WHERE kind = 'adapter') "
               "OR parent_id IN (SELECT id FROM models WHERE kind = 'adapter')")
    op.execute("DELETE FROM sketches WHERE model_id IN (SELECT id FROM models WHERE kind = 'adapter')")
    op.execute("DELETE FROM models WHERE kind = 'adapter'")
    _swap("lineage", "lineage_relation", "relation", LINEAGE, OLD_RELATIONS)
    _swap("models", "models_kind", "kind", COLUMNS, OLD)
