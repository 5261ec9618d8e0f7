"""LoRA adapters: registration against loading with PEFT, adapter centroids against PEFT's
``add_weighted_adapter`` (``cat`` and ``svd``): equal ΔW, wall time and peak RSS, side by side.

On the real base (all-MiniLM-L6-v2), N adapters of rank 8 on query/key/value/dense (random B,
as after training). Each measurement runs in a fresh process (its peak RSS is its own):

* register: ``Zoo.add(ADAPTER)`` into a zoo holding the base (one call: catalog open, read,
  hash, sketch of B·A, commit, index) against ``AutoModel.from_pretrained(base)`` +
  ``PeftModel.from_pretrained`` (what a user runs to look at an adapter); times include each
  side's imports, as a user running either pays them;
* centroid of N = 4 / 16: ``Zoo.centroid(names=...)`` exact (factors concatenated) and
  ``rank=8`` (SVD), against loading the N adapters into one PeftModel and
  ``add_weighted_adapter(..., combination_type="cat" | "svd", svd_rank=8)``; the ΔW of each
  result is compared with the exact mean ΔW (relative Frobenius error).

    python bench/bench_adapter.py [--sizes 4 16] [--repeat 3] [--busy 2]

``--busy N`` runs N busy-loop processes beside the measurements (a shared machine).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import base_model_dir, write  # noqa: E402

TARGETS = ["query", "key", "value", "dense"]
RANK = 8


def make_adapters(root: Path, n: int) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    out = []
    for i in range(n):
        path = root / f"lora-{i}"
        if not path.exists():
            torch.manual_seed(i)
            pm = get_peft_model(AutoModel.from_pretrained(base_model_dir()),
                                LoraConfig(r=RANK, lora_alpha=16, target_modules=TARGETS))
            with torch.no_grad():
                for name, p in pm.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02)
            pm.save_pretrained(path)
        out.append(path)
    return out


def child(mode: str, args: list[str]) -> None:
    """One measurement in this process: prints {"seconds", "peak_rss_mb", ...} as JSON."""
    t = time.perf_counter()
    extra: dict = {}
    if mode == "zoo-add":
        from zoo import Zoo

        Zoo(args[0]).add([args[1]], name=f"a{time.time_ns()}")
    elif mode == "peft-load":
        from peft import PeftModel
        from transformers import AutoModel

        PeftModel.from_pretrained(AutoModel.from_pretrained(base_model_dir()), args[1])
    elif mode in ("zoo-centroid", "zoo-centroid-svd"):
        from zoo import Zoo

        names = json.loads(args[1])
        res = Zoo(args[0]).centroid(names=names, rank=RANK if mode.endswith("svd") else None,
                                    out=f"c{time.time_ns()}")
        extra["path"] = res.path
    elif mode in ("peft-cat", "peft-svd"):
        from peft import PeftModel
        from transformers import AutoModel

        paths = json.loads(args[1])
        pm = PeftModel.from_pretrained(AutoModel.from_pretrained(base_model_dir()), paths[0], adapter_name="m0")
        for i, p in enumerate(paths[1:], 1):
            pm.load_adapter(p, adapter_name=f"m{i}")
        names = [f"m{i}" for i in range(len(paths))]
        kw = {"combination_type": "cat"} if mode == "peft-cat" else {"combination_type": "svd", "svd_rank": RANK}
        pm.add_weighted_adapter(names, [1.0 / len(paths)] * len(paths), "mix", **kw)
        pm.save_pretrained(args[2], selected_adapters=["mix"])
        extra["path"] = str(Path(args[2]) / "mix")
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - t
    print(json.dumps(dict(extra, seconds=seconds, peak_rss_mb=peak_rss_mb())))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the parent through fork and exec, so every child would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(mode: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def delta(adapter: Path) -> dict:
    """ΔW of an adapter by PEFT's own merge (the reference both sides are held to)."""
    from peft import PeftModel
    from transformers import AutoModel

    base = AutoModel.from_pretrained(base_model_dir())
    ref = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()
    return {k: (merged[k] - ref[k]).double() for k in ref}


