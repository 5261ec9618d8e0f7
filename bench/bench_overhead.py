"""Fixed costs, quiet and with two busy processes beside: CLI start-up against ``import duckdb``,
and ``Zoo.add`` of one fine-tune into an existing family against a bare read of its file.

* CLI: wall time of ``zoo ls`` on a zoo with one model, ``zoo --help`` and
  ``python -c "import duckdb"``, each a fresh process (median of ``--repeat``).
* add: a MiniLM-shaped fine-tune (the real base plus noise, 91 MB) added with ``Zoo.add``
  (one call: opens the catalog, checks the schema, writes the index), and inside
  ``Zoo.session()`` (a batch: those paid once); the bare read is ``safe_open`` +
  ``get_tensor`` of every tensor of the same file, timed alternately in the same process.

    python bench/bench_overhead.py [--repeat 7] [--loads quiet spin2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_register import bare_read, make_finetune_of  # noqa: E402
from common import base_model_dir, write  # noqa: E402

BIN = Path(sys.executable).parent


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def cli(tmp: Path, repeat: int) -> dict[str, float]:
    env = dict(os.environ, ZOO_HOME=str(tmp / "cli-zoo"))
    subprocess.run([str(BIN / "zoo"), "add", str(base_model_dir()), "--name", "base"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    runs: dict[str, list[float]] = {"zoo_ls": [], "zoo_help": [], "import_duckdb": []}
    for _ in range(repeat):  # alternating, so drift hits all three alike
        runs["zoo_ls"].append(wall([str(BIN / "zoo"), "ls"], env))
        runs["zoo_help"].append(wall([str(BIN / "zoo"), "--help"], env))
        runs["import_duckdb"].append(wall([sys.executable, "-c", "import duckdb"], env))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {**{f"{k}_s": v for k, v in med.items()}, "ratio_ls_vs_duckdb": med["zoo_ls"] / med["import_duckdb"],
            "ratio_help_vs_duckdb": med["zoo_help"] / med["import_duckdb"]}


def add(tmp: Path, repeat: int) -> dict[str, float]:
    from zoo import Zoo

    fts = [make_finetune_of(base_model_dir(), tmp / f"ft{i}", seed=i) for i in range(4)]
    single, batch, bare = [], [], []
    for i in range(repeat):
        z = Zoo(tmp / f"z{i}")
        z.add([base_model_dir()], name="base")
        t = time.perf_counter()
        bare_read(fts[0] / "model.safetensors")
        bare.append(time.perf_counter() - t)
        t = time.perf_counter()
        z.add([fts[0]], name="ft")
        single.append(time.perf_counter() - t)
        with z.session():
            for j, f in enumerate(fts[1:]):
                t = time.perf_counter()
                bare_read(f / "model.safetensors")
                bare.append(time.perf_counter() - t)
                t = time.perf_counter()
                z.add([f], name=f"b{j}")
                batch.append(time.perf_counter() - t)
        shutil.rmtree(tmp / f"z{i}")
    med = {k: statistics.median(v) for k, v in (("bare", bare), ("single", single), ("batch", batch))}
    return {"bare_read_s": med["bare"], "add_s": med["single"], "add_in_session_s": med["batch"],
            "ratio_add_vs_bare": med["single"] / med["bare"], "ratio_session_add_vs_bare": med["batch"] / med["bare"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--loads", nargs="+", default=["quiet", "spin2"])
    args = ap.parse_args()
    rows = []
    for load in args.loads:
        hogs = [] if load == "quiet" else [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                                           for _ in range(int(load[-1]))]
        try:
            with tempfile.TemporaryDirectory() as t:
                row = {"load": load, **cli(Path(t), args.repeat), **add(Path(t), args.repeat)}
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        rows.append(row)
        print(f"{load:>6}: zoo ls {row['zoo_ls_s'] * 1e3:.0f} ms, --help {row['zoo_help_s'] * 1e3:.0f} ms, import duckdb "
              f"{row['import_duckdb_s'] * 1e3:.0f} ms (ls/duckdb {row['ratio_ls_vs_duckdb']:.2f}) | add "
              f"{row['add_s'] * 1e3:.0f} ms, in a session {row['add_in_session_s'] * 1e3:.0f} ms, bare read "
              f"{row['bare_read_s'] * 1e3:.0f} ms (ratios {row['ratio_add_vs_bare']:.2f} / "
              f"{row['ratio_session_add_vs_bare']:.2f})", flush=True)
    write("overhead", {"repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
