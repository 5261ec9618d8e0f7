"""The catalog: Alembic-managed schema, version checks, plain DuckDB access."""
from __future__ import annotations

import duckdb
import pytest
import sqlalchemy as sa

from zoo import db
from zoo.errors import CatalogVersionError, ZooBusy
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


def _other_process_opens(path, read_only: bool) -> str:
    import subprocess
    import sys

    code = (f"import duckdb\ntry:\n    duckdb.connect({str(path)!r}, read_only={read_only!r}).close()\n    print('opened')\n"
            "except Exception as e:\n    print(type(e).__name__)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_commands_attach_the_catalog_and_release_it(filled):
    """Catalogs are attached to one DuckDB instance per process: held while a session is
    open (other processes wait), released at its end, shared by nested and second cursors."""
    path = filled.catalog_path
    with filled.session():
        assert _other_process_opens(path, read_only=False) == "IOException"  # the write lock is held
        with filled.store.read() as conn:
            side = conn.raw.cursor()  # a second connection: on the catalog, not the empty default database
            try:
                assert side.execute("SELECT count(*) FROM models").fetchone()[0] == len(filled.ls())
            finally:
                side.close()
        assert filled.show("base")["kind"] == "base"  # the session's attachment outlives the cursor
    assert _other_process_opens(path, read_only=False) == "opened"  # detached: free again
    conn = db.opened(path, write=False)
    try:
        # A write open beside a read-only one of the same process is refused by name, not left
        # to DuckDB (which would attach the file twice or fail obscurely).
        with pytest.raises(ZooBusy, match="already open read-only in this process"):
            db.opened(path, write=True)
        again = db.opened(path, write=False)  # same mode: shared
        again.close()
        assert conn.scalar("SELECT count(*) FROM families") == 1
    finally:
        conn.close()
    with pytest.raises(ZooBusy, match="was closed"):
        conn.raw.execute("SELECT 1")


def test_a_forked_child_opens_its_own_instance(filled):
    import os

    assert filled.ls()  # the parent's instance exists
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits with its verdict
        try:
            ok = len(filled.ls()) == 7 and filled.show("base")["kind"] == "base"
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_background_catalog_work_is_joined_and_its_error_raised(filled):
    seen = []
    with filled.session():
        filled.store.background(lambda conn: seen.append(conn.scalar("SELECT count(*) FROM models")))
    assert seen == [len(filled.ls())]

    def fails(conn):
        raise OSError("disk full while writing a record")

    with pytest.raises(OSError, match="disk full"):
        with filled.session():
            filled.store.background(fails)
    assert filled.ls()  # the catalog was closed and opens again
