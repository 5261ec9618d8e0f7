"""Sketch fidelity: relative error of sketch distances against exact ones, and kNN@5 agreement.

The models are synthetic task vectors with the structure of a zoo: 12 "datasets" whose
fine-tunes share a dataset direction, 3 "tasks" that group 4 datasets each and share a
task direction, and per-model noise of varying size, spread over tensors of realistic,
uneven sizes (2.4M parameters in all). Exact distances come from the float64 task
vectors; sketches from zoo's kernel, tensor by tensor, as at registration.

    python bench/bench_fidelity.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

from zoo.geometry import distances  # noqa: E402
from zoo.sketch import sketch_array  # noqa: E402

SIZES = [384 * 1536] * 2 + [384 * 384] * 4 + [30522 * 24] + [384] * 8  # uneven, like a transformer's tensors


def make_models(n_tasks=3, ds_per_task=4, per_ds=6, seed=0):
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    task_dirs = rng.normal(size=(n_tasks, n)) * 1.0
    models, labels = [], []
    for t in range(n_tasks):
        for d in range(ds_per_task):
            ds_dir = task_dirs[t] + rng.normal(size=n) * 1.2
            for m in range(per_ds):
                noise = rng.uniform(0.6, 1.6)
                models.append((ds_dir + rng.normal(size=n) * noise) * 1e-3)
                labels.append((t, t * ds_per_task + d))
    return np.array(models), labels


def sketch(vec: np.ndarray, dim: int) -> np.ndarray:
    out = np.zeros(dim)
    lo = 0
    for i, size in enumerate(SIZES):
        sketch_array(vec[lo:lo + size].astype(np.float32), f"t{i}", 0, dim, out)
        lo += size
    return out


def knn_agreement(exact: np.ndarray, approx: np.ndarray, k: int = 5) -> float:
    n = len(exact)
    agree = 0
    for i in range(n):
        e = [j for j in np.argsort(exact[i], kind="stable") if j != i][:k]
        a = [j for j in np.argsort(approx[i], kind="stable") if j != i][:k]
        agree += len(set(e) & set(a))
    return agree / (n * k)


def pairwise(x: np.ndarray, metric: str) -> np.ndarray:
    return np.stack([distances(x[i], x, metric) for i in range(len(x))])


def main() -> None:
    models, labels = make_models()
    n = len(models)
    exact = {m: pairwise(models.astype(np.float32).astype(np.float64), m) for m in ("cosine", "l2")}
    iu = np.triu_indices(n, 1)
    rows = []
    for dim in (256, 1024, 4096):
        sk = np.stack([sketch(v, dim) for v in models])
        row = {"dim": dim, "models": n, "pairs": len(iu[0])}
        for metric in ("cosine", "l2"):
            approx = pairwise(sk, metric)
            rel = np.abs(approx[iu] - exact[metric][iu]) / exact[metric][iu]
            row[f"{metric}_rel_err_median"] = float(np.median(rel))
            row[f"{metric}_rel_err_p95"] = float(np.percentile(rel, 95))
            row[f"{metric}_rel_err_max"] = float(rel.max())
            row[f"{metric}_knn5_agreement"] = knn_agreement(exact[metric], approx)
        row["jl_sigma_sqrt_1_over_d"] = float(np.sqrt(1 / dim))
        rows.append(row)
        print(f"d={dim:5d}: L2 rel err median {row['l2_rel_err_median']:.4f} p95 {row['l2_rel_err_p95']:.4f} "
              f"max {row['l2_rel_err_max']:.4f} | cosine-distance rel err p95 {row['cosine_rel_err_p95']:.4f} | "
              f"kNN@5 agreement L2 {row['l2_knn5_agreement']:.3f} cosine {row['cosine_knn5_agreement']:.3f}")
    write("fidelity", {"rows": rows, "params_per_model": int(sum(SIZES))})


if __name__ == "__main__":
    main()
