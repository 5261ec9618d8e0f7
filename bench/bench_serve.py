"""zoo serve at 100k models: the list page and a model page over HTTP, against the CLI a user
would otherwise run for the same answers (`zoo ls --limit 50`; `zoo show`, `zoo lineage`,
`zoo runs --model`, `zoo nearest --rerank 0`), side by side, quiet and beside two busy
processes. The target (issue 17): both pages under 200 ms at 100k models.

The catalog is synthetic (bench_query's clustered d=1024 sketches written in bulk); the
server is `zoo serve --port 0` in its own process, asked with urllib from this one.

    python bench/bench_serve.py [--models 100000] [--repeat 15] [--loads quiet spin2] [--home DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_query import clustered, fill_catalog  # noqa: E402
from common import write  # noqa: E402

BIN = Path(sys.executable).parent


def fetch(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        r.read()
        assert r.status == 200, (url, r.status)
    return time.perf_counter() - t


def cli(home: Path, *args: str) -> float:
    t = time.perf_counter()
    subprocess.run([str(BIN / "zoo"), "--home", str(home), *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def measure(home: Path, n: int, repeat: int) -> dict[str, float]:
    proc = subprocess.Popen([str(BIN / "zoo"), "--home", str(home), "serve", "--port", "0"], stderr=subprocess.PIPE,
                            text=True)
    try:
        base = proc.stderr.readline().split()[2]
        names = [f"m{i}" for i in range(1, n + 1, max(1, n // repeat))][:repeat]
        pages = {"list": [f"{base}models"] * repeat,
                 "list_sorted_deep": [f"{base}models?sort=name&desc=1&offset={n // 2}"] * repeat,
                 "list_search": [f"{base}models?q=m999"] * repeat,
                 "model": [f"{base}models/{m}" for m in names],
                 "model_json": [f"{base}api/models/{m}" for m in names]}
        for urls in pages.values():  # warm: the index is loaded once per server process
            fetch(urls[0])
        out = {f"{k}_ms": 1e3 * statistics.median(fetch(u) for u in urls) for k, urls in pages.items()}
        out["model_p95_ms"] = 1e3 * sorted(fetch(u) for u in pages["model"])[int(0.95 * (repeat - 1))]
    finally:
        proc.terminate()
        proc.wait()
    r = max(3, repeat // 5)  # a CLI call is a process: fewer of them
    out["cli_list_ms"] = 1e3 * statistics.median(cli(home, "ls", "--limit", "50") for _ in range(r))
    out["cli_model_ms"] = 1e3 * statistics.median(
        sum(cli(home, *a) for a in (("show", m), ("lineage", m), ("runs", "--model", m), ("nearest", m, "--rerank", "0")))
        for m in names[:r])
    out["ratio_list_vs_cli"] = out["list_ms"] / out["cli_list_ms"]
    out["ratio_model_vs_cli"] = out["model_ms"] / out["cli_model_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--loads", nargs="+", default=["quiet", "spin2"])
    ap.add_argument("--home", help="reuse (or build once into) this zoo home")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        home = Path(args.home) if args.home else Path(t) / "zoo"
        if not (home / "catalog.duckdb").exists():
            from zoo import Zoo

            t0 = time.perf_counter()
            z = Zoo(home)
            fill_catalog(z, clustered(args.models, 1024))
            z.reindex()
            print(f"built {args.models} models in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        for load in args.loads:
            hogs = [] if load == "quiet" else [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                                               for _ in range(int(load[-1]))]
            try:
                row = {"load": load, **measure(home, args.models, args.repeat)}
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            rows.append(row)
            print(f"{load:>6}: list {row['list_ms']:.1f} ms (sorted, offset n/2: {row['list_sorted_deep_ms']:.1f}; "
                  f"search {row['list_search_ms']:.1f}), model page {row['model_ms']:.1f} ms (p95 "
                  f"{row['model_p95_ms']:.1f}; JSON {row['model_json_ms']:.1f}) | CLI: ls {row['cli_list_ms']:.0f} ms, "
                  f"show+lineage+runs+nearest {row['cli_model_ms']:.0f} ms | ratios {row['ratio_list_vs_cli']:.3f} / "
                  f"{row['ratio_model_vs_cli']:.3f}", flush=True)
    write("serve", {"models": args.models, "repeat": args.repeat, "rows": rows})


if __name__ == "__main__":
    main()
