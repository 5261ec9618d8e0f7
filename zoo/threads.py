"""How many threads zoo's compute uses: decided here, for every verb, from the CPUs this
process may really use.

Why: torch (intra-op OpenMP + MKL), numba (its own OpenMP pool) and the BLAS behind numpy
and FAISS each start one thread per core and spin-wait between parallel regions. On a
quiet machine that is fastest; beside other busy processes the spinning threads take
turns with them and a fine-tune ran 3-14x slower than on one thread (issue 13, and
bench/bench_threads.py). So every verb asks ``governor(work)`` for a thread count:

* CPUs available = the affinity mask, capped by a cgroup CPU quota (containers, CI);
* minus the runnable threads of *other* processes right now (``/proc/stat``'s
  ``procs_running`` less this process's own running threads), rounded, at least one;
* at most one thread per ``MIN_WORK_PER_THREAD`` elements of work (a tiny model's
  parallel regions cost more to synchronise than they save);
* ``--threads N`` on the CLI or ``ZOO_THREADS=N`` overrides all of it.

A long run (training) re-decides from a rolling window of samples taken as it goes
(``Governor.tick``), so a neighbour that starts mid-run takes threads away, and gives
them back when it ends. When other work is already running at the start and the OpenMP
runtime is not loaded yet, its spin-wait is shortened (``GOMP_SPINCOUNT``) unless the
user set a wait policy.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Callable

from zoo.errors import ZooValueError

ENV = "ZOO_THREADS"
# Below this many elements per thread, a parallel region costs more than it saves.
MIN_WORK_PER_THREAD = 1 << 19
# A long run re-decides at most this often (seconds), from the last WINDOW samples.
RECHECK_S = 2.0
WINDOW = 5
# The spin count libgomp uses when it finds more threads than CPUs; applied when the
# process starts beside busy neighbours.
LOADED_SPINCOUNT = "1000"

_override: int | None = None
_applied: dict[str, object] = {}  # the count last decided, and what the BLAS/OpenMP pools were last set to


def set_override(n: int | None) -> None:
    """Fix the thread count for this process (the CLI's ``--threads``); None returns to the automatic choice."""
    global _override
    _override = check_threads(n) if n is not None else None


def check_threads(n: object, what: str = "--threads") -> int:
    """A positive thread count, or ZooValueError naming the bad value."""
    try:
        v = int(str(n).strip())
    except ValueError:
        v = 0
    if v < 1 or str(n).strip() != str(v):
        raise ZooValueError(f"{what} must be a whole number of threads, 1 or more, got {n!r}")
    return v


def requested() -> int | None:
    """The user's fixed thread count: ``set_override`` (``--threads``), else ``ZOO_THREADS``, else None."""
    if _override is not None:
        return _override
    raw = os.environ.get(ENV, "").strip()
    return check_threads(raw, ENV) if raw else None


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> float:
    """CPUs this process may run on: its affinity mask, capped by the cgroup quota."""
    try:
        n = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        n = float(os.cpu_count() or 1)
    q = cpu_quota()
    return max(1.0, min(n, q)) if q else n


def _own_running() -> int:
    n = 0
    try:
        for task in os.scandir("/proc/self/task"):
            try:
                with open(f"{task.path}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] == b"R":
                        n += 1
            except (OSError, IndexError):
                pass
    except OSError:
        return 1
    return max(n, 1)


def busy_elsewhere() -> float | None:
    """Runnable threads of other processes at this instant (None where /proc does not tell)."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"procs_running"):
                    return float(max(0, int(line.split()[1]) - _own_running()))
    except (OSError, ValueError, IndexError):
        pass
    return None


def choose_threads(cpus: float, busy: float, work: float | None = None, override: int | None = None) -> int:
    """Threads for work of ``work`` elements on ``cpus`` CPUs while ``busy`` other threads run.

    Pure: the same inputs give the same count (tested on a grid). The free CPUs are
    rounded half-up, since a half-busy CPU still serves a thread well.
    """
    if override is not None:
        return max(1, int(override))
    free = max(1.0, cpus - max(0.0, busy))
    n = max(1, min(int(math.floor(cpus)), int(math.floor(free + 0.5))))
    if work is not None:
        n = min(n, max(1, int(work // MIN_WORK_PER_THREAD)))
    return n


def current() -> int | None:
    """The count last decided in this process (``zoo.kernels`` applies it when numba loads)."""
    return _applied.get("zoo")


def apply(n: int) -> None:
    """Set the thread count of every runtime zoo computes with that is loaded in this process:
    torch (intra-op and MKL), numba, and the BLAS/OpenMP pools threadpoolctl finds."""
    import sys

    _applied["zoo"] = n
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:  # asked each time: other code may have set it
            torch.set_num_threads(n)
    if "numba" in sys.modules:
        import numba

        want = min(n, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() != want:
            numba.set_num_threads(want)
    loaded = tuple(m for m in ("numpy", "faiss", "torch", "numba") if m in sys.modules)
    if _applied.get("pools") != (n, loaded):
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        _applied["pools"] = (n, loaded)  # type: ignore[assignment]


def _shorten_spin(busy: float | None) -> None:
    """Neighbours already busy and OpenMP not loaded yet: shorten its spin-waits (unless the user chose)."""
    import sys

    if busy and "torch" not in sys.modules and "numba" not in sys.modules:
        if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = LOADED_SPINCOUNT


class Governor:
    """The thread count of one verb's compute: decided at the start, re-decided by ``tick``."""

    def __init__(self, work: float | None = None, samples: int = 3,
                 clock: Callable[[], float] = time.monotonic, probe: Callable[[], float | None] = busy_elsewhere):
        self.work, self.clock, self.probe = work, clock, probe
        self.fixed = requested()
        self.cpus = available_cpus()
        self.window: deque[float] = deque(maxlen=WINDOW)
        for i in range(samples if self.fixed is None else 0):
            b = probe()
            if b is not None:
                self.window.append(b)
            if i + 1 < samples:
                time.sleep(0.002)
        _shorten_spin(self.busy if self.window else None)
        self.threads = self.decide()
        self.changes = 0
        self._last = clock()
        apply(self.threads)

    @property
    def busy(self) -> float:
        return statistics.median(self.window) if self.window else 0.0

    def decide(self) -> int:
        return choose_threads(self.cpus, self.busy, self.work, self.fixed)

    def tick(self) -> int:
        """Sample the load once; every ``RECHECK_S`` seconds re-decide (and apply) the count."""
        if self.fixed is not None:
            return self.threads
        b = self.probe()
        if b is not None:
            self.window.append(b)
        now = self.clock()
        if now - self._last >= RECHECK_S and len(self.window) >= 2:
            self._last = now
            n = self.decide()
            if n != self.threads:
                self.threads, self.changes = n, self.changes + 1
                apply(n)
        return self.threads


def governor(work: float | None = None, samples: int = 3) -> Governor:
    """Decide and apply the thread count for ``work`` elements (see the module docstring)."""
    return Governor(work, samples)