def rel_error(got: dict, want: dict) -> float:
    num = sum(float(((got[k] - want[k]) ** 2).sum()) for k in want)
    den = sum(float((want[k] ** 2).sum()) for k in want)
    return (num / den) ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the measurements")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        return child(a.child[0], a.child[1:])
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        measure(a)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def measure(a: argparse.Namespace) -> None:
    from zoo import Zoo

    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        ads = make_adapters(tmp / "adapters", max(a.sizes))
        home = tmp / "zoo"
        z = Zoo(home)
        z.add([base_model_dir()], name="base")
        # registration: a fresh zoo per repeat holding the base, one adapter added; alternating,
        # so drift hits both alike
        reg: dict[str, list] = {"zoo-add": [], "peft-load": []}
        for i in range(a.repeat):
            h = tmp / f"reg{i}"
            Zoo(h).add([base_model_dir()], name="base")
            reg["zoo-add"].append(run("zoo-add", str(h), str(ads[i])))
            reg["peft-load"].append(run("peft-load", "", str(ads[i])))
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "peak_rss_mb")} for k, v in reg.items()}
        rows.append({"what": "register one adapter", "zoo_s": med["zoo-add"]["seconds"],
                     "alt_s": med["peft-load"]["seconds"], "zoo_rss_mb": med["zoo-add"]["peak_rss_mb"],
                     "alt_rss_mb": med["peft-load"]["peak_rss_mb"], "alt": "AutoModel + PeftModel.from_pretrained"})
        print(rows[-1], flush=True)
        z.add([str(p) for p in ads])
        for n in a.sizes:
            names = [f"lora-{i}" for i in range(n)]
            want = None
            for ours, theirs in (("zoo-centroid", "peft-cat"), ("zoo-centroid-svd", "peft-svd")):
                zo = run(ours, str(home), json.dumps(names))
                pe = run(theirs, "", json.dumps([str(p) for p in ads[:n]]), str(tmp / f"{theirs}-{n}"))
                dz, dp = delta(Path(zo["path"])), delta(Path(pe["path"]))
                if want is None:  # the exact mean of the members' ΔW
                    parts = [delta(p) for p in ads[:n]]
                    want = {k: sum(p[k] for p in parts) / n for k in parts[0]}
                rows.append({"what": f"centroid of {n} ({'exact' if ours == 'zoo-centroid' else f'rank {RANK}'})",
                             "alt": f"add_weighted_adapter {theirs[5:]}", "zoo_s": zo["seconds"], "alt_s": pe["seconds"],
                             "zoo_rss_mb": zo["peak_rss_mb"], "alt_rss_mb": pe["peak_rss_mb"],
                             "zoo_rel_error": rel_error(dz, want), "alt_rel_error": rel_error(dp, want),
                             "zoo_vs_alt_rel_diff": rel_error(dz, dp)})
                print(rows[-1], flush=True)
    for r in rows:
        r["time_ratio"] = r["zoo_s"] / r["alt_s"]
        r["rss_ratio"] = r["zoo_rss_mb"] / r["alt_rss_mb"]
    write("adapter" if not a.busy else f"adapter-busy{a.busy}",
          {"rank": RANK, "targets": TARGETS, "repeat": a.repeat, "busy": a.busy, "rows": rows})
    print("| what | zoo | alternative | time zoo / alt | peak RSS zoo / alt (MB) | ΔW error zoo / alt |")
    for r in rows:
        err = f"{r['zoo_rel_error']:.2e} / {r['alt_rel_error']:.2e}" if "zoo_rel_error" in r else "-"
        print(f"| {r['what']} | {r['zoo_s'] * 1e3:.0f} ms | {r['alt']}: {r['alt_s'] * 1e3:.0f} ms | "
              f"{r['time_ratio']:.2f} | {r['zoo_rss_mb']:.0f} / {r['alt_rss_mb']:.0f} | {err} |")


if __name__ == "__main__":
    main()
