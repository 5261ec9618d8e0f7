"""Inverted lists for SQL nearest-neighbour queries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``zoo_nearest`` scanned every sketch of a space: 284 ms at 100k sketches, 3.9 s at 1M, as
DuckDB computes a 1024-wide distance per row on one thread. When a space's FAISS index is
an IVF index, zoo now publishes its coarse centroids (``sketch_lists``) and each sketch's
list (``sketches.list_id``); the macros rank the centroids against the query and scan only
the sketches of the ``nprobe`` nearest lists, plus any sketch not yet given a list (newer
than the last publication), which keeps every answer over the whole space. A space without
lists (small, exact FAISS index) is scanned whole, as before. DuckDB evaluates the
``list_id`` filter before the distance, so a probe costs milliseconds.

The lists of a space are used by the macro of its metric (``zoo_nearest`` for cosine,
``zoo_nearest_l2`` for l2); the other macro scans exactly.
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEW = """CREATE OR REPLACE VIEW zoo_sketches AS
   SELECT m.id AS model_id, m.name, m.kind, m.dataset, m.task, f.name AS family, s.space_id, sp.dim, sp.metric,
          (s.space_id = d.space_id) AS is_default, s.vec, s.norm, s.list_id
   FROM sketches s JOIN models m ON m.id = s.model_id JOIN families f ON f.id = m.family_id
   JOIN sketch_spaces sp ON sp.id = s.space_id JOIN zoo_default_spaces d ON d.family_id = m.family_id"""

# {metric}: the space metric whose lists the macro may use; {score}: a centroid's rank
# (descending) against q.vec; {dist}: the distance of a sketch s to q.
NEAREST = """CREATE OR REPLACE MACRO {name}(model_name, k) AS TABLE
   WITH q AS (SELECT s.model_id, s.space_id, sp.metric, s.vec, s.norm FROM sketches s
              JOIN models m ON m.id = s.model_id
              JOIN zoo_default_spaces d ON d.family_id = m.family_id AND d.space_id = s.space_id
              JOIN sketch_spaces sp ON sp.id = s.space_id WHERE m.name = model_name),
   ranked AS (SELECT l.list_id, l.nprobe, q.metric, row_number() OVER (ORDER BY {score} DESC, l.list_id) AS r
              FROM sketch_lists l JOIN q ON l.space_id = q.space_id),
   -- lists built for the other metric are all probed: an exact scan
   probe AS (SELECT list_id FROM ranked WHERE r <= nprobe OR metric <> '{metric}'),
   top AS (SELECT s.model_id, {dist} AS distance FROM sketches s JOIN q ON s.space_id = q.space_id
           WHERE (s.list_id IS NULL OR s.list_id IN (SELECT list_id FROM probe)) AND s.model_id <> q.model_id
           ORDER BY distance, s.model_id LIMIT k)
   SELECT row_number() OVER (ORDER BY t.distance, t.model_id) AS rank, m.name, t.model_id, t.distance,
          m.kind, m.dataset, m.task
   FROM top t JOIN models m ON m.id = t.model_id ORDER BY rank"""

MACROS = [
    NEAREST.format(name="zoo_nearest", metric="cosine", score="list_inner_product(l.centroid, q.vec)",
                   dist="zoo_cos_dist(s.vec, q.vec, s.norm, q.norm)"),
    NEAREST.format(name="zoo_nearest_l2", metric="l2", score="-list_distance(l.centroid, q.vec)",
                   dist="list_distance(s.vec, q.vec)"),
]


def upgrade() -> None:
    op.execute("ALTER TABLE sketches ADD COLUMN list_id INTEGER")
    op.execute("""CREATE TABLE sketch_lists (
        space_id INTEGER NOT NULL, list_id INTEGER NOT NULL, nprobe INTEGER NOT NULL, centroid FLOAT[] NOT NULL,
        PRIMARY KEY (space_id, list_id))""")
    if op.get_bind().dialect.name == "postgresql":
        return  # PostgreSQL's SQL surface is migration 0005's
    op.execute(VIEW)
    for stmt in MACROS:
        op.execute(stmt)


def downgrade() -> None:
    from importlib import import_module

    prev = import_module("zoo.migrations.versions.0002_sql_surface")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE sketch_lists")
        op.execute("ALTER TABLE sketches DROP COLUMN list_id")
        return
    for m in ("zoo_nearest_l2", "zoo_nearest"):
        op.execute(f"DROP MACRO TABLE IF EXISTS {m}")
    op.execute("DROP TABLE sketch_lists")
    op.execute("DROP VIEW IF EXISTS zoo_regions")
    op.execute("DROP VIEW IF EXISTS zoo_sketches")
    op.execute("ALTER TABLE sketches DROP COLUMN list_id")
    for stmt in prev.MACROS:
        op.execute(stmt)
