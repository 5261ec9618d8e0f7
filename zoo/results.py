"""Typed results of the verbs.

Python callers read attributes (``res.results``, ``res.stats``); ``as_dict()`` gives the
plain dict that ``--json`` prints, key for key. ``res["key"]`` and ``"key" in res`` read
like the dicts these replace, so code written against the dicts keeps working.

Rows (models, neighbours, members, candidates, runs) stay plain dicts: they are catalog
records, as in sqlite-utils, not objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator


@dataclass
class Result:
    """Base of every verb's result."""

    # Fields left out of ``as_dict`` while None (optional parts of a result).
    optional: ClassVar[tuple[str, ...]] = ()
    # A dict field whose keys are spliced into ``as_dict`` (open-ended metrics).
    flatten: ClassVar[str | None] = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == self.flatten:
                out.update(v)
            elif not (v is None and f.name in self.optional):
                out[f.name] = v
        return out

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def keys(self) -> Any:
        return self.as_dict().keys()


@dataclass
class AddResult(Result):
    """``zoo add``: one registered (or recognised) checkpoint."""

    name: str
    id: int
    created: bool
    kind: str
    family: str
    note: str = ""


@dataclass
class Edited(Result):
    """``zoo set``: what changed on a model, old and new values."""

    name: str
    id: int
    changed: dict[str, dict[str, Any]]


@dataclass
class Snapshot(Result):
    """``zoo snapshot``: the file written for outside readers and what it holds."""

    path: str
    models: int
    bytes: int
    refreshed_after_changes: bool


@dataclass
class Exported(Result):
    """``zoo export``: the folder written and its files."""

    name: str
    path: str
    files: list[str]
    bytes: int


@dataclass
class Checkup(Result):
    """``zoo doctor``: what was checked, each problem found and whether it was repaired."""

    ok: bool
    checked: dict[str, int]
    problems: list[dict[str, Any]]


@dataclass
class Init(Result):
    """``zoo init``: where the zoo is and its schema revision."""

    home: str
    catalog: str
    schema: str


@dataclass
class Removed(Result):
    """``zoo rm``: the model removed, children detached (with --force), files deleted."""

    removed: str
    id: int
    detached_children: list[str]
    deleted_files: str | None


@dataclass
class SpaceAdded(Result):
    """``zoo space add``: the new space and how many sketches were backfilled."""

    id: int
    family: str
    dim: int
    seed: int
    metric: str
    backfilled: int


@dataclass
class Neighbours(Result):
    """``zoo nearest``: ranked rows (rank, name, id, distance, kind, dataset, task)."""

    query: str
    registered: bool
    family: str
    space_id: int
    metric: str
    search: str
    results: list[dict[str, Any]]


@dataclass
class Distance(Result):
    """``zoo distance``: the sketch estimate and, when asked, the exact value from weights."""

    optional: ClassVar[tuple[str, ...]] = ("exact", "relative_error_l2")

    a: str
    b: str
    family: str
    space_id: int
    dim: int
    sketch: dict[str, float]
    exact: dict[str, float] | None = None
    relative_error_l2: float | None = None


@dataclass
class Region(Result):
    """``zoo region``: members with their distances, spread statistics, the centroid sketch."""

    family: str
    space_id: int
    metric: str
    n: int
    members: list[dict[str, Any]]
    stats: dict[str, float]
    centroid: list[float]


@dataclass
class Inside(Result):
    """``zoo inside``: distance to the region's centroid against its threshold."""

    distance: float
    threshold: float
    score: float
    inside: bool
    percentile: float
    target: str
    family: str
    metric: str
    n_members: int
    region: dict[str, Any]


@dataclass
class CacheScan(Result):
    """``zoo add --scan-cache``: the cache read, the models added (with repo id and commit), and
    the repositories skipped with why."""

    cache: str
    added: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


@dataclass
class Fidelity(Result):
    """``zoo fidelity``: how sketch answers agree with exact ones, one row per query path."""

    family: str
    metric: str
    n: int
    k: int
    settings: list[dict[str, Any]]


@dataclass
class Clusters(Result):
    """``zoo clusters``: assignments, clusters and purity against dataset and task."""

    family: str
    space_id: int | None
    exact: bool
    metric: str
    k: int
    n: int
    purity_dataset: float
    purity_task: float
    assignments: list[dict[str, Any]]
    clusters: list[dict[str, Any]]


@dataclass
class Map(Result):
    """``zoo map``: the image written and each model's point."""

    path: str
    family: str
    method: str
    explained: list[float]
    color_by: str
    points: list[dict[str, Any]]


@dataclass
class MapPoints(Result):
    """A family's 2-D map: each model's point with its name, kind, dataset and task."""

    family: str
    space_id: int
    dim: int
    method: str
    explained: list[float]
    points: list[dict[str, Any]]
    total: int  # the family's models of that kind: more than the points when they are a sample


@dataclass
class Materialized(Result):
    """``zoo centroid`` / ``zoo interpolate``: the model written (or found) and its members."""

    name: str
    id: int
    created: bool
    kind: str
    path: str
    members: list[str]
    weights: list[float]
    note: str


@dataclass
class Finetuned(Result):
    """``zoo finetune``: the run, the registered result, and the training metrics (spliced in)."""

    flatten: ClassVar[str | None] = "metrics"

    run_id: int
    name: str
    id: int
    start: str
    start_kind: str
    dataset: str
    task: str | None
    device: str
    path: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation(Result):
    """``zoo eval``: one model's score on one data file (how it was scored spliced in)."""

    flatten: ClassVar[str | None] = "score"

    name: str
    dataset: str
    split: str
    score: dict[str, Any] = field(default_factory=dict)


@dataclass
class Starts(Result):
    """``zoo select-start``: the recommended start, why, and every candidate with its evidence."""

    task: str
    dataset: str | None
    family: str
    basis: str
    runs_seen: int
    recommended: str
    reason: str
    candidates: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    resolution: dict[str, Any] | None = None  # what the evidence could confirm, when the base was kept


@dataclass
class Lineage(Result):
    """``zoo lineage``: edges above and below a model, with depth."""

    name: str
    ancestors: list[dict[str, Any]]
    descendants: list[dict[str, Any]]
