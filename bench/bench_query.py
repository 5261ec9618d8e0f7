"""Nearest-10 query latency at N synthetic sketches (d=1024): zoo's FAISS index, the DuckDB
SQL macro ``zoo_nearest`` on the catalog (which probes the IVF lists zoo publishes, migration
0003), the same SQL as one exact scan (the macro before 0003), and numpy brute force, with
recall@10 of the index and of the macro.

Sketches are clustered like a zoo (many datasets, models scattered around each), written
straight into a real catalog (schema by Alembic) so the SQL macro runs on the same rows.

    python bench/bench_query.py [--sizes 10000 100000 1000000] [--queries 50]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write  # noqa: E402

from zoo import Zoo, catalog  # noqa: E402
from zoo.geometry import prepare  # noqa: E402


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = max(10, n // 100)
    centers = rng.standard_normal((k, d), dtype=np.float32)
    x = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x[lo:hi] = centers[rng.integers(0, k, hi - lo)] + 0.6 * rng.standard_normal((hi - lo, d), dtype=np.float32)
    return x


def fill_catalog(z: Zoo, x: np.ndarray) -> None:
    """Insert N models and their sketches into a fresh catalog in bulk (Arrow), one space."""
    import pyarrow as pa

    z.init()
    n, d = x.shape
    with z.store.write() as conn:
        dbapi = conn.raw
        dbapi.execute("INSERT INTO families (id, name, arch_signature, base_model_id, prefix, body) "
                      "VALUES (1, 'synthetic', 'x', 1, '', '{}')")
        dbapi.execute("INSERT INTO sketch_spaces (id, family_id, dim, seed, metric, base_vec) "
                      "VALUES (1, 1, ?, 0, 'cosine', ?)", [d, [0.0] * d])
        ids = pa.array(np.arange(1, n + 1, dtype=np.int32))
        models_t = pa.table({"id": ids, "name": pa.array([f"m{i}" for i in range(1, n + 1)]),
                             "hash": pa.array([f"h{i}" for i in range(1, n + 1)])})
        dbapi.register("models_t", models_t)
        dbapi.execute("INSERT INTO models (id, name, family_id, kind, uri, format, content_hash, n_params, dtype, meta) "
                      "SELECT id, name, 1, 'finetune', '-', 'synthetic', hash, 0, 'F32', '{}' FROM models_t")
        step = 100_000
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x[lo:hi].reshape(-1)), d)
            t = pa.table({"model_id": ids[lo:hi], "vec": vec,
                          "norm": pa.array(np.linalg.norm(x[lo:hi], axis=1).astype(np.float64))})
            dbapi.register("sk_t", t)
            dbapi.execute("INSERT INTO sketches SELECT model_id, 1, vec::FLOAT[], norm, NULL FROM sk_t")
            dbapi.unregister("sk_t")


# The macro as it was before the IVF lists: one exact scan of the space.
EXACT_SQL = """WITH q AS (SELECT model_id, space_id, vec, norm FROM zoo_sketches WHERE name = ? AND is_default)
    SELECT s.model_id FROM zoo_sketches s JOIN q ON s.space_id = q.space_id WHERE s.model_id <> q.model_id
    ORDER BY zoo_cos_dist(s.vec, q.vec, s.norm, q.norm), s.model_id LIMIT 10"""


def exact_neighbours(z: Zoo, model_ids: list[int]) -> dict[int, set[int]]:
    """The 10 nearest stored sketches to each of some stored ones by cosine (numpy), itself
    excluded; the vectors are loaded once and normalised in place (4 GB at 1M)."""
    with z.store.read() as conn:
        ids, x = catalog.sketch_vectors(conn, 1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = {}
    for m in model_ids:
        sims = x @ x[ids == m][0]
        sims[ids == m] = -np.inf
        out[m] = set(ids[np.argsort(-sims)[:10]].tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--sql-queries", type=int, default=5)
    ap.add_argument("--dim", type=int, default=1024)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as t:
            x = clustered(n, args.dim)
            z = Zoo(Path(t) / "zoo")
            t0 = time.perf_counter()
            fill_catalog(z, x)
            fill_s = time.perf_counter() - t0
            rng = np.random.default_rng(1)
            qi = rng.choice(n, args.queries, replace=False)
            qs = x[qi] + 0.05 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
            # numpy brute force on normalised vectors (what a user would write).
            xn = prepare(x, "cosine")
            del x  # keep peak memory down at 1M (4 GB a copy)
            lat_np, truth = [], []
            for q in qs:
                t0 = time.perf_counter()
                qn = q / np.linalg.norm(q)
                sims = xn @ qn
                top = np.argpartition(-sims, 10)[:10]
                top = top[np.argsort(-sims[top])]
                lat_np.append(time.perf_counter() - t0)
                truth.append(set((top + 1).tolist()))
            del xn
            t0 = time.perf_counter()
            with z.store.read() as conn:
                idx = z.store.index(conn, catalog.space(conn, 1))
            build_s = time.perf_counter() - t0
            spec = idx.meta["spec"]
            lat_faiss, hits = [], 0
            for q, tr in zip(qs, truth):
                t0 = time.perf_counter()
                got, _ = idx.search(q[None], 10)
                lat_faiss.append(time.perf_counter() - t0)
                hits += len(set(got[0].tolist()) & tr)
            # The SQL macro answers for a model by name: query with existing models' vectors,
            # against the exact answer (numpy on the stored vectors, the model itself excluded).
            lat_sql, lat_scan, sql_hits = [], [], 0
            truth_sql = exact_neighbours(z, [int(i) + 1 for i in qi[: args.sql_queries]])
            with z.store.read() as conn:
                dbapi = conn.raw
                for i in qi[: args.sql_queries]:
                    t0 = time.perf_counter()
                    got = dbapi.execute("SELECT model_id FROM zoo_nearest(?, 10)", [f"m{i + 1}"]).fetchall()
                    lat_sql.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    dbapi.execute(EXACT_SQL, [f"m{i + 1}"]).fetchall()
                    lat_scan.append(time.perf_counter() - t0)
                    sql_hits += len({g[0] for g in got} & truth_sql[int(i) + 1])
            n_sql = len(lat_sql)
            row = {"n": n, "dim": args.dim, "index": spec["factory"], "nprobe": spec["nprobe"],
                   "sql_scan_p50_ms": 1e3 * float(np.median(lat_scan)), "sql_recall_at_10": sql_hits / (10 * n_sql),
                   "fill_catalog_s": fill_s, "index_build_s": build_s,
                   "faiss_p50_ms": 1e3 * float(np.median(lat_faiss)), "faiss_p95_ms": 1e3 * float(np.percentile(lat_faiss, 95)),
                   "numpy_p50_ms": 1e3 * float(np.median(lat_np)), "sql_p50_ms": 1e3 * float(np.median(lat_sql)),
                   "recall_at_10": hits / (10 * len(qs))}
            row["speedup_vs_numpy"] = row["numpy_p50_ms"] / row["faiss_p50_ms"]
            row["speedup_vs_sql"] = row["sql_p50_ms"] / row["faiss_p50_ms"]
            rows.append(row)
            print(f"N={n:>8}: {spec['factory']:>14} build {build_s:6.1f}s | p50 faiss {row['faiss_p50_ms']:7.2f} ms, "
                  f"numpy {row['numpy_p50_ms']:8.2f} ms, SQL macro {row['sql_p50_ms']:9.1f} ms (exact scan "
                  f"{row['sql_scan_p50_ms']:.1f} ms, recall@10 {row['sql_recall_at_10']:.3f}) | "
                  f"FAISS recall@10 {row['recall_at_10']:.3f}", flush=True)
    write("query", {"rows": rows})


if __name__ == "__main__":
    main()
