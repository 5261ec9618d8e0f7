"""Zoo: the facade every caller (CLI, Python, tests) uses. One short delegation per verb;
the work lives in the rooms: ``register``, ``lookup``, ``queries``, ``materialize``,
``runs`` and ``select``, over the ``store``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

from zoo import db
from zoo import results as r
from zoo.domain import DEFAULT_DIM, DEFAULT_METRIC, DEFAULT_SEED, check_meta
from zoo.results import AddResult
from zoo.store import Store, default_home

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from zoo.db import Conn
    from zoo.register import Edges

__all__ = ["Zoo", "AddResult", "default_home"]


class _Room:
    """A room module imported on first use: ``zoo ls`` never loads what ``zoo finetune`` needs."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(f"zoo.{self._name}"), attr)


doctor, lookup, materialize, queries, register, runs, select = (
    _Room(n) for n in ("doctor", "lookup", "materialize", "queries", "register", "runs", "select"))


class Zoo:
    """A model zoo on disk: ``catalog.duckdb`` (the truth), ``index/`` and ``checkpoints/``.

    The catalog is opened per call and closed at once, so long work never holds it.
    """

    def __init__(self, home: str | os.PathLike | None = None, progress: bool = False,
                 default_dim: int = DEFAULT_DIM, default_seed: int = DEFAULT_SEED, default_metric: str = DEFAULT_METRIC,
                 threads: int | None = None, catalog: str | os.PathLike | None = None,
                 store: str | os.PathLike | None = None):
        """``catalog``: a PostgreSQL URL (``postgresql://user@host/db``) or a DuckDB file (default
        ``$ZOO_CATALOG``, else ``catalog.duckdb`` in ``home``). ``store``: the folder of the
        weights and checkpoints, shareable by machines (default ``$ZOO_STORE``, else ``home``);
        the catalog records locations in it relative to it. ``threads`` fixes the CPU thread count of this process's compute (default: decided per
        verb from the CPUs free to it, see ``zoo.threads``; also ``ZOO_THREADS``)."""
        if threads is not None:
            from zoo.threads import set_override

            set_override(threads)
        self.store = Store(home, progress, default_dim, default_seed, default_metric, catalog, store)
        # Only a zoo with write-backs waiting loads the fine-tuning room at open.
        self.store.on_open = lambda: self.store.pending() and runs.finish_pending(self.store)

    home = property(lambda self: self.store.home, doc="The zoo's directory.")
    catalog_path = property(lambda self: self.store.catalog_path, doc="The catalog file (DuckDB catalogs only).")
    catalog = property(lambda self: self.store.catalog_name, doc="The catalog: its file, or its URL without password.")
    index_dir = property(lambda self: self.store.index_dir, doc="The FAISS index files (derived from the catalog).")
    checkpoints_dir = property(lambda self: self.store.checkpoints_dir, doc="Checkpoints zoo wrote itself.")

    def session(self, write: bool = True) -> Any:
        """A context manager for a batch of calls (a script's loop of ``add``, a notebook cell):
        the catalog is opened and its schema checked once for all of them, and the FAISS
        indexes are written once at the end. Other processes wait while it is open
        (``ZOO_LOCK_TIMEOUT``), so keep long work (fine-tuning) outside it."""
        return self.store.hold(write)

    # ------------------------------------------------------------ the zoo and its models
    def init(self) -> r.Init:
        """Create the zoo directory and catalog (idempotent)."""
        self.store.ensure()
        self.index_dir.mkdir(exist_ok=True)
        self.checkpoints_dir.mkdir(exist_ok=True)
        return r.Init(str(self.home), self.catalog, db.SCHEMA_HEAD)

    def add(self, paths: Sequence[str | os.PathLike], name: str | None = None, base: str | None = None,
            dataset: str | None = None, task: str | None = None, seed: int | None = None,
            meta: dict[str, Any] | None = None, kind: str | None = None, lineage: Edges = (),
            expected: dict[int, np.ndarray] | None = None,
            on_commit: Callable[[Conn, list[AddResult]], None] | None = None,
            in_place: bool = False, ray: str | None = None) -> list[AddResult]:
        """Register checkpoints: one streaming pass each, then one transaction for all.

        A checkpoint that fits no family, or is given ``kind="base"`` (a second pretrained
        model of the same architecture), founds a family. Otherwise it joins the family of
        ``base`` or the family it fits; when several fit, the nearest base by sketch
        distance is taken if it is clearly nearest. Same weights twice: the existing model
        is returned with ``created=False``. Either every path is registered or none is.
        ``meta`` may not set the keys zoo writes itself (``zoo.domain.RESERVED_META``).

        The zoo owns what it registers: each checkpoint's files are hard-linked (or copied,
        across filesystems) into ``weights/<content hash>`` and read from there, so moving or
        deleting the source changes no answer. ``in_place`` references very large checkpoints
        where they are instead; their files' size and time are then checked before every read.

        ``ray``: the passes run as tasks on a Ray cluster — ``"local"`` starts one on this
        machine, an address (``ray://HOST:10001``, ``"auto"``) joins one; the results, sketches
        and hashes are the same as without it (``zoo.fanout``).
        """
        return register.add(self.store, paths, name, base, dataset, task, seed, check_meta(meta), kind, lineage, expected,
                            on_commit, in_place, ray)

    def add_from_cache(self, cache: str | os.PathLike | None = None, dataset: str | None = None,
                       task: str | None = None) -> r.CacheScan:
        """Register every model of the Hugging Face cache (``cache``, default huggingface_hub's)
        that fits one of the zoo's families; never downloads. The others are listed as skipped."""
        return register.add_from_cache(self.store, cache, dataset, task)

    def rm(self, name: str, force: bool = False) -> r.Removed:
        """Remove a model from the catalog. Files the zoo wrote itself (under ``checkpoints/``)
        are deleted too; registered checkpoints elsewhere stay where they are."""
        return register.rm(self.store, name, force)

    def set(self, name: str, new_name: str | None = None, dataset: str | None = None, task: str | None = None,
            seed: int | None = None, meta: dict[str, Any] | None = None) -> r.Edited:
        """Edit a model's name, dataset, task, seed or metadata keys ('' clears dataset or task)."""
        return register.edit(self.store, name, new_name, dataset, task, seed, meta)

    def relocate(self, name: str, path: str | os.PathLike) -> r.Edited:
        """Point a model at its checkpoint's new place (the weights must hash as registered)."""
        return register.relocate(self.store, name, path)

    def space_add(self, family: str | None = None, dim: int = DEFAULT_DIM, seed: int = DEFAULT_SEED,
                  metric: str = DEFAULT_METRIC, tensor_filter: str | None = None) -> r.SpaceAdded:
        """Add a sketch space to a family and backfill the sketches of its models (one read each)."""
        return register.space_add(self.store, family, dim, seed, metric, tensor_filter)

    def spaces(self) -> list[dict[str, Any]]:
        """Sketch spaces with their family and model count."""
        return lookup.spaces(self.store)

    def doctor(self, repair: bool = False) -> r.Checkup:
        """Check catalog, weight store, checkpoints and indexes against each other; ``repair``
        mends what it can (re-links changed store copies from their source, removes orphans,
        rebuilds indexes)."""
        return doctor.doctor(self.store, repair)

    def reindex(self) -> list[dict[str, Any]]:
        """Rebuild every space's FAISS index from the catalog."""
        return self.store.reindex()

    def ls(self, family: str | None = None, dataset: str | None = None, task: str | None = None,
           kind: str | None = None, search: str | None = None, sort: str = "id", descending: bool = False,
           limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Models, filtered by family name, dataset, task, kind and ``search`` (a substring of the
        name, dataset, task or family, any case); sorted by ``sort`` (missing values last, then
        by id), ``limit`` of them from ``offset``."""
        return lookup.ls(self.store, family, dataset, task, kind, search, sort, descending, limit, offset)

    def count(self, family: str | None = None, dataset: str | None = None, task: str | None = None,
              kind: str | None = None, search: str | None = None) -> int:
        """How many models ``ls`` lists with these filters (the total behind a page of them)."""
        return lookup.count(self.store, family, dataset, task, kind, search)

    def show(self, name: str) -> dict[str, Any]:
        """A model's row, family, parents, children, evaluations and sketch norms."""
        return lookup.show(self.store, name)

    def lineage(self, name: str) -> r.Lineage:
        """The tree above (ancestors) and below (descendants) a model."""
        return lookup.lineage(self.store, name)

    def runs(self, status: str | None = None, limit: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Fine-tuning runs, newest first, with start and result names and the eval accuracy
        (``model``: the runs that started from it or made it)."""
        return lookup.runs(self.store, status, limit, model)

    def snapshot(self, out: str | os.PathLike | None = None) -> r.Snapshot:
        """Write a read-only copy of the catalog for outside tools (default ``snapshot.duckdb`` in
        the home, then refreshed after every change): reading it never blocks zoo."""
        return lookup.snapshot(self.store, out)

    def sql(self, query: str, limit: int | None = None, timeout: float | None = None) -> tuple[list[str], list[tuple]]:
        """Run one read-only query on the catalog, sandboxed (no files, no writes; ``timeout``
        seconds, default 30); (columns, rows)."""
        return lookup.sql(self.store, query, limit, timeout)

    # ------------------------------------------------------------ geometry
    def nearest(self, target: str, k: int = 5, dataset: str | None = None, task: str | None = None,
                kind: str | None = None, metric: str | None = None, space: int | None = None,
                family: str | None = None, rerank: int | None = None) -> r.Neighbours:
        """The k models nearest to a model name or a checkpoint path (sketched on the fly, not
        registered); ``rerank`` > 0 ranks the ``max(k, rerank)`` nearest sketches again by
        exact distance from their weights. By default (None) the top max(2k, 10) are re-ranked
        when reading them costs at most ``ZOO_RERANK_BYTES`` (2 GiB), else the sketch answers;
        0 is the sketch answer (milliseconds)."""
        return queries.nearest(self.store, target, k, dataset, task, kind, metric, space, family, rerank)

    def distance(self, a: str, b: str, exact: bool = False, space: int | None = None) -> r.Distance:
        """Cosine and L2 distance between two models' task vectors: sketch estimate, or exact from weights."""
        return queries.distance(self.store, a, b, exact, space)

    def region(self, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
               family: str | None = None, metric: str | None = None, space: int | None = None,
               exclude_dataset: str | None = None, all_models: bool = False) -> r.Region:
        """Members, centroid (exact by linearity) and spread of a region in sketch space."""
        return queries.region(self.store, dataset, task, names, family, metric, space, exclude_dataset, all_models)

    def inside(self, target: str, dataset: str | None = None, task: str | None = None,
               names: Sequence[str] | None = None, family: str | None = None, metric: str | None = None,
               space: int | None = None) -> r.Inside:
        """Whether a model or checkpoint lies inside a region (see geometry.inside_score for the rule)."""
        return queries.inside(self.store, target, dataset, task, names, family, metric, space)

    def clusters(self, k: int, family: str | None = None, metric: str | None = None, space: int | None = None,
                 seed: int = 0, kind: str | None = "finetune", exact: bool = False) -> r.Clusters:
        """faiss k-means on sketches (``exact``: on exact task vectors), with purity against dataset and task."""
        return queries.clusters(self.store, k, family, metric, space, seed, kind, exact)

    def fidelity(self, k: int = 5, rerank: Sequence[int] = (20,), family: str | None = None,
                 kind: str | None = "finetune") -> r.Fidelity:
        """How far sketch answers agree with exact ones on this zoo: per sketch space (and per
        re-rank depth), kNN@k overlap with the exact neighbours, 1-NN same-dataset agreement
        and the rank correlation of pairwise distances. Reads every model's weights once."""
        return queries.fidelity(self.store, k, rerank, family, kind)

    def map(self, out: str | os.PathLike, color_by: str = "dataset", family: str | None = None, method: str = "pca",
            space: int | None = None, kind: str | None = None, annotate: bool = True, seed: int = 0) -> r.Map:
        """Draw a 2-D projection of a family's sketches (PCA, or t-SNE where scikit-learn is installed)."""
        return queries.draw_map(self.store, out, color_by, family, method, space, kind, annotate, seed)

    def map_points(self, family: str | None = None, method: str = "pca", space: int | None = None,
                   kind: str | None = None, seed: int = 0, max_points: int | None = None) -> r.MapPoints:
        """The map's coordinates without drawing it: each model's 2-D point, name, kind, dataset,
        task; at most ``max_points`` of them (a uniform, seeded sample of a larger family)."""
        return queries.map_points(self.store, family, method, space, kind, seed, max_points)

    def serve(self, host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
              on_ready: Any = None) -> None:
        """Serve the web pages and their JSON API (zoo.web) until interrupted, read-only.
        Hosts other than localhost need ``allow_remote``; ``on_ready(url, warning)`` hears
        where it listens."""
        from zoo import web

        web.serve(self, host, port, allow_remote, on_ready)

    # ------------------------------------------------------------ materialize
    def centroid(self, dataset: str | None = None, task: str | None = None, names: Sequence[str] | None = None,
                 all_models: bool = False, exclude_dataset: str | None = None, weights: Sequence[float] | None = None,
                 dirichlet: float | None = None, seed: int = 0, out: str | None = None,
                 family: str | None = None, rank: int | None = None, merged: bool = False) -> r.Materialized:
        """Materialize the (weighted) average of a region's members as a checkpoint and register it.

        Weights default to uniform; ``dirichlet`` samples a random point of the convex hull.
        The same member set and weights materialized before are returned from the catalog.
        LoRA adapters on one parent average into a PEFT adapter: exact (their factors
        concatenated, rank Σr), or ``rank`` r by truncated SVD (the relative error is in the
        note); ``merged`` writes a full checkpoint instead, as does a mix with full models.
        """
        return materialize.centroid(self.store, dataset, task, names, all_models, exclude_dataset, weights, dirichlet,
                                    seed, out, family, rank, merged)

    def interpolate(self, a: str, b: str, alpha: float, extrapolate: bool = False, out: str | None = None,
                    rank: int | None = None, merged: bool = False) -> r.Materialized:
        """Materialize (1 - alpha) A + alpha B (alpha outside [0, 1] needs ``extrapolate``);
        ``rank``/``merged`` as for ``centroid``."""
        return materialize.interpolate(self.store, a, b, alpha, extrapolate, out, rank, merged)

    def export(self, name: str, dest: str | os.PathLike) -> r.Exported:
        """Copy a model's checkpoint to a new folder ``dest`` (loadable with transformers)."""
        return materialize.export(self.store, name, dest)

    def resolve_start(self, start: str, family: str | None = None) -> dict[str, Any]:
        """A model row for START: a model name, ``base``, or a region spec (materialized first)."""
        return materialize.resolve_start(self.store, start, family)

    # ------------------------------------------------------------ runs
    def finetune(self, start: str, train: str | os.PathLike, eval: str | os.PathLike | None = None,
                 dataset: str | None = None, task: str | None = None, out: str | None = None,
                 family: str | None = None, step_hook: Callable[[int], None] | None = None,
                 **params: Any) -> r.Finetuned:
        """Fine-tune from START, evaluate, and register the result with a run row and evaluations.

        ``params`` are ``zoo.finetune.TrainParams`` fields. The catalog is open only to record
        the run's start and its end; a failure marks the run failed and registers nothing.
        """
        return runs.finetune(self.store, start, train, eval, dataset, task, out, family, step_hook, **params)

    def finetune_plan(self, plan: str | os.PathLike | Sequence[dict[str, Any]],
                      on_done: Callable[[r.Finetuned], Any] | None = None, **defaults: Any) -> list[r.Finetuned]:
        """Several fine-tunes in this process (torch and transformers imported once): ``plan`` is a
        JSON Lines file (or the objects), one run an object with ``from``, ``train`` and optionally
        ``eval``, ``dataset``, ``task``, ``out``, ``family`` and TrainParams fields; ``defaults``
        (the same keys, ``from`` spelled ``start``) fill what a line leaves out. Every line is
        checked before the first run; a failing run stops the plan, naming its line. ``on_done``
        hears each result as its run finishes."""
        return runs.finetune_plan(self.store, plan, on_done, **defaults)

    def evaluate(self, name: str, data: str | os.PathLike, train: str | os.PathLike | None = None,
                 split: str = "test", dataset: str | None = None, probe: bool = False, **params: Any) -> r.Evaluation:
        """Accuracy of a model on a data file, recorded in ``evaluations``: through its head
        when it has the data's label space, else (or always, with ``probe``) a linear probe
        on its frozen body."""
        return self.evaluate_many([name], data, train, split, dataset, probe, **params)[0]

    def evaluate_many(self, names: Sequence[str], data: str | os.PathLike, train: str | os.PathLike | None = None,
                      split: str = "test", dataset: str | None = None, probe: bool = False,
                      **params: Any) -> list[r.Evaluation]:
        """``evaluate`` for several models on one data file (read once; every name checked first)."""
        return runs.evaluate_many(self.store, names, data, train, split, dataset, probe, **params)

    def select_start(self, task: str, dataset: str | None = None, family: str | None = None,
                     neighbours: int = 3, train: str | os.PathLike | None = None, examples: int = 128,
                     folds: int = 4, min_gain: float = 0.0, mixture: bool = True, mix_budget: int = 40,
                     mix_regions: int = 10, **params: Any) -> r.Starts:
        """Recommend a starting point for fine-tuning on ``dataset`` of ``task`` (see zoo.select).

        The base unless evidence about the target says otherwise: with ``train``, every
        candidate is materialized and fine-tuned briefly (``params``) on ``folds`` folds of up
        to ``examples`` of its examples, scored on the held-out fold against the base; the
        store's runs on ``dataset`` count too. A start is recommended when its gain clears 1.645
        standard errors above ``min_gain`` (a fraction of accuracy); when none does, ``resolution``
        says what gain the evidence could have confirmed. With ``train`` and
        ``mixture``, a mixture of the base and up to ``mix_regions`` dataset regions, the
        best by LogME of ``mix_budget`` label-free mixtures (zoo.mixture), is one more candidate.
        """
        return select.select_start(self.store, task, dataset, family, neighbours, train, examples, folds, min_gain,
                                   mixture, mix_budget, mix_regions, **params)
