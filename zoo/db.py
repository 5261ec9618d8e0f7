"""Engine, locking and Alembic upgrades of the catalog.

The catalog is opened per operation and closed right after: DuckDB allows one writing
process, and long work (sketching, merging, training) must never hold the file. A second
process that finds the file locked retries until ``ZOO_LOCK_TIMEOUT`` seconds (default
30) pass, then gets ``ZooBusy``.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from zoo.domain import env_number
from zoo.errors import CatalogUnreadable, CatalogVersionError, ZooBusy

T = TypeVar("T")

def migrations_dir() -> Path:
    """Where the Alembic scripts are: the ``zoo.migrations`` package (``migrations/`` in the repository)."""
    import zoo.migrations

    return Path(list(zoo.migrations.__path__)[0])
# The newest migration. Opening a catalog already at this revision skips importing Alembic
# (~0.2 s per command); tests check it equals Alembic's head.
SCHEMA_HEAD = "0002"


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
    return sa.engine.URL.create("duckdb", database=str(path))


def make_engine(path: Path, read_only: bool) -> sa.Engine:
    engine = sa.create_engine(catalog_url(path), poolclass=NullPool, connect_args={"read_only": read_only})
    # DuckDB draws a progress bar on long scans; zoo has its own output.
    sa.event.listen(engine, "connect", lambda dbapi_conn, _rec: dbapi_conn.execute("SET enable_progress_bar = false"))
    return engine


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


@contextmanager
def connect(path: Path, write: bool, timeout: float | None = None,
            on_wait: Callable[[str], Any] | None = None) -> Iterator[sa.Connection]:
    """A connection to the catalog: one transaction when ``write``, closed on exit."""
    engine = make_engine(path, read_only=not write)
    try:
        conn = open_waiting(path, engine.connect, timeout, on_wait)
    except BaseException:
        engine.dispose()
        raise
    try:
        if write:
            with conn.begin():
                yield conn
        else:
            yield conn
    finally:
        conn.close()
        engine.dispose()


def alembic_config(conn: sa.Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: sa.Connection) -> str | None:
    """The catalog's Alembic revision, read with plain SQL; None for an empty database."""
    has = conn.execute(sa.text("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'alembic_version'")).scalar()
    if not has:
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def ensure_schema(path: Path) -> None:
    """Create or upgrade the catalog to the code's head; refuse a catalog that is ahead."""
    cur = None
    if path.exists():
        with connect(path, write=False) as conn:
            cur = current_revision(conn)
        if cur == SCHEMA_HEAD:
            return
    from alembic import command
    from alembic.script import ScriptDirectory

    register_alembic_impl()
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if path.exists():
        if cur == head:
            return
        if cur is not None and cur not in {r.revision for r in script.walk_revisions()}:
            raise CatalogVersionError(
                f"{path} is at schema revision {cur!r}, newer than this zoo knows (head {head!r}); upgrade zoo to open it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path, write=True) as conn:
        command.upgrade(alembic_config(conn), "head")
