"""Connections, locking and Alembic upgrades of the catalog.

A command opens the catalog once (``Store.session``) and closes it when done: DuckDB
allows one writing process, and long work (training, large scans) must never hold the
file. A second process that finds the file locked retries until ``ZOO_LOCK_TIMEOUT``
seconds (default 30) pass, then gets ``ZooBusy``.

Queries run on DuckDB's own connection (``Conn``); SQLAlchemy and Alembic are imported
only to create or upgrade the schema.

A catalog can also be a PostgreSQL database (``ZOO_CATALOG=postgresql://...``, issue 15):
the same migrations create it, ``Conn`` runs the same ``$name`` statements through psycopg,
and write transactions take one advisory lock, so writers on many machines serialize their
commits (milliseconds each) while readers never wait. See docs/SCALING.md.
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

# Where the catalog is: a DuckDB file, or a PostgreSQL URL (``postgresql://...``).
Target = "Path | str"

PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
# The advisory lock every PostgreSQL write transaction takes first ('zoo' in ASCII).
PG_WRITE_LOCK = 0x7A6F6F


def is_postgres(target: Any) -> bool:
    """Whether ``target`` names a PostgreSQL catalog (a ``postgresql://`` URL)."""
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def libpq_url(url: str) -> str:
    """The URL as libpq reads it (SQLAlchemy's ``+psycopg`` driver suffix removed)."""
    return "postgresql://" + url.split("://", 1)[1]


def redact(target: Any) -> str:
    """A catalog's name for messages: the path, or the URL without its password."""
    if not is_postgres(target):
        return str(target)
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", str(target))


def _sql_pg(sql: str, _cache: dict[str, str] = {}) -> str:
    """DuckDB's ``$name`` placeholders as psycopg's ``%(name)s`` (literal ``%`` doubled)."""
    out = _cache.get(sql)
    if out is None:
        out = _cache[sql] = re.sub(r"\$([A-Za-z_]\w*)", r"%(\1)s", sql.replace("%", "%%"))
    return out


def _value_pg(v: Any) -> Any:
    """numpy values as the Python ones psycopg adapts (arrays as lists)."""
    if type(v).__module__ == "numpy":
        return v.tolist()
    return v


class Conn:
    """An open connection to the catalog with the four calls ``zoo.catalog`` makes.

    Parameters are ``$name`` placeholders bound from a dict; rows come back as dicts.
    ``raw`` is the driver's connection (DuckDB's: bulk reads into numpy; or psycopg's),
    ``dialect`` says which (``duckdb`` or ``postgresql``).
    """

    def __init__(self, raw: Any, write: bool, dialect: str = "duckdb"):
        self.raw, self.write, self.dialect = raw, write, dialect
        # The weight store's root: locations under it are stored relative to it (``zoo.catalog``),
        # so machines that mount a shared store at different paths read the same rows.
        self.root: Path | None = None

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _execute(self, sql: str, params: dict[str, Any] | None) -> Any:
        if self.dialect == "postgresql":
            return self.raw.execute(_sql_pg(sql), {k: _value_pg(v) for k, v in (params or {}).items()})
        return self.raw.execute(sql, params or {})

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        cur = self._execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def row(self, sql: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        cur = self._execute(sql, params)
        r = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], r)) if r is not None else None

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        r = self._execute(sql, params).fetchone()
        return r[0] if r is not None else None

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._execute(sql, params)

    def begin(self) -> None:
        if self.dialect == "postgresql":
            self.raw.execute("BEGIN")
            # One writer commits at a time: names picked and families found inside the
            # transaction stay true until it commits (readers are not blocked).
            self.raw.execute(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")
        else:
            self.raw.begin()

    def commit(self) -> None:
        self.raw.execute("COMMIT") if self.dialect == "postgresql" else self.raw.commit()

    def rollback(self) -> None:
        self.raw.execute("ROLLBACK") if self.dialect == "postgresql" else self.raw.rollback()

    def close(self) -> None:
        self.raw.close()

def migrations_dir() -> Path:
    """Where the Alembic scripts are: the ``zoo.migrations`` package (``migrations/`` in the repository)."""
    import zoo.migrations

    return Path(list(zoo.migrations.__path__)[0])
# The newest migration. Opening a catalog already at this revision skips importing Alembic
# (~0.2 s per command); tests check it equals Alembic's head.
SCHEMA_HEAD = "0005"


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


def catalog_url(target: Any) -> sa.engine.URL:
    """The catalog's SQLAlchemy URL. A path is built from parts, never parsed as a URL
    (``%58`` stays three characters, ``?x=1`` is part of the name); a PostgreSQL URL runs
    on psycopg."""
    import sqlalchemy as sa

    if is_postgres(target):
        return sa.engine.make_url(target).set(drivername="postgresql+psycopg")
    return sa.engine.URL.create("duckdb", database=str(target))


def make_engine(target: Any) -> sa.Engine:
    """A SQLAlchemy engine on the catalog, for Alembic's upgrades."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    return sa.create_engine(catalog_url(target), poolclass=NullPool)


def open_postgres(url: str) -> Any:
    """A psycopg connection to a PostgreSQL catalog: autocommit (``Conn.begin`` opens write
    transactions), parameters bound client-side so ``$x IS NULL`` needs no declared type."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        raise CatalogUnreadable("a PostgreSQL catalog needs psycopg: pip install 'zoo[postgres]' "
                                "(or 'psycopg[binary]')") from None
    try:
        return psycopg.connect(libpq_url(url), autocommit=True, cursor_factory=psycopg.ClientCursor,
                               application_name="zoo", connect_timeout=int(lock_timeout()) or 1)
    except psycopg.Error as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CatalogUnreadable(f"cannot connect to the catalog {redact(url)} ({text}); check the server, the "
                                "URL in ZOO_CATALOG / --catalog and its credentials") from None


