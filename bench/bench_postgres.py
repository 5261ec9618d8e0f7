"""A PostgreSQL catalog against the DuckDB one (issue 15), side by side in one run.

1. SQL nearest-10 at N synthetic sketches (d=1024, clustered like a zoo): ``zoo_nearest`` on
   PostgreSQL through pgvector's HNSW index, the same function as an exact scan (index off),
   the DuckDB macro (IVF lists, migration 0003) and zoo's FAISS index; p50 latency and
   recall@10 against numpy's exact answer.
2. Eight concurrent writers: 8 processes, each ``zoo add`` of its own fine-tunes of one
   family, on one PostgreSQL catalog and on one DuckDB file (whose writers queue on its file
   lock); wall time against one process adding them all, and whether every model landed.

The server is a throwaway one (scripts/local_postgres.py).

    python bench/bench_postgres.py [--n 100000] [--queries 30] [--writers 8] [--per-writer 2] [--busy 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_query import clustered, fill_catalog  # noqa: E402
from common import write  # noqa: E402
from local_postgres import LocalPostgres  # noqa: E402

from zoo import Zoo, catalog, db  # noqa: E402


def fill_postgres(url: str, x: np.ndarray, chunk: int = 5000) -> None:
    """The same rows as ``fill_catalog``, into a PostgreSQL catalog by binary COPY; the HNSW
    index built once after the load (as a bulk import would)."""
    import psycopg

    Zoo(tempfile.mkdtemp(), catalog=url).init()
    n, d = x.shape
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO families (id, name, arch_signature, base_model_id, prefix, body) "
                  "VALUES (1, 'synthetic', 'x', 1, '', '{}')")
        c.execute("INSERT INTO sketch_spaces (id, family_id, dim, seed, metric, base_vec) VALUES (1, 1, %s, 0, 'cosine', %s)",
                  [d, [0.0] * d])
        with c.cursor().copy("COPY models (id, name, family_id, kind, uri, format, content_hash, n_params, dtype, meta) "
                             "FROM STDIN") as cp:
            for i in range(1, n + 1):
                cp.write_row((i, f"m{i}", 1, "finetune", "-", "synthetic", f"h{i}", 0, "F32", "{}"))
        norms = np.linalg.norm(x, axis=1).astype(np.float64)
        with c.cursor().copy("COPY sketches (model_id, space_id, vec, norm) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "int4", "float4[]", "float8"])
            for lo in range(0, n, chunk):
                for i, row in enumerate(x[lo:lo + chunk].tolist()):
                    cp.write_row((lo + i + 1, 1, row, float(norms[lo + i])))
        for seq, top in (("models_id_seq", n), ("families_id_seq", 1), ("sketch_spaces_id_seq", 1)):
            c.execute(f"SELECT setval('{seq}', {top})")
        c.execute("ANALYZE sketches")
        # A bulk build keeps the graph in memory (the default 64 MB spills at this size) and
        # uses the second core; zoo's own spaces grow their index row by row instead.
        c.execute("SET maintenance_work_mem = '2GB'")
        c.execute("SET max_parallel_maintenance_workers = 1")
        assert catalog.vector_index(db.Conn(c, True, "postgresql"), 1, d, "cosine")


def sql_latencies(run_query, names: list[str]) -> tuple[list[float], list[list[int]]]:
    lat, got = [], []
    for nm in names:
        t0 = time.perf_counter()
        ids = run_query(nm)
        lat.append(time.perf_counter() - t0)
        got.append(ids)
    return lat, got


def nearest_part(n: int, d: int, queries: int, pg: LocalPostgres) -> dict:
    import psycopg

    x = clustered(n, d)
    rng = np.random.default_rng(1)
    qi = [int(i) for i in rng.choice(n, queries, replace=False)]
    names = [f"m{i + 1}" for i in qi]
    # Exact truth: cosine on the stored vectors, the query model excluded.
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    truth = []
    for i in qi:
        s = xn @ xn[i]
        s[i] = -np.inf
        truth.append(set((np.argsort(-s)[:10] + 1).tolist()))
    del xn
    out: dict = {"n": n, "dim": d, "queries": queries}
    with tempfile.TemporaryDirectory() as t:
        duck = Zoo(Path(t) / "duck")
        t0 = time.perf_counter()
        fill_catalog(duck, x)
        with duck.store.read() as conn:
            idx = duck.store.index(conn, catalog.space(conn, 1))  # also publishes the IVF lists for the macro
        out["duckdb_load_s"] = time.perf_counter() - t0
        url = pg.create_db(f"bench_{n}")
        t0 = time.perf_counter()
        fill_postgres(url, x)
        out["postgres_load_and_hnsw_s"] = time.perf_counter() - t0
        print(f"loaded {n} x {d}: DuckDB + FAISS {out['duckdb_load_s']:.0f} s, "
              f"PostgreSQL + HNSW {out['postgres_load_and_hnsw_s']:.0f} s", flush=True)

        def recall(got: list[list[int]]) -> float:
            return sum(len(set(g) & tr) for g, tr in zip(got, truth)) / (10 * len(got))

        with psycopg.connect(url, autocommit=True) as c:
            q = lambda nm: [r[0] for r in c.execute("SELECT model_id FROM zoo_nearest(%s, 10)", [nm]).fetchall()]
            q(names[0])  # warm the index pages
            lat, got = sql_latencies(q, names)
            out["postgres_hnsw_p50_ms"], out["postgres_hnsw_recall_at_10"] = 1e3 * float(np.median(lat)), recall(got)
            c.execute("SET enable_indexscan = off")
            c.execute("SET enable_bitmapscan = off")
            qe = lambda nm: [r[0] for r in c.execute(
                f"WITH q AS MATERIALIZED (SELECT id, zoo_vec(name)::vector({d}) AS v FROM models WHERE name = %s) "
                "SELECT s.model_id FROM sketches s, q WHERE s.space_id = 1 AND s.model_id <> q.id "
                f"ORDER BY s.vec::vector({d}) <=> q.v LIMIT 10", [nm]).fetchall()]
            lat, got = sql_latencies(qe, names[: max(3, queries // 10)])
            out["postgres_exact_scan_p50_ms"] = 1e3 * float(np.median(lat))
            out["postgres_exact_scan_recall_at_10"] = recall(got)
            # zoo_nearest for a space without a graph (wider than 2,000, or not built): its exact path.
            c.execute("RESET enable_indexscan")
            c.execute("RESET enable_bitmapscan")
            c.execute("DROP INDEX zoo_hnsw_1")
            lat, got = sql_latencies(q, names[: max(3, queries // 10)])
            out["postgres_no_index_p50_ms"] = 1e3 * float(np.median(lat))
            out["postgres_no_index_recall_at_10"] = recall(got)
        with duck.store.read() as conn:
            dq = lambda nm: [r[0] for r in conn.raw.execute("SELECT model_id FROM zoo_nearest(?, 10)", [nm]).fetchall()]
            dq(names[0])
            lat, got = sql_latencies(dq, names)
        out["duckdb_macro_p50_ms"], out["duckdb_macro_recall_at_10"] = 1e3 * float(np.median(lat)), recall(got)
        lat, hits = [], 0
        for i, tr in zip(qi, truth):
            t0 = time.perf_counter()
            got_ids, _ = idx.search(x[i][None], 11)
            lat.append(time.perf_counter() - t0)
            hits += len(set([g for g in got_ids[0].tolist() if g != i + 1][:10]) & tr)
        out["faiss_p50_ms"], out["faiss_recall_at_10"] = 1e3 * float(np.median(lat)), hits / (10 * len(truth))
    out["postgres_vs_duckdb_macro"] = out["postgres_hnsw_p50_ms"] / out["duckdb_macro_p50_ms"]
    out["postgres_vs_faiss"] = out["postgres_hnsw_p50_ms"] / out["faiss_p50_ms"]
    print(f"nearest-10 at {n} x {d}: Postgres+pgvector HNSW {out['postgres_hnsw_p50_ms']:.1f} ms "
          f"(recall {out['postgres_hnsw_recall_at_10']:.3f}; exact scan {out['postgres_exact_scan_p50_ms']:.0f} ms, "
          f"zoo_nearest without the index {out['postgres_no_index_p50_ms']:.0f} ms), "
          f"DuckDB macro {out['duckdb_macro_p50_ms']:.1f} ms (recall {out['duckdb_macro_recall_at_10']:.3f}), "
          f"FAISS {out['faiss_p50_ms']:.2f} ms (recall {out['faiss_recall_at_10']:.3f})", flush=True)
    return out


def writers_part(writers: int, per_writer: int, pg: LocalPostgres) -> dict:
    from conftest import make_bert_base, make_finetune

    root = Path(tempfile.mkdtemp(prefix="zoo-writers-"))
    base = make_bert_base(root / "base", hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                          num_attention_heads=4, vocab_size=2048, max_position_embeddings=128)
    groups = [[make_finetune(base, root / "w" / f"w{w}-{j}", seed=100 * w + j, direction_seed=w % 4)
               for j in range(per_writer)] for w in range(writers)]
    mb = sum(f.stat().st_size for g in groups for p in g for f in p.iterdir()) / 1e6
    env = dict(os.environ, ZOO_THREADS="1", ZOO_LOCK_TIMEOUT="600")
    cli = [sys.executable, "-m", "zoo.cli.main"]

    def one(catalog_arg: list[str], home: Path, paths: list[Path]) -> subprocess.Popen:
        return subprocess.Popen([*cli, "--home", str(home), *catalog_arg, "add", *map(str, paths), "--dataset", "d",
                                 "--task", "t"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    out: dict = {"writers": writers, "per_writer": per_writer, "checkpoint_mb_total": round(mb, 1)}
    for kind in ("postgres", "duckdb"):
        for mode in ("one process", f"{writers} processes"):
            tag = f"{kind}_{'serial' if mode == 'one process' else 'concurrent'}"
            work = root / tag
            if kind == "postgres":
                url = pg.create_db(f"w_{tag}")
                cat = ["--catalog", url]
                count = lambda: __import__("psycopg").connect(url).execute("SELECT count(*) FROM models").fetchone()[0]
            else:
                cat = ["--catalog", str(work / "shared.duckdb")]
                count = lambda: Zoo(work / "h-check", catalog=work / "shared.duckdb").sql("SELECT count(*) FROM models")[1][0][0]
            subprocess.run([*cli, "--home", str(work / "h-base"), *cat, "add", str(base), "--name", "base"], env=env,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = time.perf_counter()
            if mode == "one process":
                procs = [one(cat, work / "h0", [p for g in groups for p in g])]
            else:
                procs = [one(cat, work / f"h{w}", g) for w, g in enumerate(groups)]
            errs = [p.communicate()[1] for p in procs]
            wall = time.perf_counter() - t0
            failed = [e.strip().splitlines()[-1] for p, e in zip(procs, errs) if p.returncode]
            out[f"{tag}_s"] = wall
            out[f"{tag}_registered"] = int(count()) - 1
            out[f"{tag}_failed"] = failed
            print(f"{kind:>8} {mode:>12}: {wall:6.1f} s, {out[f'{tag}_registered']} of {writers * per_writer} registered"
                  + (f", failures: {failed}" if failed else ""), flush=True)
    out["postgres_concurrent_vs_serial"] = out["postgres_concurrent_s"] / out["postgres_serial_s"]
    out["duckdb_concurrent_vs_serial"] = out["duckdb_concurrent_s"] / out["duckdb_serial_s"]
    out["postgres_vs_duckdb_concurrent"] = out["postgres_concurrent_s"] / out["duckdb_concurrent_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--per-writer", type=int, default=2)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the benchmark")
    ap.add_argument("--skip", choices=["nearest", "writers"], action="append", default=[])
    args = ap.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server and the busy loops on kill
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        with LocalPostgres() as pg:
            res: dict = {"busy": args.busy, "server": str(pg.bin)}
            if "nearest" not in args.skip:
                res["nearest"] = nearest_part(args.n, args.dim, args.queries, pg)
            if "writers" not in args.skip:
                res["writers"] = writers_part(args.writers, args.per_writer, pg)
    finally:
        for p in busy:
            p.kill()
    write(f"postgres{'_busy' if args.busy else ''}", res)
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
