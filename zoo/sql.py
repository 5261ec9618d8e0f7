"""The SQL surface: the read-only runner behind ``zoo sql``.

The macros and views it reads (``zoo_nearest``, ``zoo_regions``...) are installed by the
migration ``0002_sql_surface``; this module runs a user's statement against them.
"""
from __future__ import annotations

import re

import sqlalchemy as sa

from zoo.errors import ReadOnlySQL, ZooValueError

_WRITE = re.compile(r"^\s*(insert|update|delete|create|drop|alter|attach|detach|copy|install|load|pragma|set|"
                    r"checkpoint|vacuum|import|export|begin|commit|rollback|truncate|call|use|reset)\b", re.I)


def run_readonly(conn: sa.Connection, sql: str, limit: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run one statement on a read-only connection; (columns, rows)."""
    if not sql.strip():
        raise ZooValueError("empty SQL statement; pass a query such as \"SELECT name FROM models\"")
    if _WRITE.match(sql):
        raise ReadOnlySQL(f"`zoo sql` is read-only and refuses {sql.split()[0].upper()!r} statements; "
                          "change the zoo with zoo commands (add, rm, ...)")
    dbapi = conn.connection.driver_connection
    try:
        cur = dbapi.execute(sql)
    except Exception as e:
        text = str(e).splitlines()[0]
        if "read-only" in text.lower() or "read only" in text.lower():
            raise ReadOnlySQL(f"`zoo sql` is read-only: {text}") from e
        raise ZooValueError(f"SQL error: {text}") from e
    cols = [d[0] for d in (cur.description or [])]
    rows = cur.fetchmany(limit) if limit else cur.fetchall()
    return cols, rows