def open_raw(path: Path, write: bool) -> Any:
    """DuckDB's connection to the catalog file (read-only unless ``write``), as an attachment
    to this process's DuckDB instance (``_Attached``); closing it detaches the file."""
    return _instance().attach(path, write)


class _Instance:
    """This process's in-memory DuckDB instance, to which catalog files are attached.

    Starting a DuckDB instance builds its catalog of built-in functions: 15-25 ms, then
    10 ms to tear down, more than a fine-tune's whole pass on a small model. ATTACH and
    DETACH of a file on a running instance take ~2 ms and lock and release the file the
    same way (DETACH checkpoints it), so a command still holds the catalog only while it
    works. Attachments of one file are shared, counted, by the connections that open it
    in the same mode (DuckDB refuses to attach a file twice).
    """

    def __init__(self) -> None:
        import tempfile
        import threading

        import duckdb

        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.attached: dict[str, list[Any]] = {}  # path -> [alias, write, count]
        self.n = 0
        # The json functions are built in; not looking for extensions saves ~5 ms per start.
        # DuckDB's default memory limit (80 % of RAM) leaves nothing for the numpy and FAISS
        # arrays of the same process: rewriting 1M sketches was killed for memory with it.
        # An in-memory instance would spill to ./.tmp: the working directory is not ours.
        self.con = duckdb.connect(":memory:", config={
            "autoload_known_extensions": False, "memory_limit": _memory_limit(),
            "temp_directory": str(Path(tempfile.gettempdir()) / f"zoo-duckdb-{os.getuid()}-{self.pid}")})
        self.con.execute("SET enable_progress_bar = false")  # zoo draws its own progress

    def attach(self, path: Path, write: bool) -> "_Attached":
        key = os.path.abspath(path)
        with self.lock:
            held = self.attached.get(key)
            if held is not None and held[1] != write:
                raise ZooBusy(f"{path} is already open {'read-write' if held[1] else 'read-only'} in this process; "
                              "close that connection (or its Zoo.session) first")
            if held is None:
                self.n += 1
                alias = f"zoo_catalog_{self.n}"
                quoted = key.replace("'", "''")
                self.con.execute(f"ATTACH '{quoted}' AS {alias}" + ("" if write else " (READ_ONLY)"))
                held = self.attached[key] = [alias, write, 0]
            held[2] += 1
            try:
                cur = self.con.cursor()
                cur.execute(f"USE {held[0]}")
            except BaseException:
                self._release(key)
                raise
        return _Attached(cur, self, key)

    def _release(self, key: str) -> None:
        held = self.attached[key]
        held[2] -= 1
        if held[2] == 0:
            del self.attached[key]
            self.con.execute(f"DETACH {held[0]}")

    def detach(self, key: str) -> None:
        with self.lock:
            self._release(key)


_INSTANCE: _Instance | None = None


