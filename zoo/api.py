"""Zoo: the facade every caller (CLI, Python, tests) uses."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import sqlalchemy as sa

from zoo import catalog, db
from zoo.catalog import Family, Space
from zoo.checkpoint import Header, arch_signature, default_name, expand_paths, read_header
from zoo.errors import Conflict, EmptyRegion, FamilyMismatch, NotFound, ZooError, ZooValueError
from zoo.geometry import brute_force, check_k, check_metric, distances, inside_score, kmeans, purity, region_stats
from zoo.index import DEFAULT_BUDGET, FLAT_MAX, SpaceIndex, choose_index
from zoo.ingest import (DEFAULT_DIM, DEFAULT_METRIC, DEFAULT_SEED, Decision, Scan, SpaceSpec, check_fits, choose_base,
                        exact_gram, fill_missing, fits, float_body, gram_distances, scan)
from zoo.merge import dirichlet_weights, interpolation_weights, plan_merge, weighted_merge
from zoo.sketch import check_dim

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
        self.default_metric = check_metric(default_metric)
        check_dim(default_dim)
        self.memory_budget = int(os.environ.get("ZOO_INDEX_MEMORY", DEFAULT_BUDGET))
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
            lineage: Sequence[tuple[str, str, float | None]] = (),
            expected: dict[int, np.ndarray] | None = None,
            on_commit: Callable[[sa.Connection, list[AddResult]], None] | None = None) -> list[AddResult]:
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
            # A taken --name is an error only for new weights (found at commit): adding the
            # same checkpoint again under its own name is a no-op, as scripts expect.
            taken = {r["name"] for r in catalog.list_models(conn)}
        pending: list[_Pending] = []
        new_fams: list[Family] = []
        for path in self._bar(files, "sketching"):
            header = read_header(path)
            p = self._plan(header, fams + new_fams, base_names, base_row, kind)
            unique = name or catalog.first_free(default_name(path), taken)
            taken.add(unique)
            p.name = unique
            if p.decision.is_base:
                fam = Family(-(len(new_fams) + 1), unique, "", None, header.prefix, p.scan.body,
                             [Space(0, 0, self.default_spec.dim, self.default_spec.seed, self.default_metric, None,
                                    p.scan.raw[self.default_spec])], base_uri=str(header.path))
                new_fams.append(fam)
                p.family_key = fam.id
                base_names[fam.id] = unique
            p.fields = dict(dataset=dataset, task=task, seed=seed, meta=dict(meta or {}))
            pending.append(p)
        if expected is not None:
            for p in pending:
                for sp in p.decision.family.spaces if p.decision.family else []:
                    if sp.id in expected:
                        _check_linearity(p, sp, expected[sp.id])
        results = self._commit(pending, new_fams, lineage, on_commit)
        self._after_write()
        return results

    def _plan(self, header: Header, fams: list[Family], base_names: dict[int, str], base_row: dict | None,
              kind: str | None) -> _Pending:
        if base_row is not None and kind == "base":
            raise ZooValueError("--base and --kind base contradict each other: a base has no base; drop one")
        if base_row is not None:
            fam = next(f for f in fams if f.id == base_row["family_id"])
            check_fits(header, fam, base_row["name"])
            specs = [SpaceSpec.of(s) for s in fam.spaces]
            sc = scan(header, specs, fam.body)
            note = f"base given: {base_row['name']}" + _filled_note(fill_missing(sc, fam, specs))
            return _Pending(sc, Decision(fam, False, note), "", kind or "finetune", base_row["id"], fam.id)
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
        decision.note += _filled_note(fill_missing(sc, fam, [SpaceSpec.of(s) for s in fam.spaces]))
        return _Pending(sc, decision, "", kind or "finetune", fam.base_model_id, fam.id)

    def _commit(self, pending: list[_Pending], new_fams: list[Family],
                extra_lineage: Sequence[tuple[str, str, float | None]],
                on_commit: Callable[[sa.Connection, list[AddResult]], None] | None = None) -> list[AddResult]:
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
                    catalog.insert_space(conn, fid, self.default_spec.dim, self.default_spec.seed,
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
                if parent is not None and not extra_lineage:
                    catalog.insert_lineage(conn, mid, parent, "finetuned_from")
                for parent_name, rel, w in extra_lineage:
                    catalog.insert_lineage(conn, mid, catalog.model(conn, parent_name)["id"], rel, w)
                res = AddResult(p.name, mid, True, p.kind, fam_names[p.family_key], p.decision.note)
                seen[h] = res
                results.append(res)
            if on_commit is not None:
                on_commit(conn, results)
        return results

    def _after_write(self) -> None:
        """Bring every space's FAISS index in line with the committed catalog."""
        with self._read() as conn:
            for sp in catalog.spaces(conn):
                self._index(conn, sp)
            live = {sp.id for sp in catalog.spaces(conn)}
        for f in self.index_dir.glob("space_*.json") if self.index_dir.exists() else []:
            sid = f.stem.split("_", 1)[1]
            if sid.isdigit() and int(sid) not in live:
                SpaceIndex(self.index_dir, int(sid)).remove()

    # ------------------------------------------------------------ index
    def _index(self, conn: sa.Connection, sp: Space, force: bool = False) -> SpaceIndex:
        """The space's index, brought in line with the catalog.

        Up to date: used as is. Behind by new models only (its rows still match the
        catalog's up to its highest id, and the chosen index type is unchanged): the new
        sketches are appended. Anything else (missing, corrupt, removals, forced): rebuilt.
        """
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
        with self._read() as conn:
            for sp in catalog.spaces(conn):
                idx = self._index(conn, sp, force=True)
                out.append({"space_id": sp.id, "count": idx.index.ntotal, "index": idx.meta["spec"]["factory"]})
        return out

    # ------------------------------------------------------------ spaces
    def spaces(self) -> list[dict[str, Any]]:
        """Sketch spaces with their family and model count."""
        with self._read() as conn:
            out = []
            for sp in catalog.spaces(conn):
                fp = catalog.sketch_fingerprint(conn, sp.id)
                out.append({"id": sp.id, "family": catalog.family_by_id(conn, sp.family_id)["name"], "dim": sp.dim,
                            "seed": sp.seed, "metric": sp.metric, "tensor_filter": sp.tensor_filter,
                            "method": sp.method, "sketches": fp["count"]})
            return out

    def space_add(self, family: str | None = None, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED,
                  metric: str = DEFAULT_METRIC, tensor_filter: str | None = None) -> dict[str, Any]:
        """Add a sketch space to a family and backfill the sketches of its models (one read each)."""
        import re

        check_dim(dim)
        check_metric(metric)
        if tensor_filter is not None:
            try:
                re.compile(tensor_filter)
            except re.error as e:
                raise ZooValueError(f"--filter {tensor_filter!r} is not a valid regular expression ({e})") from e
        spec = SpaceSpec(dim, seed, tensor_filter)
        with self._read() as conn:
            fam = self._family(conn, family)
            base = catalog.model_by_id(conn, fam.base_model_id)
            members = catalog.list_models(conn, family=fam.name)
            rows = [catalog.model(conn, m["name"]) for m in members]
        raws: dict[int, np.ndarray] = {}
        for row in self._bar(rows, "backfilling"):
            sc = scan(read_header(row["uri"]), [spec], fam.body)
            if sc.content_hash != row["content_hash"]:
                raise Conflict(f"{row['uri']} changed since {row['name']!r} was registered (content hash differs); "
                               "re-register it or remove it before adding a space")
            raws[row["id"]] = sc.raw[spec]
        base_vec = raws[base["id"]]
        with self._write() as conn:
            sid = catalog.insert_space(conn, fam.id, dim, seed, metric, tensor_filter, base_vec)
            for mid, raw in raws.items():
                catalog.insert_sketch(conn, mid, sid, np.zeros(dim) if mid == base["id"] else raw - base_vec)
        self._after_write()
        return {"id": sid, "family": fam.name, "dim": dim, "seed": seed, "metric": metric, "backfilled": len(raws)}

    def _family(self, conn: sa.Connection, name: str | None) -> Family:
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

    def _pick_space(self, fam: Family, space_id: int | None) -> Space:
        if space_id is None:
            return fam.spaces[0]
        for sp in fam.spaces:
            if sp.id == space_id:
                return sp
        raise NotFound(f"family {fam.name!r} has no sketch space {space_id}; its spaces: {[s.id for s in fam.spaces]}")

    # ------------------------------------------------------------ targets
    def _target(self, conn: sa.Connection, target: str, family: str | None = None) -> tuple[Family, dict[str, np.ndarray], dict | None]:
        """(family, {space id: delta sketch}, model row or None) of a model name or a checkpoint path."""
        fams = catalog.families_snapshot(conn)
        try:
            row = catalog.model(conn, target)
        except NotFound:
            if not Path(target).expanduser().exists():
                raise
            row = None
        if row is not None:
            fam = next(f for f in fams if f.id == row["family_id"])
            vecs = {sp.id: catalog.sketch_vectors(conn, sp.id, [row["id"]])[1][0].astype(np.float64) for sp in fam.spaces}
            return fam, vecs, row
        header = read_header(target)
        fitting = [f for f in fams if fits(header, f) and (family is None or f.name == family)]
        if not fitting:
            names = ", ".join(f.name for f in fams) or "(none)"
            raise FamilyMismatch(f"{target} fits none of this zoo's families ({names}): its architecture "
                                 f"({len(header.tensors)} tensors, e.g. {header.tensors[0].canonical!r} {list(header.tensors[0].shape)}) "
                                 "differs; register its base first")
        sc = scan(header, [SpaceSpec.of(sp) for f in fitting for sp in f.spaces], _union_body(fitting))
        base_names = {f.id: f.name for f in fitting}
        fam = fitting[0] if len(fitting) == 1 else choose_base(sc, fitting, base_names).family
        fill_missing(sc, fam, [SpaceSpec.of(sp) for sp in fam.spaces])
        return fam, {sp.id: sc.raw[SpaceSpec.of(sp)] - sp.base_vec for sp in fam.spaces}, None

    # ------------------------------------------------------------ queries
    def nearest(self, target: str, k: int = 5, dataset: str | None = None, task: str | None = None,
                kind: str | None = None, metric: str | None = None, space: int | None = None,
                family: str | None = None) -> dict[str, Any]:
        """The k models nearest to a model name or a checkpoint path (sketched on the fly, not registered)."""
        check_k(k)
        with self._read() as conn:
            fam, vecs, row = self._target(conn, target, family)
            sp = self._pick_space(fam, space)
            metric = check_metric(metric or sp.metric)
            q = vecs[sp.id]
            self_id = row["id"] if row else None
            filtered = dataset or task or kind
            allowed = catalog.filtered_ids(conn, fam.id, dataset, task, kind) if filtered else None
            if allowed is not None and self_id is not None:
                allowed = [i for i in allowed if i != self_id]
            if metric != sp.metric or (allowed is not None and len(allowed) <= FLAT_MAX):
                ids, x = catalog.sketch_vectors(conn, sp.id, allowed)
                keep = ids != (self_id if self_id is not None else -1)
                got_ids, got_d = brute_force(q, ids[keep], x[keep], k, metric)
                how = "exact scan"
            else:
                idx = self._index(conn, sp)
                extra = 1 if self_id is not None else 0
                res_ids, res_d = idx.search(q[None], k + extra, None if allowed is None else np.asarray(allowed))
                pairs = sorted(((int(i), float(d)) for i, d in zip(res_ids[0], res_d[0]) if i >= 0 and i != self_id),
                               key=lambda p: (p[1], p[0]))[:k]
                got_ids = np.array([p[0] for p in pairs], dtype=np.int64)
                got_d = np.array([p[1] for p in pairs])
                how = idx.meta["spec"]["factory"]
            meta = catalog.models_meta(conn, got_ids.tolist())
        results = [{"rank": r + 1, "name": meta[int(i)]["name"], "id": int(i), "distance": float(d),
                    "kind": meta[int(i)]["kind"], "dataset": meta[int(i)]["dataset"], "task": meta[int(i)]["task"]}
                   for r, (i, d) in enumerate(zip(got_ids, got_d))]
        return {"query": row["name"] if row else str(target), "registered": row is not None, "family": fam.name,
                "space_id": sp.id, "metric": metric, "search": how, "results": results}

    def distance(self, a: str, b: str, exact: bool = False, space: int | None = None) -> dict[str, Any]:
        """Cosine and L2 distance between two models' task vectors: sketch estimate, or exact from weights."""
        with self._read() as conn:
            fa, va, ra = self._target(conn, a)
            fb, vb, rb = self._target(conn, b)
            if fa.id != fb.id:
                raise FamilyMismatch(f"{a!r} is in family {fa.name!r} and {b!r} in {fb.name!r}; distances are defined within a family")
            sp = self._pick_space(fa, space)
            base_uri = catalog.model_by_id(conn, fa.base_model_id)["uri"]
        x, y = va[sp.id], vb[sp.id]
        out: dict[str, Any] = {"a": a, "b": b, "family": fa.name, "space_id": sp.id, "dim": sp.dim,
                               "sketch": {"cosine": float(distances(x, y[None], "cosine")[0]),
                                          "l2": float(distances(x, y[None], "l2")[0]),
                                          "norm_a": float(np.linalg.norm(x)), "norm_b": float(np.linalg.norm(y))}}
        if exact:
            ha = read_header(ra["uri"] if ra else a)
            hb = read_header(rb["uri"] if rb else b)
            g = exact_gram(read_header(base_uri), [ha, hb], fa.body)
            out["exact"] = {"cosine": float(gram_distances(g, "cosine")[0, 1]), "l2": float(gram_distances(g, "l2")[0, 1]),
                            "norm_a": float(np.sqrt(g[0, 0])), "norm_b": float(np.sqrt(g[1, 1]))}
            out["relative_error_l2"] = (abs(out["sketch"]["l2"] - out["exact"]["l2"]) / out["exact"]["l2"]
                                        if out["exact"]["l2"] > 0 else 0.0)
        return out

    def _members(self, conn: sa.Connection, dataset: str | None, task: str | None, names: Sequence[str] | None,
                 family: str | None, exclude_dataset: str | None = None, all_models: bool = False,
                 kind: str | None = None) -> tuple[Family, list[int]]:
        if not (dataset or task or names or all_models):
            raise ZooValueError("say which region: --dataset D, --task T, --all, or model NAMES")
        fams = catalog.families_snapshot(conn)
        if names:
            rows = [catalog.model(conn, n) for n in names]
            fam_ids = {r["family_id"] for r in rows}
            if len(fam_ids) > 1:
                raise FamilyMismatch(f"the models {', '.join(names)} span {len(fam_ids)} families; a region lies within one")
            fam = next(f for f in fams if f.id == fam_ids.pop())
            ids = [r["id"] for r in rows]
            if exclude_dataset:
                ids = [r["id"] for r in rows if r["dataset"] != exclude_dataset]
        else:
            cand = [f for f in fams if family is None or f.name == family]
            if family is not None and not cand:
                raise NotFound(f"no family named {family!r}")
            hits = {f.id: catalog.filtered_ids(conn, f.id, dataset, task, kind or (None if all_models else "finetune"),
                                               exclude_dataset=exclude_dataset) for f in cand}
            hits = {k: v for k, v in hits.items() if v}
            if len(hits) > 1:
                raise ZooValueError(f"the region spans families {', '.join(f.name for f in fams if f.id in hits)}; pass --family")
            if not hits:
                what = ", ".join(f"{k}={v}" for k, v in (("dataset", dataset), ("task", task), ("family", family),
                                                          ("exclude-dataset", exclude_dataset)) if v) or "all"
                raise EmptyRegion(f"no fine-tuned models match {what}; check the spelling with `zoo ls` or register models first")
            fid, ids = next(iter(hits.items()))
            fam = next(f for f in fams if f.id == fid)
        if not ids:
            raise EmptyRegion("the region has no members after exclusions; relax --exclude-dataset")
        return fam, ids

    def region(self, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
               family: str | None = None, metric: str | None = None, space: int | None = None,
               exclude_dataset: str | None = None, all_models: bool = False) -> dict[str, Any]:
        """Members, centroid (exact by linearity) and spread of a region in sketch space."""
        with self._read() as conn:
            fam, ids = self._members(conn, dataset, task, names, family, exclude_dataset, all_models)
            sp = self._pick_space(fam, space)
            metric = check_metric(metric or sp.metric)
            mids, x = catalog.sketch_vectors(conn, sp.id, ids)
            meta = catalog.models_meta(conn, mids.tolist())
        st = region_stats(x, metric)
        members = [{"name": meta[int(i)]["name"], "id": int(i), "dataset": meta[int(i)]["dataset"],
                    "task": meta[int(i)]["task"], "distance_to_centroid": float(d), "loo_distance": float(l)}
                   for i, d, l in zip(mids, st.member_dist, st.loo_dist)]
        return {"family": fam.name, "space_id": sp.id, "metric": metric, "n": len(members), "members": members,
                "stats": st.summary(), "centroid": st.centroid.tolist()}

    def inside(self, target: str, dataset: str | None = None, task: str | None = None,
               names: Sequence[str] | None = None, family: str | None = None, metric: str | None = None,
               space: int | None = None) -> dict[str, Any]:
        """Whether a model or checkpoint lies inside a region (see geometry.inside_score for the rule)."""
        with self._read() as conn:
            fam_t, vecs, row = self._target(conn, target, family)
            fam, ids = self._members(conn, dataset, task, names, family or fam_t.name)
            if fam.id != fam_t.id:
                raise FamilyMismatch(f"{target!r} is in family {fam_t.name!r} but the region is in {fam.name!r}")
            if row is not None:
                ids = [i for i in ids if i != row["id"]]
            if len(ids) < 2:
                raise EmptyRegion("a region needs at least 2 other members to judge membership; add models or widen it")
            sp = self._pick_space(fam, space)
            metric = check_metric(metric or sp.metric)
            _, x = catalog.sketch_vectors(conn, sp.id, ids)
        res = inside_score(vecs[sp.id], region_stats(x, metric), metric)
        res.update(target=target, family=fam.name, metric=metric, n_members=len(ids),
                   region={k: v for k, v in (("dataset", dataset), ("task", task)) if v} or {"names": list(names or [])})
        return res

    def clusters(self, k: int, family: str | None = None, metric: str | None = None, space: int | None = None,
                 seed: int = 0, kind: str | None = "finetune", exact: bool = False) -> dict[str, Any]:
        """faiss k-means on sketches, with purity against dataset and task labels.

        ``exact`` clusters the exact task vectors instead: their Gram matrix is computed from
        the weights in one lockstep pass, and k-means runs on an embedding that reproduces
        every inner product (rows of V sqrt(L) from its eigendecomposition), so the
        geometry is exactly that of the full vectors.
        """
        check_k(k)
        with self._read() as conn:
            fam = self._family(conn, family)
            sp = self._pick_space(fam, space)
            metric = check_metric(metric or sp.metric)
            ids = catalog.filtered_ids(conn, fam.id, kind=kind)
            if not ids:
                raise EmptyRegion(f"family {fam.name!r} has no {kind or ''} models to cluster")
            mids, x = catalog.sketch_vectors(conn, sp.id, ids)
            meta = catalog.models_meta(conn, mids.tolist())
            base_uri = catalog.model_by_id(conn, fam.base_model_id)["uri"]
        if exact:
            g = exact_gram(read_header(base_uri), [read_header(meta[int(i)]["uri"]) for i in mids], fam.body)
            vals, vecs = np.linalg.eigh(g)
            x = vecs * np.sqrt(np.clip(vals, 0.0, None))
        assign, _ = kmeans(x, k, metric, seed)
        ds = [meta[int(i)]["dataset"] for i in mids]
        ts = [meta[int(i)]["task"] for i in mids]
        groups: dict[int, list[str]] = {}
        for i, a in zip(mids, assign):
            groups.setdefault(int(a), []).append(meta[int(i)]["name"])
        return {"family": fam.name, "space_id": None if exact else sp.id, "exact": exact, "metric": metric, "k": k,
                "n": len(mids), "purity_dataset": purity(assign, ds), "purity_task": purity(assign, ts),
                "assignments": [{"name": meta[int(i)]["name"], "cluster": int(a), "dataset": d, "task": t}
                                for i, a, d, t in zip(mids, assign, ds, ts)],
                "clusters": [{"cluster": c, "size": len(v), "members": v} for c, v in sorted(groups.items())]}

    # ------------------------------------------------------------ materialize
    def centroid(self, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
                 all_models: bool = False, exclude_dataset: str | None = None, weights: Sequence[float] | None = None,
                 dirichlet: float | None = None, seed: int = 0, out: str | None = None,
                 family: str | None = None) -> dict[str, Any]:
        """Materialize the (weighted) average of a region's members as a checkpoint and register it.

        Weights default to uniform; ``dirichlet`` samples a random point of the convex hull.
        The same member set and weights materialized before are returned from the catalog.
        """
        with self._read() as conn:
            fam, ids = self._members(conn, dataset, task, names, family, exclude_dataset, all_models)
            rows = [catalog.model_by_id(conn, i) for i in ids]
        if weights is not None:
            if len(weights) != len(rows):
                raise ZooValueError(f"{len(weights)} weights for {len(rows)} members ({', '.join(r['name'] for r in rows)}); "
                                    "give one weight per member")
            w = np.asarray(weights, dtype=np.float64)
            if not np.all(np.isfinite(w)) or w.sum() == 0:
                raise ZooValueError(f"weights {list(weights)} must be finite and not sum to zero")
            w = (w / w.sum()).tolist()
        elif dirichlet is not None:
            w = dirichlet_weights(len(rows), dirichlet, seed)
        else:
            w = [1.0 / len(rows)] * len(rows)
        spec = {k: v for k, v in (("dataset", dataset), ("task", task), ("exclude_dataset", exclude_dataset)) if v}
        if all_models:
            spec["all"] = True
        if names:
            spec["names"] = list(names)
        kind = "interpolation" if dirichlet is not None else "centroid"
        return self._materialize(fam, rows, w, out, kind, "averaged_from", spec)

    def interpolate(self, a: str, b: str, alpha: float, extrapolate: bool = False, out: str | None = None) -> dict[str, Any]:
        """Materialize (1 - alpha) A + alpha B (alpha outside [0, 1] needs ``extrapolate``)."""
        w = interpolation_weights(alpha, extrapolate)
        with self._read() as conn:
            rows = [catalog.model(conn, a), catalog.model(conn, b)]
            if rows[0]["family_id"] != rows[1]["family_id"]:
                raise FamilyMismatch(f"{a!r} and {b!r} are in different families; interpolation needs one family")
            fam = next(f for f in catalog.families_snapshot(conn) if f.id == rows[0]["family_id"])
        return self._materialize(fam, rows, w, out, "interpolation", "interpolated_from", {"a": a, "b": b, "alpha": alpha})

    def _materialize(self, fam: Family, rows: list[dict[str, Any]], w: list[float], out: str | None, kind: str,
                     relation: str, spec: dict[str, Any]) -> dict[str, Any]:
        import xxhash

        key = xxhash.xxh3_64("|".join(f"{r['id']}:{wi:.12g}" for r, wi in sorted(zip(rows, w), key=lambda x: x[0]["id"]))
                             .encode()).hexdigest()
        with self._read() as conn:
            cached = catalog.model_by_meta(conn, "members_key", key)
            if cached is None and out and catalog.name_taken(conn, out):
                raise Conflict(f"a model named {out!r} already exists; choose another --out")
            base_row = catalog.model_by_id(conn, fam.base_model_id)
            expected = {}
            for sp in fam.spaces:
                ids, x = catalog.sketch_vectors(conn, sp.id, [r["id"] for r in rows])
                order = [int(np.where(ids == r["id"])[0][0]) for r in rows]
                expected[sp.id] = np.asarray(w) @ x[order].astype(np.float64)
        if cached is not None:
            return {"name": cached["name"], "id": cached["id"], "created": False, "kind": cached["kind"],
                    "path": cached["uri"], "members": [r["name"] for r in rows], "weights": w,
                    "note": f"same members and weights already materialized as {cached['name']!r}"}
        name = out or f"{kind}-{key[:10]}"
        headers = [read_header(r["uri"]) for r in rows]
        base_h = read_header(base_row["uri"])
        plan = plan_merge(headers, fam.body, base_h, [r["meta"].get("id2label") for r in rows])
        path = weighted_merge(headers, w, plan, base_h, self.checkpoints_dir / name, progress=self.progress)
        try:
            [res] = self.add([path], name=name, kind=kind, base=base_row["name"],
                             meta={"members_key": key, "merge": plan.note, "spec": spec},
                             lineage=[(r["name"], relation, wi) for r, wi in zip(rows, w)], expected=expected)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return {"name": res.name, "id": res.id, "created": res.created, "kind": kind, "path": str(path),
                "members": [r["name"] for r in rows], "weights": w, "note": plan.note}

    # ------------------------------------------------------------ fine-tuning
    def resolve_start(self, start: str, family: str | None = None) -> dict[str, Any]:
        """A model row for START: a model name, ``base`` (the family base), or a region spec
        ``centroid:task=T[,dataset=D][,exclude_dataset=D]`` / ``centroid:all[,exclude_dataset=D]``,
        materialized first (cached by member set)."""
        if start.startswith("centroid:"):
            spec = parse_region_spec(start)
            res = self.centroid(family=family, **spec)
            with self._read() as conn:
                return catalog.model(conn, res["name"])
        with self._read() as conn:
            if start == "base" and not catalog.name_taken(conn, "base"):
                fam = self._family(conn, family)
                return catalog.model_by_id(conn, fam.base_model_id)
            return catalog.model(conn, start)

    def finetune(self, start: str, train: str | os.PathLike, eval: str | os.PathLike | None = None,
                 dataset: str | None = None, task: str | None = None, out: str | None = None,
                 family: str | None = None, step_hook: Callable[[int], None] | None = None,
                 **params: Any) -> dict[str, Any]:
        """Fine-tune from START, evaluate, and register the result with a run row and evaluations.

        The catalog is open only to record the run's start and its end; a failure marks the
        run failed with its error and registers nothing.
        """
        from zoo.data import read_examples
        from zoo.finetune import TrainParams, resolve_device, train as run_training

        tp = TrainParams(**params)
        device = resolve_device(tp.device)
        train_ex = read_examples(train)
        eval_ex = read_examples(eval) if eval is not None else None
        dataset = dataset or Path(train).stem
        start_row = self.resolve_start(start, family)
        with self._read() as conn:
            fam = next(f for f in catalog.families_snapshot(conn) if f.id == start_row["family_id"])
            base_row = catalog.model_by_id(conn, fam.base_model_id)
            name = out or catalog.unique_model_name(conn, f"{dataset}-from-{start_row['name']}-s{tp.seed}")
            if catalog.name_taken(conn, name):
                raise Conflict(f"a model named {name!r} already exists; choose another --out")
        out_dir = self.checkpoints_dir / name
        if out_dir.exists():
            raise Conflict(f"{out_dir} already exists; choose another --out or remove the folder")
        start_kind = start_row["kind"]
        run_params = dict(tp.as_dict(), start=start, start_kind=start_kind, start_name=start_row["name"],
                          task=task, train=str(Path(train).resolve()), eval=str(Path(eval).resolve()) if eval else None)
        # Installed before the run row exists (a SIGTERM that finds the row finds the handler too)
        # and restored after, so a library caller's own handler is left as it was.
        with _sigterm_as_exit() as termination:
            with self._write() as conn:
                run_id = catalog.insert_run(conn, start_model_id=start_row["id"], dataset=dataset, method=tp.method,
                                            params=dict(run_params, pid=os.getpid()), device=device, status="running",
                                            started_at=_now())

            def hook(step: int) -> None:
                termination.check()
                if step_hook is not None:
                    step_hook(step)

            try:
                metrics = run_training(Path(start_row["uri"]), [Path(base_row["uri"])], train_ex, eval_ex, tp, out_dir,
                                       progress=self.progress, step_hook=hook)
                termination.check()

                def record(conn: sa.Connection, results: list[AddResult]) -> None:
                    mid = results[0].id
                    catalog.update_run(conn, run_id, result_model_id=mid, status="finished", finished_at=_now(),
                                       metrics=metrics)
                    if "eval_accuracy" in metrics:
                        for metric in ("accuracy", "loss"):
                            catalog.insert_evaluation(conn, model_id=mid, dataset=dataset, split="eval", metric=metric,
                                                      value=float(metrics[f"eval_{metric}"]), n_examples=metrics["n_eval"],
                                                      run_id=run_id)

                [res] = self.add([out_dir], name=name, base=start_row["name"], dataset=dataset, task=task, seed=tp.seed,
                                 kind="finetune", meta={"run_id": run_id, "start_kind": start_kind}, on_commit=record)
            except BaseException as e:
                shutil.rmtree(out_dir, ignore_errors=True)
                err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                with self._write() as conn:
                    catalog.update_run(conn, run_id, status="failed", finished_at=_now(), error=err[:2000])
                raise
        return {"run_id": run_id, "name": res.name, "id": res.id, "start": start_row["name"], "start_kind": start_kind,
                "dataset": dataset, "task": task, "device": device, "path": str(out_dir), **metrics}

    def runs(self, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Fine-tuning runs, newest first, with start and result names and the eval accuracy."""
        with self._read() as conn:
            return catalog.list_runs(conn, status, limit)

    def evaluate(self, name: str, data: str | os.PathLike, train: str | os.PathLike | None = None,
                 split: str = "test", dataset: str | None = None, probe: bool = False,
                 **params: Any) -> dict[str, Any]:
        """Accuracy of a model on a data file, recorded in ``evaluations``: through its head
        when it has the data's label space, else (or always, with ``probe``) a linear probe
        on its frozen body."""
        return self.evaluate_many([name], data, train=train, split=split, dataset=dataset, probe=probe, **params)[0]

    def evaluate_many(self, names: Sequence[str], data: str | os.PathLike, train: str | os.PathLike | None = None,
                      split: str = "test", dataset: str | None = None, probe: bool = False,
                      **params: Any) -> list[dict[str, Any]]:
        """``evaluate`` for several models on one data file: the data is read and every name
        checked once, before the first evaluation; each result is recorded as it comes."""
        from zoo.data import read_examples
        from zoo.finetune import TrainParams, evaluate as run_eval

        tp = TrainParams(**params)
        ex = read_examples(data)
        probe_ex = read_examples(train) if train is not None else None
        dataset = dataset or Path(data).stem
        with self._read() as conn:
            fams = {f.id: f for f in catalog.families_snapshot(conn)}
            rows = [catalog.model(conn, n) for n in names]
            base_uris = [catalog.model_by_id(conn, fams[r["family_id"]].base_model_id)["uri"] for r in rows]
        out = []
        for row, base_uri in zip(rows, base_uris):
            res = run_eval(Path(row["uri"]), [Path(base_uri)], ex, probe_ex, tp, probe=probe)
            with self._write() as conn:
                catalog.insert_evaluation(conn, model_id=row["id"], dataset=dataset, split=split, metric=res["metric"],
                                          value=float(res["value"]), n_examples=res["n_examples"])
            out.append({"name": row["name"], "dataset": dataset, "split": split, **res})
        return out

    def select_start(self, task: str, dataset: str | None = None, family: str | None = None,
                     neighbours: int = 3, train: str | os.PathLike | None = None, probe_examples: int = 256,
                     folds: int = 5, **params: Any) -> dict[str, Any]:
        """Rank starting points for fine-tuning on ``dataset`` of ``task`` (see zoo.select).

        With ``train``, every candidate is materialized and probed on up to ``probe_examples``
        of its examples (``folds``-fold cross-validated linear probe on the frozen body), and
        the probe's gain over the base counts in the score.
        """
        from zoo import select as sel

        check_k(neighbours, "--neighbours")
        probe_ex = None
        if train is not None:
            from zoo.data import read_examples
            from zoo.finetune import TrainParams, check_probe_input, sample_examples

            check_k(probe_examples, "--probe-examples")
            check_k(folds, "--folds")
            tp = TrainParams(**params)
            probe_ex = sample_examples(read_examples(train), probe_examples, tp.seed)
            check_probe_input(probe_ex, folds)  # before any centroid is materialized
        with self._read() as conn:
            fam = self._family(conn, family)
            sp = fam.spaces[0]
            base = catalog.model_by_id(conn, fam.base_model_id)
            fts = [m for m in catalog.list_models(conn, family=fam.name, kind="finetune")]
            start_members = catalog.run_start_members(conn, fam.id)
            outcomes = []
            for r in catalog.finished_runs(conn, fam.id):
                p = r["params"] or {}
                cat = sel.category(p.get("start", ""), p.get("start_kind"))
                if cat == "model" and r["id"] in start_members:
                    cat = sel.category_of_members(r["dataset"], p.get("task"), start_members[r["id"]])
                outcomes.append(sel.Outcome(r["dataset"], p.get("task"), cat, r["accuracy"], sel.setting_of(p)))
            ids, x = catalog.sketch_vectors(conn, sp.id, [m["id"] for m in fts])
        by_id = {m["id"]: m for m in fts}
        vec = {int(i): v.astype(np.float64) for i, v in zip(ids, x)}

        def members(pred) -> list[int]:
            return [m["id"] for m in fts if pred(m) and m["id"] in vec]

        def stats(mids: list[int]) -> dict[str, Any]:
            st = region_stats(np.stack([vec[i] for i in mids]), sp.metric)
            return {"members": len(mids), "datasets": sorted({by_id[i]["dataset"] for i in mids if by_id[i]["dataset"]}),
                    "radius": st.summary()["radius"], "centroid": st.centroid}

        excl = f",exclude_dataset={dataset}" if dataset else ""
        cands: list[sel.Candidate] = [sel.Candidate("base", "base", evidence={"model": base["name"]})]
        task_ids = members(lambda m: m["task"] == task and m["dataset"] != dataset)
        ref = None
        if task_ids:
            st = stats(task_ids)
            ref = st.pop("centroid")
            cands.append(sel.Candidate(f"centroid:task={task}{excl}", "task-centroid", evidence=st))
        all_ids = members(lambda m: m["dataset"] != dataset)
        if all_ids:
            st = stats(all_ids)
            st.pop("centroid")
            cands.append(sel.Candidate(f"centroid:all{excl}" if excl else "centroid:all", "family-centroid", evidence=st))
        own = members(lambda m: dataset is not None and m["dataset"] == dataset)
        if own:
            ref = stats(own)["centroid"]
        datasets = sorted({by_id[i]["dataset"] for i in task_ids if by_id[i]["dataset"]})
        regions = []
        for d in datasets:
            st = stats(members(lambda m, d=d: m["dataset"] == d))
            c = st.pop("centroid")
            st["distance"] = float(distances(c, ref[None], sp.metric)[0]) if ref is not None else 0.0
            st["distance_to"] = f"dataset {dataset} region" if own else f"task {task} centroid"
            regions.append(sel.Candidate(f"centroid:dataset={d}", "dataset-centroid", evidence=st))
        regions.sort(key=lambda c: c.evidence["distance"])
        cands += regions[:neighbours]
        if probe_ex is not None:
            self._probe_candidates(cands, probe_ex, tp, folds, family, Path(base["uri"]))
        gains = sel.observed_gains(outcomes, task)
        ranked = sel.rank(cands, gains)
        basis = "observed runs and the paper's prior" if any(gains.get(c.category) for c in ranked if c.category != "base") \
            else "the paper's prior (no comparable runs in the store yet)"
        if probe_ex is not None:
            basis += f", with a linear probe of each start on {len(probe_ex)} examples of {Path(train).name}"
        return {"task": task, "dataset": dataset, "family": fam.name, "basis": basis, "runs_seen": len(outcomes),
                "candidates": [dict(c.as_dict(), rank=i + 1) for i, c in enumerate(ranked)]}

    def _probe_candidates(self, cands: list[Any], ex: Any, tp: Any, folds: int, family: str | None,
                          base_dir: Path) -> None:
        """Set each candidate's probe evidence and gain over the base (materializing centroids)."""
        from tqdm.auto import tqdm

        from zoo.finetune import probe_cv

        accs = {}
        for c in tqdm(cands, desc="probing starts", unit="start", disable=not self.progress, leave=False):
            row = self.resolve_start(c.start, family)
            res = probe_cv(Path(row["uri"]), [base_dir], ex, tp, folds=folds)
            accs[c.start] = res["probe_accuracy"]
            c.evidence.update(probe_accuracy=res["probe_accuracy"], probe_model=row["name"], probe_examples=res["n_examples"])
        ref = next(accs[c.start] for c in cands if c.category == "base")
        for c in cands:
            c.probe_gain = accs[c.start] - ref

    # ------------------------------------------------------------ map
    def map(self, out: str | os.PathLike, color_by: str = "dataset", family: str | None = None, method: str = "pca",
            space: int | None = None, kind: str | None = None, annotate: bool = True, seed: int = 0) -> dict[str, Any]:
        """Draw a 2-D projection of a family's sketches (PCA, or t-SNE where scikit-learn is installed)."""
        from zoo.plot import draw, project

        if color_by not in ("dataset", "task", "kind"):
            raise ZooValueError(f"--color-by {color_by!r} is not dataset, task or kind")
        with self._read() as conn:
            fam = self._family(conn, family)
            sp = self._pick_space(fam, space)
            ids = catalog.filtered_ids(conn, fam.id, kind=kind)
            mids, x = catalog.sketch_vectors(conn, sp.id, ids)
            meta = catalog.models_meta(conn, mids.tolist())
        if sp.metric == "cosine":  # cosine geometry: project directions, not lengths
            x = np.asarray(x, dtype=np.float64)
            n = np.linalg.norm(x, axis=1, keepdims=True)
            x = np.divide(x, n, out=np.zeros_like(x), where=n > 0)
        coords, explained = project(x, method, seed)
        names = [meta[int(i)]["name"] for i in mids]
        groups = [meta[int(i)][color_by] for i in mids]
        axes = f" (PC1 {explained[0]:.0%}, PC2 {explained[1]:.0%} of variance)" if explained else ""
        title = f"zoo map of family {fam.name}: {len(names)} models, {method.upper()} of d={sp.dim} sketches{axes}"
        path = draw(coords, names, groups, color_by, title, Path(out), annotate)
        return {"path": str(path), "family": fam.name, "method": method, "explained": explained, "color_by": color_by,
                "points": [{"name": n, color_by: g, "x": float(c[0]), "y": float(c[1])}
                           for n, g, c in zip(names, groups, coords)]}

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
        """Remove a model from the catalog. Files the zoo wrote itself (under ``checkpoints/``)
        are deleted too; registered checkpoints elsewhere stay where they are."""
        with self._write() as conn:
            m = catalog.model(conn, name)
            orphans = catalog.delete_model(conn, m["id"], force)
        path = Path(m["uri"])
        owned = self.checkpoints_dir.resolve() in path.resolve().parents
        if owned:
            shutil.rmtree(path, ignore_errors=True)
        self._after_write()
        return {"removed": m["name"], "id": m["id"], "detached_children": orphans, "deleted_files": str(path) if owned else None}

    def sql(self, query: str, limit: int | None = None) -> tuple[list[str], list[tuple]]:
        """Run read-only SQL on the catalog; (columns, rows)."""
        with self._read() as conn:
            return catalog.run_readonly(conn, query, limit)


class _Termination:
    """What `_sigterm_as_exit` saw: ``check()`` raises again if a SIGTERM came in, for the case
    where the handler's exception was raised inside a callback whose caller swallowed it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise SystemExit(f"terminated by signal {self.signum}")


@contextmanager
def _sigterm_as_exit() -> Iterator[_Termination]:
    """While inside, SIGTERM raises SystemExit in the main thread, so a killed run is recorded
    as failed; the previous handler is restored on the way out."""
    import signal
    import threading

    state = _Termination()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _handler(signum: int, frame: Any) -> None:
        state.signum = signum
        state.check()

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def _filled_note(names: list[str]) -> str:
    if not names:
        return ""
    return f"; {len(names)} base tensor(s) absent, counted as unchanged (e.g. {names[0]})"


def _now():
    import datetime as _dt

    return _dt.datetime.now()


def parse_region_spec(spec: str) -> dict[str, Any]:
    """``centroid:task=T,exclude_dataset=D`` -> keyword arguments of ``Zoo.centroid``."""
    body = spec.split(":", 1)[1]
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if part == "all":
            out["all_models"] = True
            continue
        k, _, v = part.partition("=")
        k = k.strip().replace("-", "_")
        if k not in ("task", "dataset", "exclude_dataset") or not v:
            raise ZooValueError(f"bad start spec {spec!r}: use centroid:task=T, centroid:dataset=D or centroid:all, "
                                "optionally with ,exclude_dataset=D")
        out[k] = v.strip()
    if not out or set(out) == {"exclude_dataset"}:
        raise ZooValueError(f"start spec {spec!r} names no region; e.g. centroid:task=sentiment,exclude_dataset=sst2")
    return out


def _check_linearity(p: "_Pending", sp: Space, want: np.ndarray) -> None:
    got = p.scan.raw[SpaceSpec.of(sp)] - sp.base_vec
    scale = max(float(np.linalg.norm(want)), float(np.linalg.norm(got)), 1e-12)
    err = float(np.linalg.norm(got - want)) / scale
    if err > 1e-4:
        raise ZooError(f"internal error: the sketch of {p.scan.header.path} differs from the weighted average of its "
                       f"members' sketches by {err:.2e} (relative, space {sp.id}); the merge is wrong, nothing was "
                       "registered; please report this")


def _union_body(fams: list[Family]) -> dict[str, tuple[int, ...]]:
    body: dict[str, tuple[int, ...]] = {}
    for f in fams:
        body.update(f.body)
    return body
