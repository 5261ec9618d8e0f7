"""The SQL surface on a PostgreSQL catalog: the views and functions DuckDB has as macros.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``SELECT * FROM zoo_nearest('m', 10)`` answers from psql and any PostgreSQL client as it does
from DuckDB: same columns, same cosine distance (1 - cosine similarity, 1 when either vector
is zero). With pgvector installed, each sketch space gets an HNSW index on
``vec::vector(d)`` (``zoo.catalog.vector_index``) and the functions order by pgvector's
distance through it; without pgvector, or for spaces wider than pgvector indexes, they scan
the space exactly. Nothing changes on a DuckDB catalog (its macros are 0002/0003's).
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VIEWS = [
    """CREATE OR REPLACE VIEW zoo_default_spaces AS
       SELECT family_id, min(id) AS space_id FROM sketch_spaces GROUP BY family_id""",
    """CREATE OR REPLACE VIEW zoo_sketches AS
       SELECT m.id AS model_id, m.name, m.kind, m.dataset, m.task, f.name AS family, s.space_id, sp.dim, sp.metric,
              (s.space_id = d.space_id) AS is_default, s.vec, s.norm, s.list_id
       FROM sketches s JOIN models m ON m.id = s.model_id JOIN families f ON f.id = m.family_id
       JOIN sketch_spaces sp ON sp.id = s.space_id JOIN zoo_default_spaces d ON d.family_id = m.family_id""",
    """CREATE OR REPLACE FUNCTION zoo_vec(model_name text) RETURNS real[] LANGUAGE sql STABLE AS
       $$ SELECT vec FROM zoo_sketches WHERE name = model_name AND is_default $$""",
    """CREATE OR REPLACE FUNCTION zoo_dot(a real[], b real[]) RETURNS double precision LANGUAGE sql IMMUTABLE AS
       $$ SELECT sum(x::float8 * y::float8) FROM unnest(a, b) AS t(x, y) $$""",
    """CREATE OR REPLACE FUNCTION zoo_cos_dist(a real[], b real[], na double precision, nb double precision)
       RETURNS double precision LANGUAGE sql IMMUTABLE AS
       $$ SELECT CASE WHEN na = 0 OR nb = 0 THEN 1.0 ELSE 1.0 - zoo_dot(a, b) / (na * nb) END $$""",
    """CREATE OR REPLACE FUNCTION zoo_cosine(a text, b text) RETURNS double precision LANGUAGE sql STABLE AS
       $$ SELECT zoo_dot(zoo_vec(a), zoo_vec(b)) / nullif(sqrt(zoo_dot(zoo_vec(a), zoo_vec(a)))
                 * sqrt(zoo_dot(zoo_vec(b), zoo_vec(b))), 0) $$""",
    """CREATE OR REPLACE FUNCTION zoo_distance(a text, b text) RETURNS double precision LANGUAGE sql STABLE AS
       $$ SELECT sqrt(sum((x::float8 - y::float8) ^ 2)) FROM unnest(zoo_vec(a), zoo_vec(b)) AS t(x, y) $$""",
    # One body for both metrics; ``want`` is the metric whose index may serve the query.
    """CREATE OR REPLACE FUNCTION zoo_nearest_in(model_name text, k integer, want text)
       RETURNS TABLE(rank bigint, name text, model_id integer, distance double precision, kind text,
                     dataset text, task text)
       LANGUAGE plpgsql STABLE AS $body$
       #variable_conflict use_column
       DECLARE
         q record;
         op text := CASE WHEN want = 'cosine' THEN '<=>' ELSE '<->' END;
       BEGIN
         SELECT s.model_id AS id, s.space_id, sp.dim, sp.metric, s.vec, s.norm INTO q
         FROM sketches s JOIN models m ON m.id = s.model_id
         JOIN zoo_default_spaces d ON d.family_id = m.family_id AND d.space_id = s.space_id
         JOIN sketch_spaces sp ON sp.id = s.space_id WHERE m.name = model_name;
         IF NOT FOUND OR k IS NULL OR k < 1 THEN
           RETURN;
         END IF;
         IF to_regtype('vector') IS NOT NULL AND (want = 'l2' OR q.norm > 0) THEN
           -- The index's own expression, so the planner walks the HNSW graph where the space
           -- has one (its metric, d <= 2000) and pgvector scans exactly where not (~30x the
           -- SQL sum below). The graph holds no zero vectors (cosine): distance 1 by
           -- convention, merged in after.
           PERFORM set_config('hnsw.ef_search', greatest(100, least(4 * k, 1000))::text, true);
           RETURN QUERY EXECUTE format($q$
             WITH near AS (
               SELECT s.model_id, (s.vec::vector(%1$s) %3$s $1::vector(%1$s))::float8 AS distance
               FROM sketches s WHERE s.space_id = %2$s AND s.model_id <> $2 AND (%4$L = 'l2' OR s.norm > 0)
               ORDER BY s.vec::vector(%1$s) %3$s $1::vector(%1$s) LIMIT $3),
             zero AS (
               SELECT s.model_id, 1.0::float8 AS distance FROM sketches s
               WHERE %4$L = 'cosine' AND s.space_id = %2$s AND s.norm = 0 AND s.model_id <> $2
               ORDER BY s.model_id LIMIT $3),
             top AS (SELECT * FROM near UNION ALL SELECT * FROM zero ORDER BY distance, model_id LIMIT $3)
             SELECT row_number() OVER (ORDER BY t.distance, t.model_id), m.name::text, t.model_id, t.distance,
                    m.kind::text, m.dataset::text, m.task::text
             FROM top t JOIN models m ON m.id = t.model_id ORDER BY 1$q$, q.dim, q.space_id, op, want)
           USING q.vec, q.id, k;
         ELSE
           RETURN QUERY
             WITH top AS (
               SELECT s.model_id,
                      CASE WHEN want = 'cosine' THEN zoo_cos_dist(s.vec, q.vec, s.norm, q.norm)
                           ELSE (SELECT sqrt(sum((x::float8 - y::float8) ^ 2)) FROM unnest(s.vec, q.vec) AS u(x, y))
                      END AS distance
               FROM sketches s WHERE s.space_id = q.space_id AND s.model_id <> q.id
               ORDER BY 2, 1 LIMIT k)
             SELECT row_number() OVER (ORDER BY t.distance, t.model_id), m.name::text, t.model_id, t.distance,
                    m.kind::text, m.dataset::text, m.task::text
             FROM top t JOIN models m ON m.id = t.model_id ORDER BY 1;
         END IF;
       END $body$""",
    """CREATE OR REPLACE FUNCTION zoo_nearest(model_name text, k integer)
       RETURNS TABLE(rank bigint, name text, model_id integer, distance double precision, kind text,
                     dataset text, task text)
       LANGUAGE sql STABLE AS $$ SELECT * FROM zoo_nearest_in(model_name, k, 'cosine') $$""",
    """CREATE OR REPLACE FUNCTION zoo_nearest_l2(model_name text, k integer)
       RETURNS TABLE(rank bigint, name text, model_id integer, distance double precision, kind text,
                     dataset text, task text)
       LANGUAGE sql STABLE AS $$ SELECT * FROM zoo_nearest_in(model_name, k, 'l2') $$""",
    # Dataset and task regions of fine-tuned models in the default space: size and centroid.
    """CREATE OR REPLACE VIEW zoo_regions AS
       WITH e AS (
           SELECT s.family, s.task, s.dataset, s.space_id, s.model_id, u.x, u.i
           FROM zoo_sketches s, unnest(s.vec) WITH ORDINALITY AS u(x, i) WHERE s.is_default AND s.kind = 'finetune'),
       per AS (
           SELECT family, task, dataset, space_id, i, avg(x) AS c, count(DISTINCT model_id) AS n
           FROM e GROUP BY GROUPING SETS ((family, task, dataset, space_id, i), (family, task, space_id, i)))
       SELECT family, task, dataset, CASE WHEN dataset IS NULL THEN 'task' ELSE 'dataset' END AS level,
              space_id, max(n) AS n_models, array_agg(c ORDER BY i) AS centroid
       FROM per GROUP BY family, task, dataset, space_id""",
]

FUNCTIONS = ["zoo_nearest_l2(text, integer)", "zoo_nearest(text, integer)", "zoo_nearest_in(text, integer, text)",
             "zoo_distance(text, text)", "zoo_cosine(text, text)",
             "zoo_cos_dist(real[], real[], double precision, double precision)", "zoo_dot(real[], real[])",
             "zoo_vec(text)"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # pgvector when the server has it (CREATE EXTENSION needs the right to create it: the
    # database owner on PostgreSQL 13+); without it SQL nearest scans exactly.
    op.execute("""DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
            CREATE EXTENSION IF NOT EXISTS vector;
        END IF; END $$""")
    for stmt in VIEWS:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP VIEW IF EXISTS zoo_regions")
    for f in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {f}")
    op.execute("DROP VIEW IF EXISTS zoo_sketches")
    op.execute("DROP VIEW IF EXISTS zoo_default_spaces")
