"""The store under every verb: a zoo's home, its catalog transactions, family lookup, the
weights it owns (``weights/``, checked before every read), the folders it writes
(``checkpoints/``, under a lock), pending write-backs, orphaned runs, the read-only
snapshot, and FAISS indexes kept in line with the catalog.

A command opens the catalog once: the outermost ``read``/``write``/``session`` opens a
connection, every nested one reuses it, and it closes when that block ends, so long work
(training, large scans) runs with the catalog closed.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from zoo import catalog, db
from zoo.domain import DEFAULT_DIM, DEFAULT_METRIC, DEFAULT_SEED, Family, Space, check_dim, check_metric, env_number
from zoo.errors import Conflict, NotFound, ZooValueError


def default_home() -> Path:
    """``$ZOO_HOME``, else ``~/.zoo``."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".zoo").expanduser()


def default_catalog(home: Path) -> Path | str:
    """``$ZOO_CATALOG`` (a ``postgresql://`` URL or a DuckDB file), else ``catalog.duckdb`` in the home."""
    from zoo import db

    env = os.environ.get("ZOO_CATALOG", "").strip()
    if not env:
        return home / "catalog.duckdb"
    return env if db.is_postgres(env) else Path(env).expanduser().absolute()


def default_store_root(home: Path) -> Path:
    """Where ``weights/`` and ``checkpoints/`` live: ``$ZOO_STORE`` (a folder every machine of a
    team may share), else the home."""
    env = os.environ.get("ZOO_STORE", "").strip()
    return Path(env).expanduser().absolute() if env else home


def default_memory_budget() -> int:
    """Bytes the index-type choice may plan for: ``ZOO_INDEX_MEMORY``, else half the machine."""
    from zoo.index import DEFAULT_BUDGET

    return env_number("ZOO_INDEX_MEMORY", DEFAULT_BUDGET, int, minimum=1)


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def process_alive(pid: Any, since: Any = None) -> bool:
    """Whether process ``pid`` runs on this machine and, where /proc tells, started no later
    than ``since`` (a reused pid belongs to a newer process)."""
    import datetime as _dt

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    if since is None:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    # started_at is local time without zone; a second of slack for clock-tick rounding
    return started <= since.timestamp() + 1.0 if isinstance(since, _dt.datetime) else True


