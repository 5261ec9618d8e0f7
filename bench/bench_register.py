"""Registration throughput: zoo's one-pass hash + sketch against a bare safe_open read.

Both run in the same process on the same file with a warm page cache. The bare read is
``safe_open(framework="numpy")`` + ``get_tensor`` for every tensor, which copies (and so
reads) every byte. Ours is the full registration pass: header, content hash, NaN/Inf
check and a d=1024 sketch of every body tensor. Also timed: end-to-end ``Zoo.add``
(catalog transaction and index update included).

    python bench/bench_register.py [--big-gb 1.1]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import base_model_dir, timeit, write  # noqa: E402

from zoo import Zoo  # noqa: E402
from zoo.checkpoint import read_header  # noqa: E402
from zoo.domain import Space  # noqa: E402
from zoo.ingest import float_body, scan  # noqa: E402


def bare_read(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        for k in f.keys():
            f.get_tensor(k)


def bare_read_touch(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            f.get_tensor(k).sum()


def our_pass(model_dir: Path) -> None:
    h = read_header(model_dir)
    scan(h, [Space(1024, 0)], float_body(h))


def make_big(dir_: Path, gb: float) -> Path:
    """A Llama-shaped synthetic checkpoint of about ``gb`` GB (fp32), written tensor group by group."""
    from safetensors.numpy import save_file

    hidden, inter, vocab = 2048, 5632, 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    layers = max(1, int((gb * 1e9 / 4 - 2 * vocab * hidden) / per_layer))
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden), dtype=np.float32) * 0.02,
               "lm_head.weight": rng.standard_normal((vocab, hidden), dtype=np.float32) * 0.02}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            tensors[p + f"self_attn.{n}_proj.weight"] = rng.standard_normal((hidden, hidden), dtype=np.float32) * 0.02
        for n, shape in (("gate", (inter, hidden)), ("up", (inter, hidden)), ("down", (hidden, inter))):
            tensors[p + f"mlp.{n}_proj.weight"] = rng.standard_normal(shape, dtype=np.float32) * 0.02
        tensors[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    dir_.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dir_ / "model.safetensors"))
    (dir_ / "config.json").write_text('{"model_type": "llama"}')
    return dir_


def make_finetune_of(base_dir: Path, out: Path, seed: int = 1) -> Path:
    from safetensors.numpy import load_file, save_file

    sd = load_file(str(base_dir / "model.safetensors"))
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: (v + 1e-3 * rng.standard_normal(v.shape).astype(v.dtype)) if v.dtype.kind == "f" else v
               for k, v in sd.items()}, str(out / "model.safetensors"))
    shutil.copy(base_dir / "config.json", out / "config.json")
    return out


def measure(model_dir: Path, label: str, tmp: Path, repeat: int) -> dict:
    f = model_dir / "model.safetensors"
    size = f.stat().st_size
    bare = timeit(lambda: bare_read(f), repeat)
    touch = timeit(lambda: bare_read_touch(f), repeat)
    ours = timeit(lambda: our_pass(model_dir), repeat)
    counter = iter(range(10_000))

    def add_base() -> None:
        Zoo(tmp / f"zoo-{label}-{next(counter)}").add([model_dir], name="base")

    e2e = timeit(add_base, max(1, repeat // 2))
    row = {"label": label, "bytes": size, "bare_read_s": bare["median_s"], "bare_read_touch_s": touch["median_s"],
           "zoo_pass_s": ours["median_s"], "zoo_add_s": e2e["median_s"],
           "bare_read_GBps": size / bare["median_s"] / 1e9, "zoo_pass_GBps": size / ours["median_s"] / 1e9,
           "ratio_pass_vs_bare": ours["median_s"] / bare["median_s"],
           "ratio_add_vs_bare": e2e["median_s"] / bare["median_s"]}
    print(f"{label:>22}: {size / 1e6:8.1f} MB  bare read {bare['median_s'] * 1e3:8.1f} ms "
          f"({row['bare_read_GBps']:.2f} GB/s)  zoo pass {ours['median_s'] * 1e3:8.1f} ms "
          f"({row['zoo_pass_GBps']:.2f} GB/s)  ratio {row['ratio_pass_vs_bare']:.2f}  "
          f"zoo add end-to-end {e2e['median_s'] * 1e3:8.1f} ms (ratio {row['ratio_add_vs_bare']:.2f})")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-gb", type=float, default=1.1, help="size of the synthetic checkpoint (0 to skip)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        our_pass(base_model_dir())  # JIT warm-up (numba caches compiled kernels on disk after the first run)
        rows.append(measure(base_model_dir(), "all-MiniLM-L6-v2", tmp, args.repeat))
        ft = make_finetune_of(base_model_dir(), tmp / "minilm-ft")
        # A fine-tune joins the base's family: its pass sketches raw weights; the base is never read.
        z = Zoo(tmp / "zoo-ft")
        z.add([base_model_dir()], name="base")
        f = ft / "model.safetensors"
        bare = timeit(lambda: bare_read(f), args.repeat)
        counter = iter(range(10_000))

        def add_ft() -> None:
            zz = Zoo(tmp / f"zoo-ft-{next(counter)}")
            zz.add([base_model_dir()], name="base")
            import time as _t
            t0 = _t.perf_counter()
            zz.add([ft], name="ft")
            add_ft.last = _t.perf_counter() - t0

        times = []
        for _ in range(max(1, args.repeat // 2)):
            add_ft()
            times.append(add_ft.last)
        med = float(np.median(times))
        rows.append({"label": "MiniLM fine-tune (add)", "bytes": f.stat().st_size, "bare_read_s": bare["median_s"],
                     "zoo_add_s": med, "ratio_add_vs_bare": med / bare["median_s"]})
        print(f"{'MiniLM fine-tune add':>22}: zoo add {med * 1e3:.1f} ms vs bare read {bare['median_s'] * 1e3:.1f} ms "
              f"(ratio {med / bare['median_s']:.2f})")
        if args.big_gb > 0:
            big = make_big(tmp / "big", args.big_gb)
            rows.append(measure(big, f"synthetic {args.big_gb:g} GB", tmp, max(2, args.repeat // 2)))
    write("register", {"rows": rows})


if __name__ == "__main__":
    main()