def _instance() -> _Instance:
    global _INSTANCE
    if _INSTANCE is not None and _INSTANCE.pid != os.getpid():
        # A forked child (multiprocessing, a fork-based pool) inherits the parent's instance
        # without its threads: freeing it would join threads that do not exist here and hang
        # (seen in gdb: TaskScheduler::~TaskScheduler), so it is leaked, never touched again.
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(_INSTANCE))
        _INSTANCE = None
    if _INSTANCE is None:
        _INSTANCE = _Instance()
    return _INSTANCE


class _Attached:
    """A DuckDB connection whose default database is an attached catalog; ``close`` detaches
    it once no other connection of this process uses it. Everything else is DuckDB's."""

    def __init__(self, cur: Any, inst: _Instance, key: str):
        self._cur, self._inst, self._key = cur, inst, key

    def _live(self) -> Any:
        if self._cur is None:
            raise ZooBusy("this catalog connection was closed; open the catalog again (a new command or session)")
        return self._cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live(), name)

    def cursor(self) -> "_Attached":
        """Another connection on the same attached catalog (DuckDB's ``cursor`` would start at
        the instance's empty default database)."""
        self._live()
        return self._inst.attach(Path(self._key), self._inst.attached[self._key][1])

    def close(self) -> None:
        if self._cur is None:
            return
        cur, self._cur = self._cur, None
        try:
            cur.close()
        finally:
            self._inst.detach(self._key)

    def __enter__(self) -> "_Attached":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def opened(target: Any, write: bool, timeout: float | None = None, on_wait: Callable[[str], Any] | None = None) -> Conn:
    """A ``Conn`` on the catalog, waiting while another process holds a DuckDB file (see ``open_waiting``)."""
    if is_postgres(target):
        return Conn(open_postgres(target), write, "postgresql")
    path = Path(target)
    return Conn(open_waiting(path, lambda: open_raw(path, write), timeout, on_wait), write)


@contextmanager
def transaction(conn: Conn) -> Iterator[Conn]:
    """One transaction on ``conn``: committed on a clean exit, rolled back on any exception."""
    conn.begin()
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


@contextmanager
def connect(target: Any, write: bool, timeout: float | None = None,
            on_wait: Callable[[str], Any] | None = None) -> Iterator[Conn]:
    """A connection to the catalog: one transaction when ``write``, closed on exit."""
    conn = opened(target, write, timeout, on_wait)
    try:
        if write:
            with transaction(conn):
                yield conn
        else:
            yield conn
    finally:
        conn.close()


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
    exists = ("SELECT to_regclass('alembic_version') IS NOT NULL" if conn.postgres else
              "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'alembic_version'")
    if not conn.scalar(exists):
        return None
    return conn.scalar("SELECT version_num FROM alembic_version")


def exists(target: Any) -> bool:
    """Whether the catalog has been created (PostgreSQL: the database is there to connect to)."""
    return True if is_postgres(target) else Path(target).exists()


def ensure_schema(target: Any) -> None:
    """Create or upgrade the catalog to the code's head; refuse a catalog that is ahead."""
    cur = None
    if exists(target):
        with connect(target, write=False) as conn:
            cur = current_revision(conn)
    if cur != SCHEMA_HEAD:
        upgrade(target, cur)


def upgrade(target: Any, cur: str | None) -> None:
    """Bring a catalog at revision ``cur`` (None: empty or new) to the head with Alembic."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if cur == head:
        return
    if cur is not None and cur not in {r.revision for r in script.walk_revisions()}:
        raise CatalogVersionError(
            f"{redact(target)} is at schema revision {cur!r}, newer than this zoo knows (head {head!r}); "
            "upgrade zoo to open it")
    migrate(target, "head")


def migrate(target: Any, revision: str) -> None:
    """Run Alembic's upgrade of the catalog to ``revision`` in one transaction (SQLAlchemy connection).
    On PostgreSQL the upgrade holds the writers' lock, so machines starting at once upgrade once."""
    from alembic import command

    register_alembic_impl()
    engine = make_engine(target)
    try:
        if is_postgres(target):
            import sqlalchemy as sa

            try:
                conn = engine.connect()
            except Exception as e:
                raise CatalogUnreadable(f"cannot connect to the catalog {redact(target)} "
                                        f"({str(e).strip().splitlines()[0]}); check the server and ZOO_CATALOG") from None
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            conn = open_waiting(Path(target), engine.connect)
        try:
            with conn.begin():
                if is_postgres(target):
                    # Alembic reads the revision after the lock: a machine that waited finds it done.
                    conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"))
                command.upgrade(alembic_config(conn), revision)
        finally:
            conn.close()
    finally:
        engine.dispose()
