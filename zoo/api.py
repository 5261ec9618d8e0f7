"""Zoo: the facade every caller (CLI, Python, tests) uses."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from zoo import catalog, db
from zoo.catalog import Family, Space
from zoo.checkpoint import Header, arch_signature, default_name, expand_paths, read_header
from zoo.errors import Conflict, NotFound, ZooValueError
from zoo.ingest import (DEFAULT_DIM, DEFAULT_METRIC, DEFAULT_SEED, Decision, Scan, SpaceSpec, check_fits, choose_base,
                        fits, float_body, scan)

KINDS = ("base", "finetune", "centroid", "interpolation", "external")


def default_home() -> Path:
    """``$ZOO_HOME``, else ``~/.zoo``."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".zoo").expanduser()


@dataclass
class AddResult:
    """One registered (or recognised) checkpoint."""

    name: str
    id: int
    created: bool
    kind: str
    family: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    scan: Scan
    decision: Decision
    name: str
    kind: str
    parent_id: int | None
    family_key: int  # existing family id (>0) or a pending new family (<0)
    fields: dict[str, Any] = field(default_factory=dict)


class Zoo:
    """A model zoo on disk: ``catalog.duckdb`` (the truth), ``index/`` and ``checkpoints/``.

    The catalog is opened per call and closed at once, so long work never holds it.
    """

    def __init__(self, home: str | os.PathLike | None = None, progress: bool = False,
                 default_dim: int = DEFAULT_DIM, default_seed: int = DEFAULT_SEED, default_metric: str = DEFAULT_METRIC):
        self.home = Path(home).expanduser() if home else default_home()
        self.progress = progress
        self.default_spec = SpaceSpec(default_dim, default_seed)
        self.default_metric = default_metric
        self._ready = False

    # ------------------------------------------------------------ plumbing
    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.duckdb"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    def _ensure(self) -> None:
        if not self._ready:
            if self.home.exists() and not self.home.is_dir():
                raise ZooValueError(f"zoo home {str(self.home)!r} is a file; pass a directory with --home or ZOO_HOME")
            self.home.mkdir(parents=True, exist_ok=True)
            db.ensure_schema(self.catalog_path)
            self._ready = True

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        self._ensure()
        with db.connect(self.catalog_path, write=False) as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        self._ensure()
        with db.connect(self.catalog_path, write=True) as conn:
            yield conn

    def _bar(self, items: Sequence[Any], desc: str):
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, unit="ckpt", disable=not self.progress or len(items) < 2, leave=False)

    # ------------------------------------------------------------ lifecycle
    def init(self) -> dict[str, Any]:
        """Create the zoo directory and catalog (idempotent)."""
        self._ensure()
        self.index_dir.mkdir(exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        return {"home": str(self.home), "catalog": str(self.catalog_path), "schema": db.head_revision()}

    # ------------------------------------------------------------ registration
    def add(self, paths: Sequence[str | os.PathLike], name: str | None = None, base: str | None = None,
            dataset: str | None = None, task: str | None = None, seed: int | None = None,
            meta: dict[str, Any] | None = None, kind: str | None = None,
            lineage: Sequence[tuple[str, str, float | None]] = ()) -> list[AddResult]:
        """Register checkpoints: one streaming pass each, then one transaction for all.

        A checkpoint that fits no family, or is given ``kind="base"`` (a second pretrained
        model of the same architecture), founds a family. Otherwise it joins the
        family of ``base`` or the family it fits; when several fit, the nearest base by
        sketch distance is taken if it is clearly nearest. Same weights twice: the
        existing model is returned with ``created=False``. Either every path is
        registered or none is.
        """
        files = expand_paths([str(p) for p in paths])
        if name and len(files) > 1:
            raise ZooValueError(f"--name {name!r} given for {len(files)} checkpoints; register them one by one or drop --name")
        if kind is not None and kind not in KINDS:
            raise ZooValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        with self._read() as conn:
            fams = catalog.families_snapshot(conn)
            base_names = {f.id: catalog.model_by_id(conn, f.base_model_id)["name"] for f in fams if f.base_model_id}
            base_row = catalog.model(conn, base) if base else None
            if name and catalog.name_taken(conn, name):
                raise Conflict(f"a model named {name!r} already exists; choose another --name")
            taken = {r["name"] for r in catalog.list_models(conn)}
        pending: list[_Pending] = []
        new_fams: list[Family] = []
        for path in self._bar(files, "sketching"):
            header = read_header(path)
            p = self._plan(header, fams + new_fams, base_names, base_row, kind)
            wanted = name or default_name(path)
            unique, i = wanted, 2
            while not name and unique in taken:
                unique, i = f"{wanted}-{i}", i + 1
            taken.add(unique)
            p.name = unique
            if p.decision.is_base:
                fam = Family(-(len(new_fams) + 1), unique, "", None, header.prefix, p.scan.body,
                             [Space(0, 0, self.default_spec.dim, self.default_spec.seed, self.default_metric, None,
                                    p.scan.raw[self.default_spec])])
                new_fams.append(fam)
                p.family_key = fam.id
                base_names[fam.id] = unique
            p.fields = dict(dataset=dataset, task=task, seed=seed, meta=dict(meta or {}))
            pending.append(p)
        results = self._commit(pending, new_fams, lineage)
        self._after_write()
        return results

    def _plan(self, header: Header, fams: list[Family], base_names: dict[int, str], base_row: dict | None,
              kind: str | None) -> _Pending:
        if base_row is not None and kind == "base":
            raise ZooValueError("--base and --kind base contradict each other: a base has no base; drop one")
        if base_row is not None:
            fam = next(f for f in fams if f.id == base_row["family_id"])
            check_fits(header, fam, base_row["name"])
            sc = scan(header, [SpaceSpec.of(s) for s in fam.spaces], fam.body)
            return _Pending(sc, Decision(fam, False, f"base given: {base_row['name']}"), "", kind or "finetune",
                            base_row["id"], fam.id)
        fitting = [f for f in fams if fits(header, f)]
        if not fitting or kind == "base":
            body = float_body(header)
            sc = scan(header, [self.default_spec], body)
            why = "registered as a base: new family" if fitting else "no family fits: new family"
            return _Pending(sc, Decision(None, True, why), "", "base", None, 0)
        specs = [SpaceSpec.of(s) for f in fitting for s in f.spaces]
        sc = scan(header, specs, _union_body(fitting))
        decision = Decision(fitting[0], False, "family found by architecture") if len(fitting) == 1 else \
            choose_base(sc, fitting, base_names)
        fam = decision.family
        sc.body = fam.body
        sc.head = [t.name for t in header.tensors if t.is_float and fam.body.get(t.canonical) != t.shape]
        return _Pending(sc, decision, "", kind or "finetune", fam.base_model_id, fam.id)

    def _commit(self, pending: list[_Pending], new_fams: list[Family],
                extra_lineage: Sequence[tuple[str, str, float | None]]) -> list[AddResult]:
        results: list[AddResult] = []
        with self._write() as conn:
            fam_ids: dict[int, int] = {}
            fam_names: dict[int, str] = {}
            spaces_of: dict[int, list[Space]] = {}
            seen: dict[str, AddResult] = {}
            for p in pending:
                h = p.scan.content_hash
                existing = catalog.model_by_hash(conn, h)
                if existing is not None or h in seen:
                    prev = seen.get(h) or AddResult(existing["name"], existing["id"], False, existing["kind"],
                                                    catalog.family_by_id(conn, existing["family_id"])["name"])
                    results.append(AddResult(prev.name, prev.id, False, prev.kind, prev.family,
                                             f"same weights as {prev.name!r} (content hash); not registered again"))
                    continue
                header = p.scan.header
                if p.family_key < 0 and p.family_key not in fam_ids:
                    fam = next(f for f in new_fams if f.id == p.family_key)
                    fname = catalog.unique_family_name(conn, fam.name)
                    fid = catalog.insert_family(conn, fname, arch_signature(list(fam.body.items())), fam.prefix, fam.body)
                    sid = catalog.insert_space(conn, fid, self.default_spec.dim, self.default_spec.seed,
                                               self.default_metric, None, fam.spaces[0].base_vec)
                    fam_ids[p.family_key], fam_names[p.family_key] = fid, fname
                    spaces_of[fid] = catalog.spaces(conn, fid)
                fid = fam_ids.get(p.family_key, p.family_key)
                if fid not in spaces_of:
                    spaces_of[fid] = catalog.spaces(conn, fid)
                    fam_names[p.family_key] = catalog.family_by_id(conn, fid)["name"]
                meta = dict(p.fields["meta"])
                meta.update(prefix=header.prefix, head=p.scan.head, note=p.decision.note)
                if header.config and header.config.get("id2label"):
                    meta["id2label"] = header.config["id2label"]
                mid = catalog.insert_model(
                    conn, name=p.name, family_id=fid, kind=p.kind, uri=str(header.path), format=header.format,
                    content_hash=h, dataset=p.fields["dataset"], task=p.fields["task"], seed=p.fields["seed"],
                    n_params=header.n_params, dtype=header.dtype, meta=meta)
                if p.decision.is_base:
                    catalog.set_family_base(conn, fid, mid)
                for sp in spaces_of[fid]:
                    delta = np.zeros(sp.dim) if p.decision.is_base else p.scan.raw[SpaceSpec.of(sp)] - sp.base_vec
                    catalog.insert_sketch(conn, mid, sp.id, delta)
                parent = p.parent_id
                if parent is not None and not any(rel == "finetuned_from" for _, rel, _ in extra_lineage):
                    catalog.insert_lineage(conn, mid, parent, "finetuned_from")
                for parent_name, rel, w in extra_lineage:
                    catalog.insert_lineage(conn, mid, catalog.model(conn, parent_name)["id"], rel, w)
                res = AddResult(p.name, mid, True, p.kind, fam_names[p.family_key], p.decision.note)
                seen[h] = res
                results.append(res)
        return results

    def _after_write(self) -> None:
        """Hook for derived state (the FAISS index) after a committed write."""

    # ------------------------------------------------------------ lookup
    def ls(self, family: str | None = None, dataset: str | None = None, task: str | None = None,
           kind: str | None = None) -> list[dict[str, Any]]:
        """Models, filtered by family name, dataset, task and kind."""
        if kind is not None and kind not in KINDS:
            raise ZooValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        with self._read() as conn:
            if family:
                catalog.family_by_name(conn, family)
            return catalog.list_models(conn, family, dataset, task, kind)

    def show(self, name: str) -> dict[str, Any]:
        """A model's row, family, parents, children, evaluations and sketch norms."""
        with self._read() as conn:
            m = catalog.model(conn, name)
            fam = catalog.family_by_id(conn, m["family_id"])
            m["family"] = fam["name"]
            m["parents"] = catalog.parents(conn, m["id"])
            m["children"] = catalog.children(conn, m["id"])
            m["evaluations"] = catalog.evaluations_of(conn, m["id"])
            m["sketches"] = [{"space_id": sp.id, "dim": sp.dim, "seed": sp.seed,
                              "norm": float(np.linalg.norm(catalog.sketch_vectors(conn, sp.id, [m["id"]])[1]))}
                             for sp in catalog.spaces(conn, m["family_id"])]
            return m

    def lineage(self, name: str) -> dict[str, Any]:
        """The tree above (ancestors) and below (descendants) a model."""
        with self._read() as conn:
            m = catalog.model(conn, name)
            up, down = catalog.lineage_edges(conn, m["id"])
            return {"name": m["name"], "ancestors": up, "descendants": down}

    def rm(self, name: str, force: bool = False) -> dict[str, Any]:
        """Remove a model from the catalog (files stay where they are)."""
        with self._write() as conn:
            m = catalog.model(conn, name)
            orphans = catalog.delete_model(conn, m["id"], force)
        self._after_write()
        return {"removed": m["name"], "id": m["id"], "detached_children": orphans}

    def sql(self, query: str, limit: int | None = None) -> tuple[list[str], list[tuple]]:
        """Run read-only SQL on the catalog; (columns, rows)."""
        with self._read() as conn:
            return catalog.run_readonly(conn, query, limit)


def _union_body(fams: list[Family]) -> dict[str, tuple[int, ...]]:
    body: dict[str, tuple[int, ...]] = {}
    for f in fams:
        body.update(f.body)
    return body
