"""SQL surface: macros and views over sketches, for any DuckDB client on the catalog file.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Macros use a model's sketch in its family's first space (the one `zoo nearest` uses by
default). Cosine distance is 1 - cosine similarity, and 1 when either vector is zero (a
base), the same convention as the FAISS index.
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MACROS = [
    # The default space of a family: its lowest space id.
    """CREATE OR REPLACE VIEW zoo_default_spaces AS
       SELECT family_id, min(id) AS space_id FROM sketch_spaces GROUP BY family_id""",
    """CREATE OR REPLACE VIEW zoo_sketches AS
       SELECT m.id AS model_id, m.name, m.kind, m.dataset, m.task, f.name AS family, s.space_id, sp.dim, sp.metric,
              (s.space_id = d.space_id) AS is_default, s.vec, s.norm
       FROM sketches s JOIN models m ON m.id = s.model_id JOIN families f ON f.id = m.family_id
       JOIN sketch_spaces sp ON sp.id = s.space_id JOIN zoo_default_spaces d ON d.family_id = m.family_id""",
    """CREATE OR REPLACE MACRO zoo_vec(model_name) AS
       (SELECT vec FROM zoo_sketches WHERE name = model_name AND is_default)""",
    """CREATE OR REPLACE MACRO zoo_cos_dist(a, b, na, nb) AS
       CASE WHEN na = 0 OR nb = 0 THEN 1.0 ELSE 1.0 - list_cosine_similarity(a, b) END""",
    """CREATE OR REPLACE MACRO zoo_cosine(a, b) AS
       list_cosine_similarity(zoo_vec(a), zoo_vec(b))""",
    """CREATE OR REPLACE MACRO zoo_distance(a, b) AS
       list_distance(zoo_vec(a), zoo_vec(b))""",
    """CREATE OR REPLACE MACRO zoo_nearest(model_name, k) AS TABLE
       WITH q AS (SELECT model_id, space_id, vec, norm FROM zoo_sketches WHERE name = model_name AND is_default)
       SELECT row_number() OVER (ORDER BY zoo_cos_dist(s.vec, q.vec, s.norm, q.norm), s.model_id) AS rank,
              s.name, s.model_id, zoo_cos_dist(s.vec, q.vec, s.norm, q.norm) AS distance, s.kind, s.dataset, s.task
       FROM zoo_sketches s JOIN q ON s.space_id = q.space_id
       WHERE s.model_id <> q.model_id
       ORDER BY distance, s.model_id LIMIT k""",
    """CREATE OR REPLACE MACRO zoo_nearest_l2(model_name, k) AS TABLE
       WITH q AS (SELECT model_id, space_id, vec FROM zoo_sketches WHERE name = model_name AND is_default)
       SELECT row_number() OVER (ORDER BY list_distance(s.vec, q.vec), s.model_id) AS rank,
              s.name, s.model_id, list_distance(s.vec, q.vec) AS distance, s.kind, s.dataset, s.task
       FROM zoo_sketches s JOIN q ON s.space_id = q.space_id
       WHERE s.model_id <> q.model_id
       ORDER BY distance, s.model_id LIMIT k""",
    # Dataset and task regions of fine-tuned models in the default space: size and centroid.
    """CREATE OR REPLACE VIEW zoo_regions AS
       WITH e AS (
           SELECT s.family, s.task, s.dataset, s.space_id, s.model_id,
                  unnest(s.vec) AS x, generate_subscripts(s.vec, 1) AS i
           FROM zoo_sketches s WHERE s.is_default AND s.kind = 'finetune'),
       per AS (
           SELECT family, task, dataset, space_id, i, avg(x) AS c, count(DISTINCT model_id) AS n
           FROM e GROUP BY GROUPING SETS ((family, task, dataset, space_id, i), (family, task, space_id, i)))
       SELECT family, task, dataset, CASE WHEN dataset IS NULL THEN 'task' ELSE 'dataset' END AS level,
              space_id, max(n) AS n_models, list(c ORDER BY i) AS centroid
       FROM per GROUP BY family, task, dataset, space_id""",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        return  # PostgreSQL's SQL surface is migration 0005's
    for stmt in MACROS:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        return
    op.execute("DROP VIEW IF EXISTS zoo_regions")
    for m in ("zoo_nearest_l2", "zoo_nearest"):
        op.execute(f"DROP MACRO TABLE IF EXISTS {m}")
    for m in ("zoo_distance", "zoo_cosine", "zoo_cos_dist", "zoo_vec"):
        op.execute(f"DROP MACRO IF EXISTS {m}")
    op.execute("DROP VIEW IF EXISTS zoo_sketches")
    op.execute("DROP VIEW IF EXISTS zoo_default_spaces")
