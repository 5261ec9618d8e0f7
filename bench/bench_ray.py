"""Ingest throughput: the same 16 checkpoints registered with a plain ``zoo add`` and with
``zoo add --ray`` on a local Ray cluster of 1 and of 2 worker CPUs, side by side in one run.

The checkpoints are MiniLM-shaped fine-tunes (the real base plus noise, 91 MB each). Each
setting registers all 16 into a fresh zoo holding the base, in one call (one transaction);
the Ray cluster is started, and its workers warmed by a small ingest, before the clock
starts (start-up is reported apart: a team keeps its cluster running). Sketches and hashes are checked identical across the settings.

    python bench/bench_ray.py [--n 16] [--repeat 2] [--busy 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_register import make_finetune_of  # noqa: E402
from common import base_model_dir, write  # noqa: E402
from zoo.fanout import NICENESS  # noqa: E402


def ingest(home: Path, paths: list[Path], ray: str | None) -> tuple[float, dict]:
    from zoo import Zoo

    z = Zoo(home)
    z.add([base_model_dir()], name="base")
    t = time.perf_counter()
    z.add(paths, ray=ray)
    took = time.perf_counter() - t
    _, rows = z.sql("SELECT m.content_hash, s.vec FROM sketches s JOIN models m ON m.id = s.model_id ORDER BY 1")
    return took, {r[0]: tuple(r[1]) for r in rows}


def main() -> None:
    import ray

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--busy", type=int, default=0)
    a = ap.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        with tempfile.TemporaryDirectory() as t:
            tmp = Path(t)
            paths = [make_finetune_of(base_model_dir(), tmp / f"ft{i}", seed=i) for i in range(a.n)]
            times: dict[str, list[float]] = {"plain": [], "ray1": [], "ray2": []}
            starts: dict[str, float] = {}
            ref = None
            for rep in range(a.repeat):
                for setting in times:  # alternating, so drift hits all three alike
                    if setting != "plain":
                        t0 = time.perf_counter()
                        os.environ.setdefault(NICENESS, "0")  # as zoo's own local cluster (zoo.fanout)
                        ray.init(num_cpus=int(setting[-1]), include_dashboard=False, log_to_driver=False)
                        starts[setting] = time.perf_counter() - t0
                        # Workers that have imported zoo and loaded the numba kernels, as in a
                        # cluster that stays up: a cold worker pays ~1 s for that once.
                        ingest(tmp / f"warm-{setting}-{rep}", paths[:4], "auto")
                    try:
                        took, sk = ingest(tmp / f"{setting}-{rep}", paths, "auto" if setting != "plain" else None)
                    finally:
                        if setting != "plain":
                            ray.shutdown()
                    ref = ref or sk
                    if sk != ref:
                        raise SystemExit(f"{setting}: sketches or hashes differ from the plain add")
                    times[setting].append(took)
                    print(f"{setting}: {took:.2f} s", flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = {k: {"seconds": v, "ckpt_per_s": a.n / v, "vs_plain": med["plain"] / v} for k, v in med.items()}
    write(f"ray{'-busy' + str(a.busy) if a.busy else ''}", {"n": a.n, "repeat": a.repeat, "busy": a.busy, "rows": rows,
                                                           "ray_start_s": starts, "identical": True})
    for k, r in rows.items():
        print(f"| {k} | {r['seconds']:.2f} s | {r['ckpt_per_s']:.2f} ckpt/s | {r['vs_plain']:.2f}x plain |")


if __name__ == "__main__":
    main()
