"""Linear merge: `zoo centroid` against mergekit's linear merge (Llama-style checkpoints) and
against the plain transformers script a user would write (BERT family: mergekit 0.1.5
fails on BERT checkpoints). Each tool runs in its own process; the table reports wall
time, peak RSS and the max absolute difference between the outputs.

    python bench/bench_merge.py [--sizes 4 16] [--mergekit /path/to/venv/bin/mergekit-yaml]

mergekit is not a dependency of zoo: install it in a separate venv (torch pinned first,
so it cannot pull a CUDA build): `python -m venv /tmp/mk && /tmp/mk/bin/pip install
torch==2.13.0 && /tmp/mk/bin/pip install mergekit==0.1.5 torch==2.13.0`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import base_model_dir, write  # noqa: E402

MEASURE = """
import resource, subprocess, sys, time, json
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "seconds": dt,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stderr": p.stderr[-2000:]}))
"""

PLAIN_SCRIPT = """
import sys, torch
from transformers import AutoModel
out, paths = sys.argv[1], sys.argv[2:]
acc = None
for p in paths:
    sd = AutoModel.from_pretrained(p).state_dict()
    if acc is None:
        acc = {k: v.clone().double() for k, v in sd.items()}
    else:
        for k in acc:
            acc[k] += sd[k].double()
m = AutoModel.from_pretrained(paths[0])
m.load_state_dict({k: (v / len(paths)).to(torch.float32) for k, v in acc.items()})
m.save_pretrained(out)
"""


def measured(cmd: list[str]) -> dict:
    os.sync()  # flush writeback of files just written, so neither tool competes with it
    r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(r.stdout)
    if res["rc"] != 0:
        raise RuntimeError(f"{cmd[0]} failed: {res['stderr']}")
    return res


def make_llamas(root: Path, n: int) -> list[Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = LlamaForCausalLM(cfg)
    paths = [root / "llama-base"]
    base.save_pretrained(paths[0])
    sd = {k: v.clone() for k, v in base.state_dict().items()}
    for i in range(n):
        g = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for k, p in base.state_dict().items():
                p.copy_(sd[k] + 1e-3 * torch.randn(p.shape, generator=g))
        paths.append(root / f"llama-ft{i}")
        base.save_pretrained(paths[-1])
    return paths


def make_berts(root: Path, n: int) -> list[Path]:
    from safetensors.torch import load_file, save_file
    import torch

    src = base_model_dir()
    sd = load_file(str(src / "model.safetensors"))
    paths = [src]
    for i in range(n):
        g = torch.Generator().manual_seed(i + 1)
        d = root / f"bert-ft{i}"
        d.mkdir(parents=True)
        save_file({k: (v + 1e-3 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v for k, v in sd.items()},
                  str(d / "model.safetensors"))
        shutil.copy(src / "config.json", d / "config.json")
        paths.append(d)
    return paths


def max_abs_diff(a: Path, b: Path) -> float:
    from zoo.checkpoint import Reader, read_header

    ha, hb = read_header(a), read_header(b)
    common = sorted(set(ha.by_canonical()) & set(hb.by_canonical()))
    if not common:
        raise RuntimeError(f"{a} and {b} share no tensors")
    worst = 0.0
    with Reader(ha) as ra, Reader(hb) as rb:
        for c in common:
            x, y = ra.get(c).astype(np.float64), rb.get(c).astype(np.float64)
            worst = max(worst, float(np.abs(x - y).max()))
    return worst


def zoo_centroid(home: Path, paths: list[Path], out: str) -> dict:
    zoo_bin = str(Path(sys.executable).parent / "zoo")
    subprocess.run([zoo_bin, "--home", str(home), "add", str(paths[0]), "--name", "base"], check=True, capture_output=True)
    names = []
    for i, p in enumerate(paths[1:]):
        subprocess.run([zoo_bin, "--home", str(home), "add", str(p), "--name", f"m{i}"], check=True, capture_output=True)
        names.append(f"m{i}")
    return measured([zoo_bin, "--home", str(home), "centroid", *names, "--out", out])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--mergekit", default=shutil.which("mergekit-yaml") or "/tmp/mkvenv/bin/mergekit-yaml")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        llamas = make_llamas(tmp / "llama", max(args.sizes))
        berts = make_berts(tmp / "bert", max(args.sizes))
        for n in args.sizes:
            # Llama family: mergekit linear merge.
            members = llamas[1:n + 1]
            cfg = tmp / f"mk{n}.yml"
            cfg.write_text("merge_method: linear\ndtype: float32\nmodels:\n" + "".join(
                f"  - model: {p}\n    parameters:\n      weight: 1.0\n" for p in members))
            theirs = measured([args.mergekit, str(cfg), str(tmp / f"mk-out{n}"), "--lazy-unpickle"])
            ours = zoo_centroid(tmp / f"zoo-llama{n}", llamas[:n + 1], f"cen{n}")
            diff = max_abs_diff(tmp / f"mk-out{n}", tmp / f"zoo-llama{n}" / "checkpoints" / f"cen{n}")
            rows.append({"family": "llama-58M", "n": n, "other": "mergekit 0.1.5 linear", "other_s": theirs["seconds"],
                         "other_rss_mb": theirs["max_rss_mb"], "zoo_s": ours["seconds"], "zoo_rss_mb": ours["max_rss_mb"],
                         "speedup": theirs["seconds"] / ours["seconds"], "max_abs_diff": diff})
            # BERT family (the real base's size): the transformers script a user would write.
            members = berts[1:n + 1]
            theirs = measured([sys.executable, "-c", PLAIN_SCRIPT, str(tmp / f"plain-out{n}"), *map(str, members)])
            ours = zoo_centroid(tmp / f"zoo-bert{n}", berts[:n + 1], f"cen{n}")
            diff = max_abs_diff(tmp / f"plain-out{n}", tmp / f"zoo-bert{n}" / "checkpoints" / f"cen{n}")
            rows.append({"family": "MiniLM-22M", "n": n, "other": "transformers state-dict average", "other_s": theirs["seconds"],
                         "other_rss_mb": theirs["max_rss_mb"], "zoo_s": ours["seconds"], "zoo_rss_mb": ours["max_rss_mb"],
                         "speedup": theirs["seconds"] / ours["seconds"], "max_abs_diff": diff})
            for r in rows[-2:]:
                print(f"{r['family']:>11} N={n:2d}: {r['other']:<32} {r['other_s']:6.2f}s {r['other_rss_mb']:7.0f} MB | "
                      f"zoo centroid {r['zoo_s']:6.2f}s {r['zoo_rss_mb']:7.0f} MB | {r['speedup']:.2f}x faster, "
                      f"max |diff| {r['max_abs_diff']:.2e}", flush=True)
    write("merge", {"rows": rows})


if __name__ == "__main__":
    main()
