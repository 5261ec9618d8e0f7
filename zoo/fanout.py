"""Registration's reading, hashing and sketching fanned out over a Ray cluster.

``zoo add PATHS --ray [ADDRESS]``: the driver links each checkpoint into the store (cheap),
Ray tasks run the one streaming pass and the family decision (``register.plan``, pure given
the families the batch started with) on the cluster's workers, results stream back as they
finish (a progress bar counts them), and the driver names, settles and commits the batch in
one transaction as a plain ``zoo add`` does. The kernels sum in a fixed order, so sketches
and hashes are bit-identical to a plain add. A task whose worker dies is retried on another
(``max_retries``); an error in the checkpoint itself is not retried and fails the batch.

Adapters (their sketch needs the parent's row) and a checkpoint whose family this same batch
founds are planned on the driver. Workers read the store's copy by its path: on a cluster of
several machines the zoo's home must be on storage every machine mounts at the same path, and
zoo installed in the workers' environment.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from zoo.domain import env_number
from zoo.errors import ZooError, ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    from zoo.register import Pending, _Batch
    from zoo.store import Store

# A worker lost mid-task (killed, its node gone): Ray runs the task again elsewhere this often.
RETRIES = 3
# The raylet's setting for the workers' nice value (Ray's own default is 15).
NICENESS = "RAY_worker_niceness"


def _plan_remote(header: Any, snapshot: tuple) -> "Pending":
    """On a worker: the pass over one staged checkpoint and its family decision."""
    from zoo.register import plan

    fams, base_names, base_row, kind, default_space = snapshot
    return plan(header, fams, base_names, base_row, kind, default_space)


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to), or start a
    local one ("local" or None: ``ZOO_RAY_CPUS`` CPUs, default all). True when this call started
    Ray (the caller shuts it down again)."""
    try:
        import ray
    except ImportError:
        raise ZooValueError("--ray needs the ray package: pip install 'zoo[ray]' (or pip install ray)") from None

    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address in (None, "", "local"):
            # Ray starts workers niced (15): beside two busy processes a 1-CPU local cluster
            # ingested 16 checkpoints in 34 s against 2.2 s for a plain add. They do the
            # user's foreground work here, so they run at the priority of the command.
            os.environ.setdefault(NICENESS, "0")
            cpus = env_number("ZOO_RAY_CPUS", 0, int)
            ray.init(num_cpus=cpus or None, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ZooValueError(f"--ray {address!r}: cannot join the Ray cluster ({str(e).splitlines()[0][:200]}); give "
                            "its address (ray://HOST:10001, or auto on a node of it), or --ray alone for a local one") from None
    return True


def _as_completed(futures: dict[Any, int]) -> Iterator[tuple[int, Any]]:
    """(file index, result ref) in the order tasks finish."""
    import ray

    left = list(futures)
    while left:
        done, left = ray.wait(left, num_returns=1)
        yield futures[done[0]], done[0]


def plan_on_ray(store: "Store", files: Sequence[Path], batch: "_Batch", name: str | None, kind: str | None,
                in_place: bool, made: list[Path], fields: Callable[[], dict[str, Any]], hub_refs: dict[Path, Any],
                address: str | None) -> list["Pending"]:
    """The batch's pending registrations, their passes run as Ray tasks."""
    import ray

    from zoo.adapter import is_adapter
    from zoo.register import _as_source, _scan_one, stage_one

    started = connect(address)
    try:
        remote = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_plan_remote)
        snapshot = ray.put((batch.fams, batch.base_names, batch.base_row, kind, store.default_space))
        staged, futures = {}, {}
        for i, path in enumerate(files):
            if not is_adapter(path):
                staged[i] = stage_one(store, path, in_place, made)
                futures[remote.remote(staged[i][2], snapshot)] = i
        planned = {}
        bar = store.bar(range(len(futures)), "sketching on ray")
        for (i, ref), _ in zip(_as_completed(futures), bar):
            try:
                planned[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(getattr(e, "cause", None), ZooError) else None
                if cause is None:
                    raise
                with _as_source(staged[i][1], staged[i][0].path):
                    raise cause from None
        bar.close()
        return [_scan_one(store, path, batch, name, kind, in_place, made, fields(), hub_refs.get(path.absolute()),
                          staged.get(i), planned.get(i)) for i, path in enumerate(files)]
    finally:
        if started:
            ray.shutdown()
            os.environ.pop("RAY_ADDRESS", None)
