"""Connections, locking and Alembic upgrades of the catalog.

A command opens the catalog once (``Store.session``) and closes it when done: DuckDB
allows one writing process, and long work (training, large scans) must never hold the
file. A second process that finds the file locked retries until ``ZOO_LOCK_TIMEOUT``
seconds (default 30) pass, then gets ``ZooBusy``.

Queries run on DuckDB's own connection (``Conn``); SQLAlchemy and Alembic are imported
only to create or upgrade the schema.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from zoo.domain import env_number
from zoo.errors import CatalogUnreadable, CatalogVersionError, ZooBusy

if TYPE_CHECKING:  # pragma: no cover
    import duckdb
    import sqlalchemy as sa

T = TypeVar("T")


class Conn:
    """An open DuckDB connection to the catalog with the four calls ``zoo.catalog`` makes.

    Parameters are ``$name`` placeholders bound from a dict; rows come back as dicts.
    ``raw`` is the DuckDB connection itself (bulk reads into numpy).
    """

    def __init__(self, raw: duckdb.DuckDBPyConnection, write: bool):
        self.raw, self.write = raw, write

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self.raw.execute(sql, params or {})
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def row(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        cur = self.raw.execute(sql, params or {})
        r = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], r)) if r is not None else None

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        r = self.raw.execute(sql, params or {}).fetchone()
        return r[0] if r is not None else None

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.raw.execute(sql, params or {})

def migrations_dir() -> Path:
    """Where the Alembic scripts are: the ``zoo.migrations`` package (``migrations/`` in the repository)."""
    import zoo.migrations

    return Path(list(zoo.migrations.__path__)[0])
# The newest migration. Opening a catalog already at this revision skips importing Alembic
# (~0.2 s per command); tests check it equals Alembic's head.
SCHEMA_HEAD = "0004"


def register_alembic_impl() -> None:
    """Register Alembic's implementation for the ``duckdb`` dialect (duckdb_engine ships none)."""
    from alembic.ddl.impl import DefaultImpl, _impls

    if "duckdb" not in _impls:
        class DuckDBImpl(DefaultImpl):
            __dialect__ = "duckdb"
            transactional_ddl = True


def _is_lock_error(e: BaseException) -> bool:
    text = str(e).lower()
    return "could not set lock" in text or "conflicting lock" in text


def lock_timeout() -> float:
    """Seconds a command waits for another process's write lock (``ZOO_LOCK_TIMEOUT``, default 30)."""
    return env_number("ZOO_LOCK_TIMEOUT", 30.0)


def catalog_url(path: Path) -> sa.engine.URL:
    """The catalog's SQLAlchemy URL, built from parts: a path is never parsed as a URL
    (``%58`` stays three characters, ``?x=1`` is part of the name)."""
    import sqlalchemy as sa

    return sa.engine.URL.create("duckdb", database=str(path))


def make_engine(path: Path) -> sa.Engine:
    """A SQLAlchemy engine on the catalog, for Alembic's upgrades."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(catalog_url(path), poolclass=NullPool)


def open_raw(path: Path, write: bool) -> duckdb.DuckDBPyConnection:
    """DuckDB's connection to the catalog file (read-only unless ``write``)."""
    import duckdb

    # The json functions are built in; not looking for extensions saves ~5 ms per open.
    # DuckDB's default memory limit (80 % of RAM) leaves nothing for the numpy and FAISS
    # arrays of the same process: rewriting 1M sketches was killed for memory with it.
    con = duckdb.connect(str(path), read_only=not write,
                         config={"autoload_known_extensions": False, "memory_limit": _memory_limit()})
    con.execute("SET enable_progress_bar = false")  # zoo draws its own progress
    return con


def _memory_limit() -> str:
    """A third of physical memory, the rest for the process's arrays (DuckDB spills beyond it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return "4GB"
    return f"{max(total // 3, 1 << 30) >> 20}MB"


def lock_holder(error: BaseException) -> str:
    """Who holds the catalog, from DuckDB's lock error: ``PID 123 (python3.11)``, or ``another process``."""
    m = re.search(r"held in (\S+) \(PID (\d+)\)", str(error))
    return f"PID {m.group(2)} ({Path(m.group(1)).name})" if m else "another process"