class Store:
    """A zoo on disk: ``catalog.duckdb`` (the truth), ``weights/`` and ``checkpoints/`` (its
    models' files), ``index/`` (derived), ``pending/`` and ``snapshot.duckdb``."""

    def __init__(self, home: str | os.PathLike | None = None, progress: bool = False, default_dim: int = DEFAULT_DIM,
                 default_seed: int = DEFAULT_SEED, default_metric: str = DEFAULT_METRIC,
                 catalog: str | os.PathLike | None = None, store_root: str | os.PathLike | None = None):
        # Absolute once: paths the store builds and paths read back from checkpoints must
        # compare equal (a relative home made a staged folder look like a file inside itself).
        self.home = (Path(home).expanduser() if home else default_home()).absolute()
        self.progress = progress
        # The catalog: a DuckDB file (default: in the home) or a PostgreSQL URL shared by machines.
        if catalog is not None and str(catalog).strip():
            text = str(catalog).strip()
            self.catalog: Path | str = text if db.is_postgres(text) else Path(text).expanduser().absolute()
        else:
            self.catalog = default_catalog(self.home)
        self.postgres = db.is_postgres(self.catalog)
        # The weight store (weights/, checkpoints/): the home's unless shared elsewhere.
        self.root = Path(store_root).expanduser().absolute() if store_root else default_store_root(self.home)
        # The space a new family starts with.
        self.default_space = Space(check_dim(default_dim), default_seed, None, check_metric(default_metric))
        self._memory_budget: int | None = None
        self._ready = False
        self._conn: db.Conn | None = None  # the open connection of the current command, if any
        self._in_tx = False
        self._held = 0  # depth of ``hold`` blocks: index syncs wait for the outermost one's end
        self._sync_due = False
        self._background: list[Any] = []  # threads reading the held catalog, joined before it closes
        self._indexes: dict[int, tuple[Any, Any]] = {}  # space id -> (its files' identity, loaded SpaceIndex)
        # Run once when the catalog is first opened: the facade finishes pending write-backs here.
        self.on_open: Callable[[], Any] | None = None
        # Told about waits (who holds the catalog); on stderr when progress is shown.
        self.notify: Callable[[str], Any] | None = _stderr if progress else None

    @property
    def catalog_path(self) -> Path:
        """The DuckDB catalog file (with a PostgreSQL catalog: refused, there is no file)."""
        if self.postgres:
            raise ZooValueError(f"this zoo's catalog is the PostgreSQL database {db.redact(self.catalog)}, not a "
                                "file; query it with `zoo sql` or any PostgreSQL client")
        return Path(self.catalog)

    @property
    def catalog_name(self) -> str:
        """The catalog's path, or its URL without the password."""
        return db.redact(self.catalog)

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def memory_budget(self) -> int:
        if self._memory_budget is None:
            self._memory_budget = default_memory_budget()
        return self._memory_budget

    def ensure(self) -> None:
        """Create the home, bring the catalog's schema to the code's and run the open-time
        maintenance (once per Store)."""
        if not self._ready:
            with self.read():
                pass

    def _check_home(self) -> None:
        if self.home.exists() and not self.home.is_dir():
            raise ZooValueError(f"zoo home {str(self.home)!r} is a file; pass a directory with --home or ZOO_HOME")
        if "?" in str(self.home) and not self.postgres:  # DuckDB reads what follows '?' in a database path as options
            raise ZooValueError(f"zoo home {str(self.home)!r} contains '?', which DuckDB cannot open as a "
                                "catalog path; choose a --home (or ZOO_HOME) without it")
        self.home.mkdir(parents=True, exist_ok=True)

    def _open(self, write: bool) -> db.Conn:
        """A connection at the code's schema revision (created or upgraded first when needed)."""
        if not self._ready:
            self._check_home()
            if not db.exists(self.catalog):
                db.upgrade(self.catalog, None)
        conn = db.opened(self.catalog, write, on_wait=self.notify)
        if not self._ready:
            cur = db.current_revision(conn)
            if cur != db.SCHEMA_HEAD:
                conn.close()
                db.upgrade(self.catalog, cur)
                conn = db.opened(self.catalog, write, on_wait=self.notify)
        conn.root = self.root
        return conn

    @contextmanager
    def session(self, write: bool = False) -> Iterator[db.Conn]:
        """Hold one connection for a block (a command, a batch): ``read`` and ``write`` inside
        reuse it. A read-only session that has to write reopens read-write (DuckDB cannot
        upgrade a connection)."""
        if self._conn is not None:
            if write:
                self._writable()
            yield self._conn
            return
        self._conn = self._open(write)
        try:
            if not self._ready:
                self._ready = True
                try:
                    if self.on_open is not None:
                        self.on_open()
                    self.fail_orphaned_runs()
                except BaseException:
                    self._ready = False
                    raise
            yield self._conn
        finally:
            try:
                self._join_background()
            finally:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()

    def background(self, fn: Callable[[db.Conn], Any]) -> None:
        """Run ``fn`` with a connection to the catalog: in a thread on a second cursor of the
        held DuckDB session, joined (its error raised) before the session closes, so work
        that only reads committed rows overlaps the command's next step (statements release
        the GIL); without such a session, now."""
        conn = self._conn
        if conn is None or conn.postgres or self._in_tx:
            with self.read() as c:
                fn(c)
            return
        import threading

        side = db.Conn(conn.raw.cursor(), False)
        side.root = conn.root
        errors: list[BaseException] = []

        def run() -> None:
            try:
                fn(side)
            except BaseException as e:  # raised again by the join
                errors.append(e)
            finally:
                side.close()

        t = threading.Thread(target=run, name="zoo-catalog-background", daemon=True)
        t.start()
        self._background.append((t, errors))

    def _join_background(self) -> None:
        pending, self._background = self._background, []
        failed = None
        for t, errors in pending:
            t.join()
            failed = failed or (errors[0] if errors else None)
        if failed is not None:
            raise failed

    def _writable(self) -> None:
        """Reopen the session's read-only connection read-write, in place: callers holding the
        ``Conn`` keep a working one."""
        conn = self._conn
        if conn is not None and not conn.write and conn.postgres:
            conn.write = True  # one PostgreSQL connection reads and writes
            return
        if conn is not None and not conn.write:
            self._join_background()  # their cursors share the read-only attachment
            conn.raw.close()
            try:
                new = self._open(True)
            except BaseException:
                new = self._open(False)  # keep the command's reads going; the write fails
                conn.raw = new.raw
                raise
            conn.raw, conn.write = new.raw, True

    @contextmanager
    def hold(self, write: bool = True) -> Iterator[db.Conn]:
        """A batch: one connection for every call inside, and the FAISS indexes brought in line
        once at the end instead of after each change (queries inside still see every change:
        ``index`` checks the catalog's fingerprint before use)."""
        self._held += 1
        try:
            with self.session(write=write) as conn:
                yield conn
                if self._held == 1 and self._sync_due:
                    self._sync_due = False
                    self._sync_now()
        finally:
            self._held -= 1

    def held_for(self, nbytes: int) -> Any:
        """A read-write session for a command whose work reads ``nbytes`` of weights, when that
        is short (``ZOO_HOLD_BYTES``, default 1 GiB: about a second); else no session, so the
        catalog stays free while the command reads."""
        from contextlib import nullcontext

        limit = env_number("ZOO_HOLD_BYTES", float(1 << 30), minimum=0)
        return self.hold() if nbytes <= limit else nullcontext()

    @contextmanager
    def read(self) -> Iterator[db.Conn]:
        """A read-only connection (the command's, when one is open)."""
        with self.session() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[db.Conn]:
        """One write transaction, committed on a clean exit (joined by nested ``write`` blocks);
        indexes are not touched (see ``sync_indexes``). A snapshot, once made, is refreshed
        after each commit."""
        with self.session(write=True) as conn:
            if self._in_tx:
                yield conn
                return
            self._in_tx = True
            try:
                with db.transaction(conn):
                    yield conn
            finally:
                self._in_tx = False
            if not self.postgres and self.snapshot_path.exists():
                self.snapshot()

    def set_aside_catalog(self) -> Path:
        """Move an unreadable catalog (and its WAL) aside, so the next open starts a new one; where it went."""
        if self.postgres:
            raise ZooValueError(f"the catalog {self.catalog_name} is a PostgreSQL database; restore it with the "
                                "server's own tools (pg_dump / pg_restore), zoo does not move it aside")
        n = 1
        while (aside := self.home / f"catalog.unreadable-{n}.duckdb").exists():
            n += 1
        os.replace(self.catalog_path, aside)
        wal = self.catalog_path.with_name(self.catalog_path.name + ".wal")
        if wal.exists():
            os.replace(wal, aside.with_name(aside.name + ".wal"))
        self._ready = False
        return aside

    @property
    def snapshot_path(self) -> Path:
        return self.home / "snapshot.duckdb"

    def snapshot(self, dest: str | os.PathLike | None = None) -> Path:
        """Copy the catalog (tables, views, macros) into a DuckDB file that outside tools can keep
        open without ever blocking zoo; written whole (temp name, then rename). The default,
        ``snapshot.duckdb`` in the home, is then refreshed after every change."""
        if self.postgres:
            raise ZooValueError(f"the catalog {self.catalog_name} is a PostgreSQL database: readers never block "
                                "writers there, so there is no snapshot to make; point outside tools at the server")
        self.ensure()
        out = Path(dest).expanduser() if dest else self.snapshot_path
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        held = self._conn is not None
        con = self._conn.raw if held else db.open_waiting(
            self.catalog_path, lambda: db.open_raw(self.catalog_path, False), on_wait=self.notify)
        try:
            con.execute(f"ATTACH '{str(tmp).replace(chr(39), chr(39) * 2)}' AS zoo_snapshot (READ_WRITE)")
            source = con.execute("SELECT current_database()").fetchone()[0]
            con.execute(f'COPY FROM DATABASE "{source}" TO zoo_snapshot')
            con.execute("DETACH zoo_snapshot")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if not held:
                con.close()
        os.replace(tmp, out)
        return out

    def bar(self, items: Sequence[Any], desc: str, unit: str = "ckpt") -> Any:
        """A progress bar over ``items`` when the store was opened with ``progress`` (and there are several)."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, unit=unit, disable=not self.progress or len(items) < 2, leave=False)

    def fail_orphaned_runs(self) -> list[int]:
        """Mark failed the runs still ``running`` whose process on this host is gone (killed
        with -9, a crashed machine's reboot): their ids. Only when some are found does it
        write; a busy or read-only catalog leaves them for the next command."""
        import datetime as _dt
        import socket

        from zoo.errors import CatalogUnreadable, ZooBusy

        host = socket.gethostname()
        waiting = {rec["run_id"] for rec in self.pending()}  # finished, only not yet registered
        with self.read() as conn:
            gone = [r for r in catalog.running_runs(conn) if r["id"] not in waiting and r["params"].get("host", host) == host
                    and not process_alive(r["params"].get("pid"), r["started_at"])]
        if not gone:
            return []
        try:
            with self.write() as conn:
                for r in gone:
                    catalog.update_run(conn, r["id"], status="failed", finished_at=_dt.datetime.now(),
                                       error=f"process {r['params'].get('pid')} on {host} ended without finishing the run "
                                             "(killed?); marked failed by a later zoo command")
        except (ZooBusy, CatalogUnreadable, OSError):  # busy or read-only: the next command tries again
            return []
        return [r["id"] for r in gone]

    # ------------------------------------------------------------ families
    @staticmethod
    def family(conn: db.Conn, name: str | None = None) -> Family:
        """The family named ``name``, or the zoo's only family when None."""
        fams = catalog.families_snapshot(conn)
        if name is not None:
            for f in fams:
                if f.name == name:
                    return f
            raise NotFound(f"no family named {name!r}; families: {', '.join(f.name for f in fams) or '(none)'}")
        if len(fams) == 1:
            return fams[0]
        if not fams:
            raise NotFound("the zoo has no models yet; register a base with `zoo add PATH`")
        raise ZooValueError(f"the zoo has several families ({', '.join(f.name for f in fams)}); pass --family")

    @staticmethod
    def family_of(conn: db.Conn, row: dict[str, Any]) -> Family:
        """The family of a model row."""
        [fam] = catalog.families_snapshot(conn, row["family_id"])
        return fam

    # ------------------------------------------------------------ weights
    @staticmethod
    def weights(row: dict[str, Any]) -> Path:
        """The checkpoint path of a model row, after checking that its weight files are still the
        ones registered (same size and modification time): a moved, deleted or overwritten
        checkpoint is a one-line ``SourceChanged`` naming the model and the fix."""
        from zoo.errors import SourceChanged

        for path, size, mtime_ns in row.get("meta", {}).get("files") or []:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise SourceChanged(f"model {row['name']!r}: {path} is gone (moved or deleted); point zoo at it with "
                                    f"`zoo relocate {row['name']} NEW_PATH`") from None
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                raise SourceChanged(f"model {row['name']!r}: {path} changed since it was registered (size or time "
                                    f"differs); restore it, or `zoo relocate {row['name']} PATH` to an unchanged copy")
        return Path(row["uri"])

    @staticmethod
    def base_weights(conn: db.Conn, fam: Family) -> Path:
        """The family base's checkpoint path, checked like ``weights``."""
        return Store.weights(catalog.model_by_id(conn, fam.base_model_id))

    @property
    def weights_dir(self) -> Path:
        return self.root / "weights"

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether a path lies in what the zoo wrote or brought in itself (``weights/``, ``checkpoints/``)."""
        p = Path(path).resolve()
        return any(d.resolve() in p.parents for d in (self.weights_dir, self.checkpoints_dir))

    def stage(self, source: Path, weights: list[Path]) -> tuple[Path, Path]:
        """Bring a checkpoint's files into a hidden folder of the store (hard links where the
        filesystem allows, else copies): (the staging folder, the staged checkpoint path)."""
        import tempfile

        from zoo.files import link_or_copy, model_files

        self.weights_dir.mkdir(parents=True, exist_ok=True)
        # The pid in the name tells `zoo doctor` whether its writer still runs.
        root = Path(tempfile.mkdtemp(prefix=f".stage-{os.getpid()}-", dir=self.weights_dir))
        top = source if source.is_dir() else source.parent
        try:
            for f in model_files(source, weights):
                link_or_copy(f, root / f.relative_to(top))
        except BaseException:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
            raise
        return root, root if source.is_dir() else root / source.name

    def settle(self, root: Path, content_hash: str) -> Path:
        """Move a staged checkpoint to ``weights/<content hash>``; when that folder exists, the
        same weights are already there and the staged copy is dropped."""
        import shutil

        final = self.weights_dir / content_hash
        try:
            os.rename(root, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(root, ignore_errors=True)
        return final

    # ------------------------------------------------------------ outputs
    @contextmanager
    def output(self, name: str) -> Iterator[Path]:
        """``checkpoints/NAME`` for a model zoo is about to write, held exclusively for the block.

        A folder already there that no model was registered from is what a killed run left
        (its writer would hold the lock): it is cleared so a retry works. A registered one
        is a Conflict.
        """
        import shutil

        from zoo.files import exclusive

        path = self.checkpoints_dir / name
        with exclusive(self.checkpoints_dir / f".{name}.lock", f"checkpoints/{name}"):
            if path.exists():
                with self.read() as conn:
                    owner = catalog.model_by_uri(conn, str(path))
                if owner is not None:
                    raise Conflict(f"{path} holds model {owner['name']!r}; choose another --out")
                if any(rec["path"] == str(path) for rec in self.pending()):
                    raise Conflict(f"{path} holds a fine-tune waiting to be registered; choose another --out")
                shutil.rmtree(path)
            yield path

    # ------------------------------------------------------------ pending write-backs
    @property
    def pending_dir(self) -> Path:
        return self.home / "pending"

    def save_pending(self, rec: dict[str, Any]) -> Path:
        """Record a finished run whose registration must wait (written whole: temp name, then rename)."""
        import json

        self.pending_dir.mkdir(parents=True, exist_ok=True)
        path = self.pending_dir / f"run-{int(rec['run_id'])}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, default=str))
        os.replace(tmp, path)
        return path

    def pending(self) -> list[dict[str, Any]]:
        """Recorded write-backs, oldest run first."""
        import json

        files = sorted(self.pending_dir.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1])) \
            if self.pending_dir.is_dir() else []
        return [json.loads(p.read_text()) for p in files]

    def drop_pending(self, run_id: int) -> None:
        (self.pending_dir / f"run-{int(run_id)}.json").unlink(missing_ok=True)

    # ------------------------------------------------------------ indexes
    def sync_indexes(self) -> None:
        """Bring every space's FAISS index in line with the committed catalog; drop indexes of gone
        spaces. Inside a ``hold`` block this waits for the block's end."""
        if self._held:
            self._sync_due = True
        else:
            self._sync_now()

    def _sync_now(self) -> None:
        from zoo.index import SpaceIndex

        with self.read() as conn:
            live = catalog.spaces(conn)
            for sp in live:
                self.index(conn, sp)
        ids = {sp.id for sp in live}
        for f in self.index_dir.glob("space_*.json") if self.index_dir.exists() else []:
            sid = f.stem.split("_", 1)[1]
            if sid.isdigit() and int(sid) not in ids:
                SpaceIndex(self.index_dir, int(sid)).remove()

    def index(self, conn: db.Conn, sp: Space, force: bool = False) -> Any:
        """The space's ``SpaceIndex``, brought in line with the catalog.

        Up to date: used as is. Behind by new models only (its rows still match the
        catalog's up to its highest id, and the chosen index type is unchanged): the new
        sketches are appended. Anything else (missing, corrupt, removals, forced): rebuilt.
        """
        from zoo.index import SpaceIndex, choose_index

        idx = self._loaded_index(sp.id) if not force else None
        loaded = idx is not None
        if idx is None:
            idx = SpaceIndex(self.index_dir, sp.id)
            loaded = not force and idx.load()
            if loaded:
                self._remember_index(idx, True)
        old = idx.meta if loaded else {}
        max_id = old.get("max_id") if isinstance(old.get("max_id"), int) else None  # a hand-edited meta file
        fp, upto = catalog.sketch_fingerprints(conn, sp.id, max_id)
        spec = choose_index(fp["count"], sp.dim, self.memory_budget, sp.metric)
        if loaded:
            if idx.matches(fp, spec):
                return idx
            if (old.get("spec", {}).get("factory") == spec.factory and max_id is not None
                    and upto == old.get("fingerprint")):
                ids, vecs = catalog.sketch_vectors(conn, sp.id, after_id=old["max_id"])
                idx.append(ids, vecs, fp)
                self._remember_index(idx, idx.persisted)
                if idx.matches(fp, spec):
                    self._publish_lists(conn, sp, ids, idx.coarse(ids, vecs), idx.meta["spec"]["nprobe"], full=False)
                    return idx
        ids, vecs = catalog.sketch_vectors(conn, sp.id)
        idx = SpaceIndex(self.index_dir, sp.id)  # never a cached object another caller may still hold
        idx.build(ids, vecs, spec, fp)
        self._remember_index(idx, idx.persisted)
        del vecs  # 4 GB at 1M sketches, while DuckDB rewrites the space in list order
        self._publish_lists(conn, sp, ids, idx.coarse(ids), idx.meta["spec"]["nprobe"], full=True)
        return idx

    def _files_of(self, space_id: int) -> Any:
        """Identity of a space's index files (inode, mtime, size): a rewrite by any process changes it."""
        from zoo.index import SpaceIndex

        idx = SpaceIndex(self.index_dir, space_id)
        try:
            return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (idx.path.stat(), idx.meta_path.stat()))
        except OSError:
            return None

    def _loaded_index(self, space_id: int) -> Any:
        """The index this process loaded before, if its files are still the ones it read: a
        long-lived process (``zoo serve``) reads a 100k-model index once (0.45 s), not per query."""
        hit = self._indexes.get(space_id)
        if hit is None:
            return None
        if hit[0] is None or hit[0] != self._files_of(space_id):
            del self._indexes[space_id]
            return None
        return hit[1]

    def _remember_index(self, idx: Any, on_disk: bool) -> None:
        """Keep an index that its files on disk hold (loaded, or saved after a change)."""
        if on_disk:
            self._indexes[idx.space_id] = (self._files_of(idx.space_id), idx)
        else:
            self._indexes.pop(idx.space_id, None)

    def _publish_lists(self, conn: db.Conn, sp: Space, ids: Any, coarse: Any, nprobe: int, full: bool) -> None:
        """Give SQL the IVF lists of an index just built (``full``) or appended to (migration
        0003). Best effort: a busy or read-only catalog keeps its older lists, which stay
        consistent with its older assignments, and rows without a list are scanned."""
        if self.postgres:  # SQL nearest there is pgvector's (catalog.vector_index)
            return
        import duckdb

        from zoo.errors import CatalogUnreadable, ZooBusy

        if coarse is None and (not full or not catalog.has_lists(conn, sp.id)):
            return
        try:
            with self.write() as w:
                if full:
                    catalog.publish_lists(w, sp.id, nprobe, ids, coarse)
                else:
                    catalog.assign_lists(w, sp.id, ids, coarse[1])
            if full and coarse is not None:
                # Write the rewritten rows to storage now: until a checkpoint, scans read them
                # from the transaction log (measured 230 ms against 100 ms for updated list ids).
                w.run("CHECKPOINT")
        except (ZooBusy, CatalogUnreadable, OSError, duckdb.IOException):
            pass

    def reindex(self) -> list[dict[str, Any]]:
        """Rebuild every space's FAISS index from the catalog."""
        out = []
        with self.read() as conn:
            for sp in catalog.spaces(conn):
                idx = self.index(conn, sp, force=True)
                if not idx.persisted:
                    raise OSError(errno.EROFS, "could not write the rebuilt index (read-only or full home)",
                                  str(self.index_dir))
                out.append({"space_id": sp.id, "count": idx.index.ntotal, "index": idx.meta["spec"]["factory"]})
        return out
