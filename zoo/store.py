"""The store under every verb: a zoo's home, its catalog transactions, family and space
lookup, and FAISS indexes kept in line with the catalog.

The catalog is opened per call and closed at once, so long work never holds it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlalchemy as sa

from zoo import catalog, db
from zoo.domain import DEFAULT_DIM, DEFAULT_METRIC, DEFAULT_SEED, Family, Space, check_dim, check_metric, env_number
from zoo.errors import Conflict, NotFound, ZooValueError


def default_home() -> Path:
    """``$ZOO_HOME``, else ``~/.zoo``."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".zoo").expanduser()


def default_memory_budget() -> int:
    """Bytes the index-type choice may plan for: ``ZOO_INDEX_MEMORY``, else half the machine."""
    from zoo.index import DEFAULT_BUDGET

    return env_number("ZOO_INDEX_MEMORY", DEFAULT_BUDGET, int, minimum=1)


class Store:
    """A zoo on disk: ``catalog.duckdb`` (the truth), ``index/`` (derived) and ``checkpoints/``."""

    def __init__(self, home: str | os.PathLike | None = None, progress: bool = False, default_dim: int = DEFAULT_DIM,
                 default_seed: int = DEFAULT_SEED, default_metric: str = DEFAULT_METRIC):
        self.home = Path(home).expanduser() if home else default_home()
        self.progress = progress
        # The space a new family starts with.
        self.default_space = Space(check_dim(default_dim), default_seed, None, check_metric(default_metric))
        self._memory_budget: int | None = None
        self._ready = False

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.duckdb"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def memory_budget(self) -> int:
        if self._memory_budget is None:
            self._memory_budget = default_memory_budget()
        return self._memory_budget

    def ensure(self) -> None:
        """Create the home and bring the catalog's schema to the code's (once per Store)."""
        if not self._ready:
            if self.home.exists() and not self.home.is_dir():
                raise ZooValueError(f"zoo home {str(self.home)!r} is a file; pass a directory with --home or ZOO_HOME")
            if "?" in str(self.home):  # DuckDB reads what follows '?' in a database path as options
                raise ZooValueError(f"zoo home {str(self.home)!r} contains '?', which DuckDB cannot open as a "
                                    "catalog path; choose a --home (or ZOO_HOME) without it")
            self.home.mkdir(parents=True, exist_ok=True)
            db.ensure_schema(self.catalog_path)
            self._ready = True

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read-only connection, closed on exit."""
        self.ensure()
        with db.connect(self.catalog_path, write=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction, committed on a clean exit; indexes are not touched (see ``sync_indexes``)."""
        self.ensure()
        with db.connect(self.catalog_path, write=True) as conn:
            yield conn

    def bar(self, items: Sequence[Any], desc: str, unit: str = "ckpt") -> Any:
        """A progress bar over ``items`` when the store was opened with ``progress`` (and there are several)."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, unit=unit, disable=not self.progress or len(items) < 2, leave=False)

    # ------------------------------------------------------------ families
    @staticmethod
    def family(conn: sa.Connection, name: str | None = None) -> Family:
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
    def family_of(conn: sa.Connection, row: dict[str, Any]) -> Family:
        """The family of a model row."""
        [fam] = catalog.families_snapshot(conn, row["family_id"])
        return fam

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
                shutil.rmtree(path)
            yield path

    # ------------------------------------------------------------ indexes
    def sync_indexes(self) -> None:
        """Bring every space's FAISS index in line with the committed catalog; drop indexes of gone spaces."""
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

    def index(self, conn: sa.Connection, sp: Space, force: bool = False) -> Any:
        """The space's ``SpaceIndex``, brought in line with the catalog.

        Up to date: used as is. Behind by new models only (its rows still match the
        catalog's up to its highest id, and the chosen index type is unchanged): the new
        sketches are appended. Anything else (missing, corrupt, removals, forced): rebuilt.
        """
        from zoo.index import SpaceIndex, choose_index

        fp = catalog.sketch_fingerprint(conn, sp.id)
        spec = choose_index(fp["count"], sp.dim, self.memory_budget, sp.metric)
        idx = SpaceIndex(self.index_dir, sp.id)
        if not force and idx.load():
            if idx.matches(fp, spec):
                return idx
            old = idx.meta
            if (old.get("spec", {}).get("factory") == spec.factory and "max_id" in old
                    and catalog.sketch_fingerprint(conn, sp.id, old["max_id"]) == old["fingerprint"]):
                ids, vecs = catalog.sketch_vectors(conn, sp.id, after_id=old["max_id"])
                idx.append(ids, vecs, fp)
                if idx.matches(fp, spec):
                    return idx
        ids, vecs = catalog.sketch_vectors(conn, sp.id)
        idx.build(ids, vecs, spec, fp)
        return idx

    def reindex(self) -> list[dict[str, Any]]:
        """Rebuild every space's FAISS index from the catalog."""
        out = []
        with self.read() as conn:
            for sp in catalog.spaces(conn):
                idx = self.index(conn, sp, force=True)
                out.append({"space_id": sp.id, "count": idx.index.ntotal, "index": idx.meta["spec"]["factory"]})
        return out