def open_waiting(path: Path, opener: Callable[[], T], timeout: float | None = None,
                 on_wait: Callable[[str], Any] | None = None) -> T:
    """``opener()``, retried while another process holds the catalog's lock, up to ``timeout``
    seconds (``ZOO_LOCK_TIMEOUT``), then ``ZooBusy`` naming the holder. ``on_wait`` hears once
    who holds it and how long this will wait. A file that is no catalog is ``CatalogUnreadable``."""
    timeout = lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    delay, told = 0.05, False
    while True:
        try:
            return opener()
        except Exception as e:
            if not _is_lock_error(e):
                raise unreadable(path, e) from None
            holder = lock_holder(e)
            if on_wait is not None and not told:
                on_wait(f"zoo: {path} is held by {holder} (a reader or writer); waiting up to {timeout:g}s "
                        "(ZOO_LOCK_TIMEOUT)")
                told = True
            if time.monotonic() >= deadline:
                raise ZooBusy(f"zoo is busy: {holder} holds {path} (waited {timeout:g}s); retry when it closes "
                              "the catalog or raise ZOO_LOCK_TIMEOUT") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def unreadable(path: Path, e: BaseException) -> BaseException:
    """A ZooError for a catalog DuckDB cannot open (corrupt, not DuckDB, permissions); other errors as they are."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "not a valid DuckDB database" in text or "corrupt" in text.lower() or "checksum" in text.lower():
        return CatalogUnreadable(f"{path} is not a readable zoo catalog ({text}); `zoo doctor --repair` moves it "
                                 "aside and rebuilds it from the store's records (or restore it from a copy)")
    if "Permission denied" in text or "Read-only file system" in text:
        return CatalogUnreadable(f"cannot open {path} ({text}); check the zoo home's permissions and free space, "
                                 "or use another --home")
    return e


def opened(path: Path, write: bool, timeout: float | None = None, on_wait: Callable[[str], Any] | None = None) -> Conn:
    """A ``Conn`` on the catalog, waiting while another process holds it (see ``open_waiting``)."""
    return Conn(open_waiting(path, lambda: open_raw(path, write), timeout, on_wait), write)


@contextmanager
def transaction(conn: Conn) -> Iterator[Conn]:
    """One transaction on ``conn``: committed on a clean exit, rolled back on any exception."""
    conn.raw.begin()
    try:
        yield conn
    except BaseException:
        conn.raw.rollback()
        raise
    conn.raw.commit()


@contextmanager
def connect(path: Path, write: bool, timeout: float | None = None,
            on_wait: Callable[[str], Any] | None = None) -> Iterator[Conn]:
    """A connection to the catalog: one transaction when ``write``, closed on exit."""
    conn = opened(path, write, timeout, on_wait)
    try:
        if write:
            with transaction(conn):
                yield conn
        else:
            yield conn
    finally:
        conn.raw.close()


def alembic_config(conn: Any = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Conn) -> str | None:
    """The catalog's Alembic revision, read with plain SQL; None for an empty database."""
    if not conn.scalar("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'alembic_version'"):
        return None
    return conn.scalar("SELECT version_num FROM alembic_version")


def ensure_schema(path: Path) -> None:
    """Create or upgrade the catalog to the code's head; refuse a catalog that is ahead."""
    cur = None
    if path.exists():
        with connect(path, write=False) as conn:
            cur = current_revision(conn)
    if cur != SCHEMA_HEAD:
        upgrade(path, cur)


def upgrade(path: Path, cur: str | None) -> None:
    """Bring a catalog at revision ``cur`` (None: empty or new) to the head with Alembic."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if cur == head:
        return
    if cur is not None and cur not in {r.revision for r in script.walk_revisions()}:
        raise CatalogVersionError(
            f"{path} is at schema revision {cur!r}, newer than this zoo knows (head {head!r}); upgrade zoo to open it")
    migrate(path, "head")


def migrate(path: Path, revision: str) -> None:
    """Run Alembic's upgrade of the catalog to ``revision`` in one transaction (SQLAlchemy connection)."""
    from alembic import command

    register_alembic_impl()
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(path)
    try:
        conn = open_waiting(path, engine.connect)
        try:
            with conn.begin():
                command.upgrade(alembic_config(conn), revision)
        finally:
            conn.close()
    finally:
        engine.dispose()
