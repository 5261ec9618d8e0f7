"""The catalog: Alembic-managed schema, version checks, plain DuckDB access."""
from __future__ import annotations

import duckdb
import pytest
import sqlalchemy as sa

from zoo import db
from zoo.errors import CatalogVersionError
from zoo.schema import metadata


def _db_schema(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = con.execute("SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
                           "WHERE table_name != 'alembic_version' AND NOT internal "
                           "AND table_name IN (SELECT table_name FROM duckdb_tables())").fetchall()
        cons = con.execute("SELECT table_name, constraint_type, constraint_column_names FROM duckdb_constraints() "
                           "WHERE constraint_type IN ('PRIMARY KEY', 'UNIQUE')").fetchall()
        seqs = {r[0] for r in con.execute("SELECT sequence_name FROM duckdb_sequences()").fetchall()}
    finally:
        con.close()
    return cols, cons, seqs


def _type_of(col: sa.Column) -> str:
    eng = sa.create_engine("duckdb:///:memory:")
    return col.type.compile(dialect=eng.dialect).upper()


_ALIASES = {"VARCHAR": "VARCHAR", "INTEGER": "INTEGER", "BIGINT": "BIGINT", "FLOAT": "DOUBLE", "FLOAT(53)": "DOUBLE", "DOUBLE PRECISION": "DOUBLE",
            "TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP", "TIMESTAMP": "TIMESTAMP", "JSON": "JSON", "FLOAT[]": "FLOAT[]",
            "DOUBLE[]": "DOUBLE[]"}


def test_upgrade_empty_database_matches_models(tmp_path):
    path = tmp_path / "catalog.duckdb"
    db.ensure_schema(path)
    cols, cons, seqs = _db_schema(path)
    got = {(t, c): (typ, nullable) for t, c, typ, nullable in cols}
    want = {}
    for table in metadata.sorted_tables:
        for col in table.columns:
            want[(table.name, col.name)] = (_ALIASES.get(_type_of(col), _type_of(col)), bool(col.nullable) and not col.primary_key)
    assert set(got) == set(want)
    for key, (typ, nullable) in want.items():
        assert got[key] == (typ, nullable), key
    pks = {t: set(c) for t, kind, c in cons if kind == "PRIMARY KEY"}
    for table in metadata.sorted_tables:
        assert pks.get(table.name, set()) == {c.name for c in table.primary_key.columns}, table.name
    uniques = {(t, tuple(c)) for t, kind, c in cons if kind == "UNIQUE"}
    assert ("models", ("name",)) in uniques and ("models", ("content_hash",)) in uniques
    assert {f"{t}_id_seq" for t in ("families", "models", "sketch_spaces", "runs")} <= seqs


def test_schema_head_constant_matches_alembic():
    assert db.SCHEMA_HEAD == db.head_revision()


def test_catalog_is_plain_duckdb_and_versioned(tmp_path):
    path = tmp_path / "catalog.duckdb"
    db.ensure_schema(path)
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == db.head_revision()
    con.close()


def test_catalog_ahead_of_code_is_refused(tmp_path):
    path = tmp_path / "catalog.duckdb"
    db.ensure_schema(path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE alembic_version SET version_num = '9999_future'")
    con.close()
    with pytest.raises(CatalogVersionError, match="9999_future"):
        db.ensure_schema(path)


def test_catalog_behind_is_upgraded(tmp_path):
    path = tmp_path / "catalog.duckdb"
    db.migrate(path, "0001")
    with db.connect(path, write=False) as conn:
        assert db.current_revision(conn) == "0001"
    db.ensure_schema(path)
    with db.connect(path, write=False) as conn:
        assert db.current_revision(conn) == db.head_revision()
