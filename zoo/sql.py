"""The SQL surface's runner behind ``zoo sql``: exactly one read-only query, sandboxed.

The macros and views it reads (``zoo_nearest``, ``zoo_regions``...) are installed by the
migration ``0002_sql_surface``. A statement is checked with DuckDB's own parser (one
statement, a query), then run on its own read-only connection whose configuration is
locked with external access off (no file reads or writes, ATTACH, COPY, INSTALL/LOAD),
a memory cap and a time limit: it can neither change the catalog nor reach other files.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from zoo.domain import env_number
from zoo.errors import ReadOnlySQL, ZooValueError

DEFAULT_TIMEOUT = 30.0
# Bytes one query may take of memory (``ZOO_SQL_MEMORY``).
DEFAULT_MEMORY = 10**9

SANDBOX = {"enable_external_access": False, "autoinstall_known_extensions": False,
           "autoload_known_extensions": False}


def check_statement(sql: str) -> None:
    """Refuse anything but exactly one query statement (SELECT, FROM, WITH, VALUES, SHOW, DESCRIBE)."""
    import duckdb

    if not sql.strip():
        raise ZooValueError("empty SQL statement; pass a query such as \"SELECT name FROM models\"")
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise ZooValueError(f"SQL error: {str(e).splitlines()[0]}") from None
    if len(stmts) != 1:
        raise ReadOnlySQL(f"`zoo sql` runs exactly one statement, got {len(stmts)}; send them one at a time")
    kind = stmts[0].type.name
    if kind != "SELECT":
        raise ReadOnlySQL(f"`zoo sql` is read-only and refuses {kind!r} statements; "
                          "change the zoo with zoo commands (add, rm, ...)")


# The statements a PostgreSQL catalog's ``zoo sql`` runs: queries (a read-only transaction
# refuses any write inside them, data-modifying CTEs included).
PG_QUERY_WORDS = ("select", "with", "values", "table", "show", "explain")


def _first_word(sql: str) -> str:
    """The first keyword of a statement, past comments and opening parentheses."""
    text = sql
    while True:
        text = text.lstrip().lstrip("(").lstrip()
        if text.startswith("--"):
            text = text.split("\n", 1)[1] if "\n" in text else ""
        elif text.startswith("/*"):
            text = text.split("*/", 1)[1] if "*/" in text else ""
        else:
            break
    m = re.match(r"[A-Za-z_]+", text)
    return m.group(0).lower() if m else ""


def run_readonly(target: Path | str, sql: str, limit: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one checked query on a sandboxed read-only connection; (columns, rows)."""
    import duckdb

    from zoo.db import is_postgres, open_waiting

    if limit is not None and limit <= 0:
        raise ZooValueError(f"--limit must be a positive integer, got {limit!r}")
    if not timeout > 0:
        raise ZooValueError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    if is_postgres(target):
        return _run_postgres(str(target), sql, limit, timeout)
    path = Path(target)
    check_statement(sql)
    memory = f'{env_number("ZOO_SQL_MEMORY", DEFAULT_MEMORY, int, minimum=10**6) // 10**6}MB'
    con = open_waiting(path, lambda: duckdb.connect(str(path), read_only=True, config=dict(SANDBOX, memory_limit=memory)))
    # Session settings first (no progress bar on zoo's output), then nothing can change.
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        cur = con.execute(sql)
        cols = [d[0] for d in (cur.description or [])]
        rows = cur.fetchmany(limit) if limit else cur.fetchall()
    except duckdb.InterruptException:
        raise ZooValueError(f"the query ran past --timeout {timeout:g}s and was stopped; narrow it or raise --timeout") from None
    except duckdb.Error as e:
        text = str(e).splitlines()[0]
        if isinstance(e, duckdb.PermissionException) or "read-only" in text.lower():
            raise ReadOnlySQL(f"`zoo sql` cannot reach outside the catalog or write: {text}") from None
        raise ZooValueError(f"SQL error: {text}") from None
    finally:
        timer.cancel()
        con.close()
    return cols, rows


def _run_postgres(url: str, sql: str, limit: int | None, timeout: float) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One query on a PostgreSQL catalog: a read-only transaction (no write of any kind, however
    the statement is dressed), one statement (psycopg's extended protocol refuses several), a
    server-side time limit. It runs with the URL's role: give `zoo sql` users a read-only role
    when the catalog is shared (docs/SCALING.md)."""
    import psycopg

    from zoo.db import libpq_url, open_postgres

    if not sql.strip():
        raise ZooValueError("empty SQL statement; pass a query such as \"SELECT name FROM models\"")
    word = _first_word(sql)
    if word not in PG_QUERY_WORDS:
        raise ReadOnlySQL(f"`zoo sql` is read-only and refuses {word.upper() or 'this'!r} statements; "
                          "change the zoo with zoo commands (add, rm, ...)")
    open_postgres(url).close()  # connection errors in zoo's words
    con = psycopg.connect(libpq_url(url), autocommit=True, application_name="zoo sql",
                          options=f"-c default_transaction_read_only=on -c statement_timeout={max(1, int(timeout * 1000))}")
    try:
        cur = con.execute(sql, prepare=True)  # a prepared statement is one statement
        cols = [d[0] for d in (cur.description or [])]
        rows = (cur.fetchmany(limit) if limit else cur.fetchall()) if cur.description else []
    except psycopg.errors.QueryCanceled:
        raise ZooValueError(f"the query ran past --timeout {timeout:g}s and was stopped; narrow it or raise --timeout") from None
    except psycopg.errors.ReadOnlySqlTransaction as e:
        raise ReadOnlySQL(f"`zoo sql` is read-only: {str(e).splitlines()[0]}") from None
    except psycopg.Error as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "multiple commands" in text:
            raise ReadOnlySQL("`zoo sql` runs exactly one statement; send them one at a time") from None
        raise ZooValueError(f"SQL error: {text}") from None
    finally:
        con.close()
    return cols, [tuple(r) for r in rows]
