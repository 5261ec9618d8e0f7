"""Reproduce the paper's findings with zoo itself: every number comes from `zoo ... --json`.

Stages (`--stages`, in this order by default):
- clusters: `zoo clusters` at the dataset level (k = number of datasets) and the task level
  (k = number of tasks), on sketches (d=1024 and d=4096) and on exact task vectors
  (`--exact`), with purity and the sketch-vs-exact agreement (Rand index); and `zoo
  fidelity` (kNN@5 overlap, 1-NN same dataset, Spearman; sketches at each d and with an
  exact re-rank), written under `fidelity`;
- map: `zoo map --color-by dataset|task`, the paper's picture of the zoo;
- interior: points inside same-dataset regions (interpolation, Dirichlet hull sample,
  centroid) and past their ends (extrapolation), evaluated with `zoo eval` through the
  averaged head; points inside task regions (interpolation between datasets, Dirichlet
  sample, task centroid) evaluated with `zoo eval --probe` against the endpoints' probes;
- start: `zoo finetune` of every dataset D from the base and, leaving D out (on-region),
  from the centroid of every model not trained on D and from the centroid of D's task
  region without D; leaving D's whole task out (off-region), from the centroid of the other
  tasks' models; with 2 seeds, full data and few-shot (128 examples).
- advice: `zoo select-start --train` for each D and setting, with trial fine-tunes of each
  candidate and the learned mixture, in zoos without runs (on-region: the real zoo's models
  by reference, WORK/advice-zoo; off-region: without D's task, WORK/advice-zoo-without-TASK),
  judged against the start stage's fine-tunes (a recommended mixture is fine-tuned here with
  the same seeds, and those fine-tunes are removed from the zoo before the next call):
  `start.on_region` / `start.off_region` in reproduction.json
  (`select_start_best`, `select_start_judged`, `select_start_worst_loss`, the correlation of
  trial gains and of LogME gains with fine-tune gains).

- judge: more seeds (`--judge-seeds`, 4) for every start the advice is judged against (the
  start stage's starts, and a recommended mixture rebuilt from its recorded weights), added to
  the rows of the report already in OUT; select-start is not asked again. Two seeds leave
  about 1.2 points of noise on a difference of two starts, against the 0.5-point tie. The
  judgement before the added seeds is kept under `start.judge.before`.

`--settings few-shot` (or `full`) and `--regions off` (or `on`) run the start and advice
stages for one setting or one kind of target.
`--targets D ...` judges only those datasets (every model stays in the zoos).
`--carry-from OLD/reproduction.json` fills the start and advice rows this run's cache lacks
from an earlier report of the same zoo, checked by its exact pair distances (a cache lost
with a machine need not cost hours again when `make real-zoo` rebuilds the zoo). When the
rebuild is not bit-exact (float sums in another order), only whole datasets are carried, so
no advice is judged against starts of other weights; the report lists what was carried.

The real zoo at HOME stays as `make real-zoo` built it: the experiments register their
centroids and fine-tunes in a second zoo (WORK, default HOME-experiments) that holds the
same checkpoints by reference. Every zoo call's result and wall time is cached in
WORK/reproduce-cache.json, so an interrupted run resumes where it stopped. Writes
OUT/REPRODUCTION.md, OUT/reproduction.json and the PNG figures.

    python scripts/reproduce.py --home .zoo-real --data data/real [--out docs] [--stages ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

STAGES = ("clusters", "map", "interior", "start", "advice", "judge")
PAPER = {"dataset": "~98 % (same-dataset models cluster together)", "task": "looser than datasets (no single figure)"}
TIE = 0.005  # accuracy differences below half a point count as ties
REAL_NAME = re.compile(r"^(?P<dataset>.+)-s(?P<seed>\d+)$")


class ZooFailed(RuntimeError):
    pass


def zoo(home: Path, *args: str) -> dict | list:
    exe = Path(sys.executable).parent / "zoo"
    r = subprocess.run([str(exe) if exe.exists() else "zoo", "--home", str(home), *args, "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ZooFailed(f"zoo {' '.join(args)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


class Missing(LookupError):
    """A result that is not cached yet, in --report-only mode."""


class Cache:
    """Results of zoo calls that create models or train, keyed by what they computed, with
    their wall time and stage, saved after each call (resume after an interruption).
    With ``only_cached`` nothing runs: a missing result raises Missing (report what is done)."""

    def __init__(self, path: Path, only_cached: bool = False, deadline: float | None = None):
        self.path = path
        self.only_cached = only_cached
        self.deadline = deadline  # time.time() after which nothing new starts
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def call(self, stage: str, key: str, home: Path, *args: str) -> dict | list:
        if key in self.data:
            return self.data[key]["result"]
        if self.only_cached or (self.deadline is not None and time.time() > self.deadline):
            raise Missing(key)
        t0 = time.perf_counter()
        res = zoo(home, *args)
        self.put(stage, key, res, time.perf_counter() - t0)
        return res

    def put(self, stage: str, key: str, res: dict | list, seconds: float = 0.0) -> None:
        """Save one result. Two runs may share the cache (say the interior stage beside the
        start stage): under a lock, what the other wrote since is merged in, never overwritten."""
        self.data[key] = {"stage": stage, "seconds": seconds, "result": res}
        self._save()

    def drop(self, key: str) -> None:
        """Forget one result, in the file too (a later save would merge it back in)."""
        self._save(forget=key)

    def _save(self, forget: str | None = None) -> None:
        import fcntl

        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.data = {**json.loads(self.path.read_text()), **self.data}
            self.data.pop(forget, None)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)

    def seconds(self, stage: str) -> float:
        return sum(v["seconds"] for v in self.data.values() if v["stage"] == stage)


def rand_index(a: dict[str, int], b: dict[str, int]) -> float:
    """Share of model pairs on which two clusterings agree (same cluster in both, or in neither)."""
    names = sorted(set(a) & set(b))
    pairs = list(combinations(names, 2))
    if not pairs:
        return float("nan")
    return sum((a[x] == a[y]) == (b[x] == b[y]) for x, y in pairs) / len(pairs)


def real_models(home: Path) -> list[dict]:
    """The fine-tunes `make real-zoo` made (named DATASET-sSEED), sorted by dataset and seed."""
    out = []
    for m in zoo(home, "ls", "--kind", "finetune"):
        g = REAL_NAME.match(m["name"])
        if g and m["dataset"] == g["dataset"] and m["task"] and m["seed"] == int(g["seed"]):
            out.append(m)
    return sorted(out, key=lambda m: (m["dataset"], m["seed"]))


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


# ------------------------------------------------------------------ clusters and map (real zoo)

def stage_clusters(home: Path, big_dim: int) -> dict:
    models = [m for m in zoo(home, "ls", "--kind", "finetune") if m["dataset"] and m["task"]]
    spaces = zoo(home, "space", "ls")
    default = spaces[0]
    big = next((s for s in spaces if s["dim"] == big_dim and s["metric"] == default["metric"]), None)
    if big is None:
        big = zoo(home, "space", "add", "--dim", str(big_dim), "--metric", default["metric"])
    levels = {"dataset": len({m["dataset"] for m in models}), "task": len({m["task"] for m in models})}
    rows = []
    for level, k in levels.items():
        t0 = time.perf_counter()
        sk = zoo(home, "clusters", "-k", str(k))
        t1 = time.perf_counter()
        skb = zoo(home, "clusters", "-k", str(k), "--space", str(big["id"]))
        t2 = time.perf_counter()
        ex = zoo(home, "clusters", "-k", str(k), "--exact")
        t3 = time.perf_counter()
        exact = {r["name"]: r["cluster"] for r in ex["assignments"]}
        rows.append({"level": level, "k": k, "n": sk["n"], "paper": PAPER[level],
                     "sketch_dim": default["dim"], "sketch_purity": sk[f"purity_{level}"],
                     "sketch_big_dim": big_dim, "sketch_big_purity": skb[f"purity_{level}"],
                     "exact_purity": ex[f"purity_{level}"],
                     "sketch_exact_rand_index": rand_index({r["name"]: r["cluster"] for r in sk["assignments"]}, exact),
                     "sketch_big_exact_rand_index": rand_index({r["name"]: r["cluster"] for r in skb["assignments"]}, exact),
                     "sketch_seconds": t1 - t0, "sketch_big_seconds": t2 - t1, "exact_seconds": t3 - t2})
    fid = zoo(home, "fidelity", "-k", "5", "--rerank", "20")
    fidelity = [{"setting": r["setting"], "knn5_overlap": r["knn_overlap"], "nn1_same_dataset": r["nn1_same_dataset"],
                 "spearman": r["spearman"], "reads_models": r["reads_models"]} for r in fid["settings"]]
    return {"rows": rows, "n_models": len(models), "fidelity": fidelity, "pair_probe": pair_probe(home, models)}


def pair_probe(home: Path, models: list[dict]) -> dict:
    """What separates models, the dataset or the seed (data order and head initialisation)?
    Mean exact cosine distance of same-dataset/different-seed, same-task-and-seed/different-dataset
    and same-seed/different-task pairs. Its digits also fingerprint the zoo's weights (``--carry-from``)."""
    by_ds: dict[str, dict[int, str]] = {}
    task_of: dict[str, str] = {}
    for m in models:
        by_ds.setdefault(m["dataset"], {})[m["seed"]] = m["name"]
        task_of[m["dataset"]] = m["task"]
    pairs = []
    datasets = sorted(by_ds)
    for d in datasets:
        seeds = sorted(by_ds[d])
        same_task = [e for e in datasets if e != d and task_of[e] == task_of[d] and seeds and seeds[0] in by_ds[e]]
        other_task = [e for e in datasets if task_of[e] != task_of[d] and seeds and seeds[0] in by_ds[e]]
        if len(seeds) >= 2:
            pairs.append(("same dataset, different seed", by_ds[d][seeds[0]], by_ds[d][seeds[1]]))
        if same_task:
            pairs.append(("same task and seed, different dataset", by_ds[d][seeds[0]], by_ds[same_task[0]][seeds[0]]))
        if other_task:
            pairs.append(("same seed, different task", by_ds[d][seeds[0]], by_ds[other_task[0]][seeds[0]]))
    probe: dict[str, list[float]] = {}
    for kind, a, b in pairs:
        d = zoo(home, "distance", a, b, "--exact")
        probe.setdefault(kind, []).append(d["exact"]["cosine"])
    return {k: {"pairs": len(v), "mean_exact_cosine_distance": mean(v)} for k, v in probe.items()}


def stage_map(home: Path, out: Path) -> dict:
    figs = {}
    for by in ("dataset", "task"):
        path = out / f"map-{by}.png"
        res = zoo(home, "map", "-o", str(path), "--color-by", by, "--kind", "finetune", "--no-labels")
        figs[by] = {"path": path.name, "explained": res["explained"]}
    return {"figures": figs}


# ------------------------------------------------------------------ the experiment zoo

def prepare_work(home: Path, work: Path) -> tuple[list[dict], str]:
    """WORK holds the real zoo's base and fine-tunes by reference; returns (models, base name)."""
    real = real_models(home)
    bases = zoo(home, "ls", "--kind", "base")
    if not bases or not real:
        raise SystemExit(f"error: {home} has no base or no DATASET-sSEED fine-tunes; build it with `make real-zoo`")
    base = bases[0]
    have = {m["name"] for m in zoo(work, "ls")} if (work / "catalog.duckdb").exists() else set()
    if base["name"] not in have:
        zoo(work, "add", base["uri"], "--name", base["name"], "--kind", "base")
    for m in real:
        if m["name"] not in have:
            zoo(work, "add", m["uri"], "--name", m["name"], "--base", base["name"], "--dataset", m["dataset"],
                "--task", m["task"], "--seed", str(m["seed"]), "--kind", "finetune")
    return real, base["name"]


def fewshot_file(data: Path, work: Path, dataset: str, n: int) -> Path:
    """A deterministic, label-balanced sample of n training examples (every label present)."""
    out = work / "fewshot" / f"{dataset}.jsonl"
    if out.exists():
        return out
    rows = [json.loads(line) for line in (data / dataset / "train.jsonl").read_text().splitlines() if line.strip()]
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(str(r["label"]), []).append(r)
    rng = random.Random(0)
    for v in by_label.values():
        rng.shuffle(v)
    picked, i = [], 0
    while len(picked) < min(n, len(rows)):
        for v in by_label.values():
            if i < len(v) and len(picked) < n:
                picked.append(v[i])
        i += 1
    rng.shuffle(picked)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in picked))
    tmp.replace(out)
    return out


def compare(acc: float, refs: list[float]) -> dict:
    return {"accuracy": acc, "endpoints": refs, "vs_worst": acc - min(refs), "vs_mean": acc - mean(refs),
            "vs_best": acc - max(refs)}


def stage_interior(work: Path, data: Path, real: list[dict], base_name: str, cache: Cache, evargs: list[str]) -> dict:
    by_ds: dict[str, list[str]] = {}
    task_of: dict[str, str] = {}
    for m in real:
        by_ds.setdefault(m["dataset"], []).append(m["name"])
        task_of[m["dataset"]] = m["task"]

    def ev(names: list[str], ds: str, probe: bool) -> dict[str, float]:
        """Test accuracy of several models on ds in one `zoo eval` (head, or probe trained on dev)."""
        args = ["eval", *names, "--data", str(data / ds / "test.jsonl"), "--dataset", ds, "--split", "test", *evargs]
        if probe:
            args += ["--probe", "--train", str(data / ds / "dev.jsonl")]
        res = cache.call("interior", f"eval:{ds}:{'probe' if probe else 'head'}:{','.join(names)}", work, *args)
        return {r["name"]: r["value"] for r in (res if isinstance(res, list) else [res])}

    def make(key: str, *args: str) -> str:
        return cache.call("interior", f"make:{key}", work, *args, "--out", key)["name"]

    dataset_rows, skipped = [], []
    for ds, names in sorted(by_ds.items()):
        if len(names) < 2:
            continue
        a, b = names[0], names[1]
        try:
            points = [("interpolation α=0.5", make(f"int-{ds}-0.5", "interpolate", a, b, "--alpha", "0.5"), [a, b])]
            if len(names) >= 3:
                points.append(("Dirichlet hull sample", make(f"dir-{ds}", "centroid", *names, "--dirichlet", "1.0",
                                                               "--seed", "0"), names))
            points.append(("centroid", make(f"cen-{ds}", "centroid", *names), names))
            ext = [(f"extrapolation α={alpha}", make(f"ext-{ds}-{alpha}", "interpolate", a, b, "--alpha", alpha,
                                                     "--extrapolate"), near) for alpha, near in (("-0.5", a), ("1.5", b))]
            acc = ev(names + [p[1] for p in points] + [e[1] for e in ext], ds, False)
        except Missing:
            skipped.append(ds)
            continue
        for label, name, members in points:
            dataset_rows.append({"dataset": ds, "point": label, "name": name, "members": members,
                                 **compare(acc[name], [acc[m] for m in members])})
        for label, name, near in ext:
            dataset_rows.append({"dataset": ds, "point": label, "name": name, "members": [a, b], "nearer_endpoint": near,
                                 **compare(acc[name], [acc[a], acc[b]]), "vs_nearer": acc[name] - acc[near]})

    task_rows = []
    for task in sorted(set(task_of.values())):
        dss = sorted(d for d in by_ds if task_of[d] == task)
        members = [n for d in dss for n in by_ds[d]]
        first = {d: by_ds[d][0] for d in dss}
        try:
            points = [("task centroid", make(f"cen-task-{task}", "centroid", *members), dss),
                      ("task Dirichlet sample", make(f"dir-task-{task}", "centroid", *members, "--dirichlet", "1.0",
                                                     "--seed", "0"), dss)]
            pairs = list(zip(dss, dss[1:] + dss[:1])) if len(dss) > 2 else [tuple(dss)] if len(dss) == 2 else []
            for d1, d2 in pairs:
                points.append((f"interpolation {d1} ↔ {d2}", make(f"int-{first[d1]}-{first[d2]}", "interpolate",
                                                                   first[d1], first[d2], "--alpha", "0.5"), [d1, d2]))
        except Missing:
            skipped.append(f"task {task}")
            continue
        for d in dss:
            on_d = [(label, name) for label, name, on in points if d in on]
            try:
                acc = ev([first[d], base_name] + [name for _, name in on_d], d, True)
            except Missing:
                skipped.append(f"{d} (probe)")
                continue
            for label, name in on_d:
                task_rows.append({"task": task, "point": label, "name": name, "dataset": d, "accuracy": acc[name],
                                  "endpoint": acc[first[d]], "base": acc[base_name],
                                  "vs_endpoint": acc[name] - acc[first[d]], "vs_base": acc[name] - acc[base_name]})
    return {"dataset_level": dataset_rows, "task_level": task_rows, "tie": TIE, "not_done": skipped,
            "seconds": cache.seconds("interior")}


def region_starts(work: Path, real: list[dict], base: str, cache: Cache, ds: str,
                  regions: tuple[str, ...]) -> dict[str, str]:
    """The start stage's starts for dataset DS (start -> model name in WORK), the centroids made
    once and cached: the base; on-region the centroid of every model not trained on DS and of
    DS's task without DS; off-region the centroid of the other tasks' models."""
    task = next(m["task"] for m in real if m["dataset"] == ds)
    others = [m["name"] for m in real if m["dataset"] != ds]
    same_task = [m["name"] for m in real if m["dataset"] != ds and m["task"] == task]
    other_tasks = [m["name"] for m in real if m["task"] != task]
    starts = {"base": base}
    if "on" in regions:
        starts["all-centroid"] = cache.call("start", f"make:loo-all-{ds}", work, "centroid", *others,
                                            "--out", f"loo-all-{ds}")["name"]
    if same_task and "on" in regions:
        starts["task-centroid"] = cache.call("start", f"make:loo-task-{ds}", work, "centroid", *same_task,
                                             "--out", f"loo-task-{ds}")["name"]
    if other_tasks and "off" in regions:
        starts["off-centroid"] = cache.call("start", f"make:lot-all-{task}", work, "centroid", *other_tasks,
                                            "--out", f"lot-all-{task}")["name"]
    return starts


def start_finetune(work: Path, data: Path, cache: Cache, setting: str, hp: dict, ds: str, task: str, start: str,
                   name: str, seed: int, stage: str = "start") -> float:
    """Test accuracy of one cached `zoo finetune` of DS from NAME (the start stage's START) with SEED."""
    train = fewshot_file(data, work, ds, hp["examples"]) if hp.get("examples") else data / ds / "train.jsonl"
    out = f"sp-{setting}-{ds}-{start}-s{seed}"
    return cache.call(stage, f"finetune:{out}", work, "finetune", "--from", name, "--train", str(train),
                      "--eval", str(data / ds / "test.jsonl"), "--dataset", ds, "--task", task,
                      "--seed", str(seed), "--epochs", str(hp["epochs"]), "--lr", str(hp["lr"]),
                      "--batch-size", str(hp["batch_size"]), "--max-length", str(hp["max_length"]),
                      "--out", out)["eval_accuracy"]


def stage_start(work: Path, data: Path, real: list[dict], base: str, cache: Cache, settings: dict,
                seeds: int, regions: tuple[str, ...] = ("on", "off"), targets: set[str] | None = None) -> dict:
    """Fine-tunes of every dataset D from each start: on-region (leave D out: the base, the
    centroid of every model not trained on D, the centroid of D's task without D) and
    off-region (leave D's whole task out: the centroid of the other tasks' models)."""
    task_of = {m["dataset"]: m["task"] for m in real}
    # Round-robin over tasks, so that a run stopped by its budget still covers every task.
    per_task = [sorted(d for d in task_of if task_of[d] == t) for t in sorted(set(task_of.values()))]
    datasets = [d for i in range(max(map(len, per_task))) for ds in per_task for d in ds[i:i + 1]
                if targets is None or d in targets]
    results: dict[str, dict] = {s: {} for s in settings}
    not_done: dict[str, list[str]] = {s: [] for s in settings}

    def one(setting: str, hp: dict, ds: str) -> dict:
        starts = region_starts(work, real, base, cache, ds, regions)
        accs = {start: [start_finetune(work, data, cache, setting, hp, ds, task_of[ds], start, name, seed)
                        for seed in range(seeds)] for start, name in starts.items()}
        acc = {k: mean(v) for k, v in accs.items()}
        return {"task": task_of[ds], "accuracy": acc, "runs": accs, "best": max(acc, key=acc.get)}

    for setting, hp in settings.items():
        for ds in datasets:
            try:
                results[setting][ds] = one(setting, hp, ds)
            except Missing:
                not_done[setting].append(ds)
    return {"settings": settings, "seeds": seeds, "per_dataset": results, "summary": summarize_start(results),
            "tie": TIE,
            "not_done": not_done,
            "seconds": cache.seconds("start"),
            "seconds_by_setting": {s: sum(v["seconds"] for k, v in cache.data.items()
                                          if v["stage"] == "start" and k.startswith(f"finetune:sp-{s}-"))
                                   for s in settings}}


def summarize_start(per_dataset: dict[str, dict]) -> dict:
    """Per setting and centroid start: wins / ties / losses against the base and the mean gain."""
    summary = {}
    for setting, per in per_dataset.items():
        s = {}
        for start in ("all-centroid", "task-centroid", "off-centroid"):
            gains = [r["accuracy"][start] - r["accuracy"]["base"] for r in per.values() if start in r["accuracy"]]
            s[start] = {"wins": sum(g > TIE for g in gains), "ties": sum(abs(g) <= TIE for g in gains),
                        "losses": sum(g < -TIE for g in gains), "mean_gain": mean(gains), "n": len(gains)}
        summary[setting] = s
    return summary


# Which start-stage start each select-start candidate is, in the on- and off-region zoos.
ADVICE_START = {"on": {"base": "base", "family-centroid": "all-centroid", "task-centroid": "task-centroid",
                       "mixture": "mixture"},
                "off": {"base": "base", "family-centroid": "off-centroid", "mixture": "mixture"}}


def prepare_off_region(home: Path, zoo_dir: Path, task: str) -> None:
    """A zoo of the real zoo's base and the fine-tunes of every task but TASK (by reference)."""
    real = real_models(home)
    base = zoo(home, "ls", "--kind", "base")[0]
    have = {m["name"] for m in zoo(zoo_dir, "ls")} if (zoo_dir / "catalog.duckdb").exists() else set()
    if base["name"] not in have:
        zoo(zoo_dir, "add", base["uri"], "--name", base["name"], "--kind", "base")
    for m in real:
        if m["task"] != task and m["name"] not in have:
            zoo(zoo_dir, "add", m["uri"], "--name", m["name"], "--base", base["name"], "--dataset", m["dataset"],
                "--task", m["task"], "--seed", str(m["seed"]), "--kind", "finetune")


def scrub(zoo_dir: Path, keep: set[str]) -> list[str]:
    """Remove from ZOO_DIR every fine-tuned model that is not one of the experiment's (KEEP).

    select-start's centroid candidates are specs over the zoo's fine-tunes, and ``zoo finetune``
    records its result in the zoo it ran in, so the fine-tunes of a recommended mixture would
    join every later call's task and family centroids (they did, until 2026-12-03)."""
    gone = []
    for m in zoo(zoo_dir, "ls", "--kind", "finetune"):
        if m["name"] not in keep:
            zoo(zoo_dir, "rm", m["name"], "--force")  # materialized centroids averaged it: they stay
            gone.append(m["name"])
    return gone


def family_members(sel: dict) -> int | None:
    """How many fine-tunes select-start's family centroid averaged (None when it had none)."""
    fam = next((c for c in sel.get("candidates", []) if c["category"] == "family-centroid"), None)
    return fam["evidence"].get("members") if fam is not None else None


def redecide(sel: dict, z: float) -> dict:
    """select-start's answer SEL as it reads under the decision rule ``z``: its candidates'
    evidence (the trials are seeded, so a new call would measure the same) passed through
    the same pure ``advise`` that made it. Used when a cached answer was made under another rule."""
    from zoo.select import Candidate, Estimate, advise

    fields = set(Candidate.__dataclass_fields__)
    cands = [Candidate(**{k: v for k, v in c.items() if k in fields}) for c in sel["candidates"]]
    estimates = {c.start: [Estimate(**s) for s in c.sources] for c in cands}
    for c in cands:
        c.recommended = False
    ordered, reason = advise(cands, estimates, z)
    return dict(sel, recommended=ordered[0].start, reason=reason,
                candidates=[dict(c.as_dict(), rank=i + 1) for i, c in enumerate(ordered)])


def stage_advice(home: Path, work: Path, data: Path, real: list[dict], settings: dict, only_cached: bool,
                 deadline: float | None, examples: dict[str, int], folds: int, seeds: int,
                 regions: tuple[str, ...] = ("on", "off"), targets: set[str] | None = None) -> dict:
    """`zoo select-start --train` for every D and setting, with trial fine-tunes of each
    candidate in the setting's hyperparameters, in zoos without runs: on-region (the real
    zoo's models) and off-region (without D's task). Candidates are the starts the start
    stage fine-tunes (``--neighbours 0``) and the learned mixture; a recommended mixture is
    fine-tuned here with the start stage's seeds and setting, so every recommendation is judged."""
    from zoo.select import Z as RULE_Z  # a cached recommendation made under another rule is not reused

    task_of = {m["dataset"]: m["task"] for m in real}
    zoos = {"on": work / "advice-zoo"}
    zoos.update({f"off:{t}": work / f"advice-zoo-without-{t}" for t in sorted(set(task_of.values()))})
    if not only_cached:
        prepare_work(home, zoos["on"])
        for t in sorted(set(task_of.values())):
            prepare_off_region(home, zoos[f"off:{t}"], t)
    cache = Cache(work / "advice-cache.json", only_cached=only_cached, deadline=deadline)
    # The experiment's fine-tunes in each zoo: anything else is scrubbed before a call runs,
    # and a cached answer whose family centroid averaged another number of models is not reused.
    keep = {"on": {m["name"] for m in real}}
    keep.update({f"off:{t}": {m["name"] for m in real if m["task"] != t} for t in set(task_of.values())})
    dataset_of = {m["name"]: m["dataset"] for m in real}
    stale: list[str] = []
    picks: dict[str, dict] = {r: {s: {} for s in settings} for r in regions}
    not_done: dict[str, list[str]] = {f"{r}:{s}": [] for r in regions for s in settings}
    for setting, hp in settings.items():
        for ds in sorted(d for d in task_of if targets is None or d in targets):
            train = fewshot_file(data, work, ds, hp["examples"]) if hp.get("examples") else data / ds / "train.jsonl"
            for region in regions:
                zone = "on" if region == "on" else f"off:{task_of[ds]}"
                z = zoos[zone]
                key = f"advice:{region}:{setting}:{ds}"
                zkey = f"{key}:z={RULE_Z:g}"  # the answer under the current rule
                members = sum(dataset_of[n] != ds for n in keep[zone])
                earlier = [k for k in cache.data if (k == key or k.startswith(key + ":z="))
                           and family_members(cache.data[k]["result"]) in (None, members)]
                if zkey in cache.data and zkey not in earlier:
                    stale.append(zkey)  # made in a zoo holding other fine-tunes: run again
                    cache.drop(zkey)
                if not only_cached and zkey not in cache.data and not earlier:
                    scrub(z, keep[zone])
                if zkey not in cache.data and earlier:
                    # Made under another rule: the same trials, decided again (and said so in the report).
                    cache.put("advice", zkey,
                              dict(redecide(cache.data[earlier[0]]["result"], RULE_Z), redecided_from=earlier[0]))
                try:
                    sel = cache.call("advice", zkey, z, "select-start",
                                     "--task", task_of[ds],
                                     "--dataset", ds, "--neighbours", "0", "--train", str(train),
                                     "--examples", str(examples[setting]), "--folds", str(folds),
                                     "--epochs", str(hp["epochs"]), "--lr", str(hp["lr"]),
                                     "--batch-size", str(hp["batch_size"]), "--max-length", str(hp["max_length"]))
                except Missing:
                    not_done[f"{region}:{setting}"].append(ds)
                    continue
                names = ADVICE_START[region]
                cands = [c for c in sel["candidates"] if c["category"] in names]
                rec_c = next(c for c in sel["candidates"] if c["recommended"])
                rec = rec_c["category"]
                pick = picks[region][setting][ds] = {
                    "task": task_of[ds], "recommended": names.get(rec, rec), "reason": sel["reason"],
                    "expected_gain": {names[c["category"]]: c["expected_gain"] for c in cands},
                    "gain_se": {names[c["category"]]: c["gain_se"] for c in cands},
                    "trial_accuracy": {names[c["category"]]: c["evidence"].get("trial_accuracy") for c in cands},
                    "logme_gain": {names[c["category"]]: c["evidence"].get("logme_gain") for c in cands},
                    "trial_examples": cands[0]["evidence"].get("trial_examples") if cands else None,
                    "notes": sel.get("notes", [])}
                if sel.get("redecided_from"):
                    pick["redecided_from"] = sel["redecided_from"]
                mix = next((c for c in cands if c["category"] == "mixture"), None)
                if mix is not None:
                    pick["mixture_weights"] = mix["evidence"]["regions"]
                if rec == "mixture":  # not among the start stage's starts: fine-tune it here, same seeds
                    fts = [f"finetune:adv-{region}-{setting}-{ds}-mixture-s{seed}" for seed in range(seeds)]
                    # A cached fine-tune of another mixture (a stale answer's) is not this one's.
                    other = [ft for ft in fts if ft in cache.data and cache.data[ft]["result"].get("start") != rec_c["start"]]
                    for ft in other:
                        cache.drop(ft)
                    if other and not only_cached:
                        scrub(z, keep[zone])
                    try:
                        accs = [cache.call("advice", fts[seed], z,
                                           "finetune", "--from", rec_c["start"], "--train", str(train),
                                           "--eval", str(data / ds / "test.jsonl"), "--dataset", ds,
                                           "--task", task_of[ds], "--seed", str(seed), "--epochs", str(hp["epochs"]),
                                           "--lr", str(hp["lr"]), "--batch-size", str(hp["batch_size"]),
                                           "--max-length", str(hp["max_length"]),
                                           "--out", f"adv-{region}-{setting}-{ds}-mixture-s{seed}")["eval_accuracy"]
                                for seed in range(seeds)]
                        pick.update(mixture_accuracy=mean(accs), mixture_runs=accs, mixture_seeds=len(accs))
                    except Missing:
                        not_done[f"{region}:{setting}"].append(f"{ds} (fine-tunes of the recommended mixture)")
    return {"picks": picks, "not_done": not_done, "examples": examples, "folds": folds, "stale": stale,
            "seconds": cache.seconds("advice")}


def mixture_members(real: list[dict], base: str, weights: dict[str, float]) -> tuple[list[str], list[float]]:
    """The models and weights of a learned mixture (select-start's ``regions``: the base's weight
    under "(base)", each dataset region's spread evenly over its fine-tunes), as `zoo centroid`
    takes them. Zero weights are left out: they change nothing."""
    names, w = [], []
    if weights.get("(base)", 0.0):
        names.append(base)
        w.append(weights["(base)"])
    for ds, x in sorted(weights.items()):
        if ds == "(base)" or not x:
            continue
        members = [m["name"] for m in real if m["dataset"] == ds]
        if not members:
            raise ValueError(f"the mixture names region {ds!r}, which has no fine-tunes in this zoo")
        names += members
        w += [x / len(members)] * len(members)
    return names, w


def mixture_key(names: list[str], weights: list[float]) -> str:
    """A short name for a mixture's members and weights: one checkpoint and one set of
    fine-tunes per mixture, shared by the regions and datasets that picked the same one."""
    return hashlib.sha1(json.dumps([names, weights]).encode()).hexdigest()[:10]


def stage_judge(work: Path, data: Path, real: list[dict], base: str, cache: Cache, settings: dict, seeds: int,
                regions: tuple[str, ...], results: dict, targets: set[str] | None = None) -> dict:
    """Sharpen the judge: fine-tune every judged start of RESULTS (the start stage's starts of each
    region, and a recommended mixture, rebuilt from its recorded weights) with more seeds, up to
    SEEDS per start, and add them to the rows. select-start's answers are not asked again: only
    the accuracies they are judged against get more runs. Two seeds leave about 1.2 points of
    noise on a difference of two starts (docs/REPRODUCTION-NOTES.md), more than the 0.5-point tie."""
    st, ad = results["start"], results["advice"]
    prev = st.get("judge") or {}
    judged = set(prev.get("seeds", {}))  # settings judged before: keep the judgement they started from
    before: dict[str, dict[str, dict]] = {}
    for r, by in judge_advice(ad, st).items():
        for k, v in by.items():
            kept = prev.get("before", {}).get(r, {}).get(k) if k in judged else None
            if kept is not None or k in settings:
                before.setdefault(r, {})[k] = kept or {x: v[x] for x in ("select_start_best", "select_start_judged",
                                                                         "select_start_worst_loss")}
    added: dict[str, dict[str, dict[str, list[int]]]] = prev.get("added", {})
    not_done: dict[str, list[str]] = {}
    for setting, hp in settings.items():
        per = st["per_dataset"].get(setting, {})
        for region in regions:  # on-region first: a run stopped by its budget finishes one region before the other
            for ds in sorted(d for d in per if targets is None or d in targets):
                row, task = per[ds], per[ds]["task"]
                try:
                    names = region_starts(work, real, base, cache, ds, (region,))
                    for start, name in names.items():
                        runs = row["runs"].setdefault(start, [])
                        for seed in range(len(runs), seeds):
                            runs.append(start_finetune(work, data, cache, setting, hp, ds, task, start, name, seed,
                                                       stage="judge"))
                            added.setdefault(setting, {}).setdefault(ds, {}).setdefault(start, []).append(seed)
                    pick = ad["picks"].get(region, {}).get(setting, {}).get(ds)
                    if pick and pick["recommended"] == "mixture" and pick.get("mixture_weights"):
                        mix_names, w = mixture_members(real, base, pick["mixture_weights"])
                        sig = mixture_key(mix_names, w)
                        made = cache.call("judge", f"make:judge-mix-{sig}", work, "centroid", *mix_names, "--weights",
                                          ",".join(repr(x) for x in w), "--out", f"judge-mix-{sig}")["name"]
                        known = pick.get("mixture_runs")
                        # Earlier reports kept only the mean over the start stage's seeds.
                        have = len(known) if known else pick.get("mixture_seeds", st["seeds"])
                        new = [start_finetune(work, data, cache, setting, hp, ds, task, f"mixture-{sig}", made, seed,
                                              stage="judge") for seed in range(have, seeds)]
                        pick["mixture_accuracy"] = (pick["mixture_accuracy"] * have + sum(new)) / (have + len(new))
                        pick["mixture_seeds"] = have + len(new)
                        pick.setdefault("mixture_runs" if known else "mixture_added_runs", []).extend(new)
                        if new:
                            added.setdefault(setting, {}).setdefault(ds, {})[f"{region}:mixture"] = list(range(have, seeds))
                except Missing:
                    not_done.setdefault(setting, []).append(f"{region}:{ds}")
                acc = {k: mean(v) for k, v in row["runs"].items()}
                row.update(accuracy=acc, best=max(acc, key=acc.get))
    st["summary"] = summarize_start(st["per_dataset"])
    return {"seeds": dict(prev.get("seeds", {}), **{k: seeds for k in settings}),
            "regions": sorted(set(prev.get("regions", [])) | set(regions)), "added": added,
            "not_done": not_done, "seconds": cache.seconds("judge"), "before": before}


def judged_accuracies(region: str, row: dict, pick: dict) -> dict[str, float]:
    """The test accuracies of the starts select-start chose among for one dataset: the start
    stage's ROW of the region's starts, plus the mixture where PICK's was fine-tuned."""
    acc = {k: v for k, v in row["accuracy"].items() if k in ADVICE_START[region].values()}
    if "mixture_accuracy" in pick:
        acc["mixture"] = pick["mixture_accuracy"]
    return acc


def judge_advice(advice: dict, start: dict | None) -> dict:
    """Per region and setting: was select-start's recommendation the best start the start
    stage ran (within TIE), its largest loss to the base, and how its expected gains
    correlate with the fine-tunes' gains over the base."""
    out: dict[str, dict] = {}
    for region, by_setting in advice["picks"].items():
        out[region] = {}
        for setting, picks in by_setting.items():
            per = (start or {}).get("per_dataset", {}).get(setting, {})
            rows, pairs, logme_pairs = {}, [], []
            for ds, p in picks.items():
                r = per.get(ds)
                if r is None:
                    continue
                acc = judged_accuracies(region, r, p)
                rec = p["recommended"]
                if rec not in acc:
                    rows[ds] = {"recommended": rec, "was_best": None, "loss_to_base": None}
                    continue
                best = max(acc.values())
                rows[ds] = {"recommended": rec, "was_best": acc[rec] >= best - TIE, "best": max(acc, key=acc.get),
                            "loss_to_base": acc["base"] - acc[rec]}
                for k, g in p["expected_gain"].items():
                    if k != "base" and k in acc and g is not None:
                        pairs.append((g, acc[k] - acc["base"]))
                for k, g in p.get("logme_gain", {}).items():
                    if k != "base" and k in acc and g is not None:
                        logme_pairs.append((g, acc[k] - acc["base"]))
            judged = [x for x in rows.values() if x["was_best"] is not None]
            out[region][setting] = {
                "rows": rows, "select_start_best": sum(x["was_best"] for x in judged),
                "select_start_judged": len(judged),
                "select_start_worst_loss": max([max(0.0, x["loss_to_base"]) for x in judged], default=None),
                "gain_correlation": pearson(pairs), "gain_pairs": len(pairs),
                "logme_correlation": pearson(logme_pairs), "logme_pairs": len(logme_pairs),
                "sign_agree": sum((a > 0) == (b > 0) for a, b in pairs if abs(b) > TIE),
                "sign_judged": sum(abs(b) > TIE for _, b in pairs)}
    return out


class NotSameZoo(ValueError):
    """An earlier report whose rows cannot be carried: it was measured on other weights."""


SAME_ZOO_TOL = 1e-5  # a faithful rebuild matched the earlier report to 6e-7 relative
REBUILD_TOL = 1e-3  # a rebuild with other thread counts differed by 6e-5; a replaced model moves them ~1e-2


def check_same_zoo(prev: dict, probe: dict, source: str) -> float:
    """The largest relative difference between PREV's exact pair distances
    (``clusters.pair_probe``) and PROBE's; raise NotSameZoo past REBUILD_TOL.
    The distances are sums over every weight of the compared fine-tunes, so a retrained or
    replaced model moves them about 1e-2. `make real-zoo` is not bit-exact: float sums in
    another order (the thread count followed the machine's load) gave 6e-7 on one rebuild and
    6e-5 on another, with every model's accuracy equal both times. Up to SAME_ZOO_TOL the weights are the same; up to REBUILD_TOL they are another
    build of the same recipe, whose rows ``carry`` takes only a whole dataset at a time."""
    before = (prev.get("clusters") or {}).get("pair_probe") or {}
    if not before:
        raise NotSameZoo(f"{source} has no clusters.pair_probe to check the zoo against; run the clusters stage "
                         "when making a report whose rows are to be carried")
    if set(before) != set(probe):
        raise NotSameZoo(f"{source} was measured on another zoo (pair kinds {sorted(before)} there, "
                         f"{sorted(probe)} here); rerun without --carry-from")
    worst = 0.0
    for kind, now in probe.items():
        was = before[kind]
        d = abs(was["mean_exact_cosine_distance"] - now["mean_exact_cosine_distance"])
        rel = d / max(abs(now["mean_exact_cosine_distance"]), 1e-9)
        if was["pairs"] != now["pairs"] or rel > REBUILD_TOL:
            raise NotSameZoo(f"{source} was measured on another zoo: '{kind}' mean exact distance "
                             f"{was['mean_exact_cosine_distance']} over {was['pairs']} pairs there, "
                             f"{now['mean_exact_cosine_distance']} over {now['pairs']} pairs here; "
                             "rerun without --carry-from")
        worst = max(worst, rel)
    return worst


def carry(results: dict, prev: dict, source: str, rel_diff: float = 0.0) -> dict[str, dict[str, list[str]]]:
    """Fill the start and advice rows this run's cache lacks from PREV, an earlier report of the
    same zoo (``check_same_zoo`` gives REL_DIFF): a cache lost with its machine need not be
    recomputed. Rows this run has are never replaced. From the same weights (REL_DIFF up to
    SAME_ZOO_TOL) any missing row is carried; from another build, only datasets of a setting
    this run has no start or advice row for, and then all their rows, so that no advice is
    judged against starts of other weights. Carried rows are listed under each stage's
    ``carried`` with the source, and the report says so. Returns what was carried."""
    same = rel_diff <= SAME_ZOO_TOL
    st, pst = results.get("start"), prev.get("start")
    ad, pad = results.get("advice"), prev.get("advice")

    def untouched(setting: str, ds: str) -> bool:
        if same:
            return True
        if st is not None and (ds in st["per_dataset"].get(setting, {}) or ds not in st["not_done"].get(setting, [])):
            return False
        return ad is None or all(ds not in by.get(setting, {}) and ds in ad["not_done"].get(f"{r}:{setting}", [])
                                 for r, by in ad["picks"].items())

    # Both stages are chosen before either is filled, so `untouched` sees only this run's rows.
    got_start: dict[str, list[str]] = {}
    if st is not None and pst is not None:
        for setting in st["settings"]:
            have = st["per_dataset"].setdefault(setting, {})
            for ds in pst.get("per_dataset", {}).get(setting, {}):
                if ds not in have and ds in st["not_done"].get(setting, []) and untouched(setting, ds):
                    got_start.setdefault(setting, []).append(ds)
    got_advice: dict[str, list[str]] = {}
    if ad is not None and pad is not None:
        for region, by_setting in ad["picks"].items():
            for setting, picks in by_setting.items():
                waiting = ad["not_done"].get(f"{region}:{setting}", [])
                for ds in pad.get("picks", {}).get(region, {}).get(setting, {}):
                    if ds not in picks and ds in waiting and untouched(setting, ds):
                        got_advice.setdefault(f"{region}:{setting}", []).append(ds)
    build = {"from": source, "same_weights": same, "pair_rel_diff": rel_diff}
    out: dict[str, dict[str, list[str]]] = {}
    if got_start:
        for setting, dss in got_start.items():
            for ds in dss:
                st["per_dataset"][setting][ds] = pst["per_dataset"][setting][ds]
                st["not_done"][setting].remove(ds)
        st["summary"] = summarize_start(st["per_dataset"])
        st["carried"] = dict(build, rows=got_start, seconds=pst.get("seconds", 0.0),
                             seconds_by_setting=pst.get("seconds_by_setting", {}))
        out["start"] = got_start
    if got_advice:
        for key, dss in got_advice.items():
            region, setting = key.split(":", 1)
            for ds in dss:
                ad["picks"][region][setting][ds] = pad["picks"][region][setting][ds]
                ad["not_done"][key].remove(ds)
        ad["carried"] = dict(build, rows=got_advice, seconds=pad.get("seconds", 0.0))
        out["advice"] = got_advice
    return out


def carried_from(c: dict) -> str:
    """How the report names the earlier report a stage's rows were carried from."""
    if c.get("same_weights", True):
        return "an earlier report of the same zoo (its exact pair distances match this zoo's)"
    return (f"an earlier build of the same zoo (`make real-zoo` again: its exact pair distances differ from this "
            f"build's by {c['pair_rel_diff']:.0e} relative, so each carried dataset's starts and advice both come "
            "from that build, never judged against this one's)")


def pearson(pairs: list[tuple[float, float]]) -> float:
    if len(pairs) < 3:
        return float("nan")
    xs, ys = [a for a, _ in pairs], [b for _, b in pairs]
    mx, my = mean(xs), mean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")


# ------------------------------------------------------------------ report

def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def pct(x: float | None) -> str:
    return f"{x:.1%}" if finite(x) else "n/a"


def pts(x: float | None) -> str:
    return f"{x * 100:+.2f}" if finite(x) else "n/a"


def corr(x: float | None) -> str:
    return f"{x:.2f}" if finite(x) else "n/a"


def strict_json(x):
    """``x`` with every NaN or infinity as null: the file is JSON any parser reads (RFC 8259 has no NaN)."""
    if isinstance(x, float):
        return x if finite(x) else None
    if isinstance(x, dict):
        return {k: strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict_json(v) for v in x]
    return x


def report(results: dict, home: Path, data: Path) -> str:
    lines = ["# Reproducing *Knowledge is a Region in Weight Space* with zoo", "",
             f"Generated by `make reproduce` (`scripts/reproduce.py`) from `zoo ... --json` on the zoo at `{home}`; "
             "every figure below is a zoo command's output. The paper is Gueta et al. 2023 (fine-tunes of RoBERTa-base "
             "on 36 datasets in 3 tasks, several seeds, trained to convergence on a GPU); ours is all-MiniLM-L6-v2 "
             "fine-tuned on 10 datasets in 3 tasks built from Debian packages (`make datasets`), on 2 CPU cores.", ""]
    times = home / "real_zoo_times.json"
    wall = [("| stage | command | wall time |"), "|---|---|---|"]
    build = data / "build.json"
    if build.exists():
        wall.append(f"| dataset build | `make datasets` | {json.loads(build.read_text())['seconds']:.0f} s |")
    if times.exists():
        t = json.loads(times.read_text())
        total = sum(v["wall_s"] for v in t.values())
        lines += [f"Zoo: {len(t)} fine-tunes built by `make real-zoo` (2 epochs, max length 64, batch 32, lr 1e-4), "
                  f"{total / 60:.1f} min of fine-tuning ({min(v['wall_s'] for v in t.values()):.0f}-"
                  f"{max(v['wall_s'] for v in t.values()):.0f} s a model).", ""]
        wall.append(f"| zoo build ({len(t)} fine-tunes) | `make real-zoo` | {total / 60:.1f} min |")
    for st, label in (("clusters", "clusters"), ("map", "map"), ("interior", "region interior"),
                      ("start", "starting points"), ("advice", "select-start --train trials")):
        if st in results and "seconds" in results[st]:
            wall.append(f"| {label} | `make reproduce` | {results[st]['seconds'] / 60:.1f} min |")
        if st in results and results[st].get("carried"):
            wall.append(f"| … in the earlier run whose rows were carried | `{results[st]['carried']['from']}` | "
                        f"{results[st]['carried']['seconds'] / 60:.1f} min |")
        if st == "start" and "start" in results:
            before = results["start"].get("carried", {}).get("seconds_by_setting", {})
            for s, sec in results["start"]["seconds_by_setting"].items():
                more = f" (+ {before[s] / 60:.1f} min in the earlier run)" if before.get(s) else ""
                wall.append(f"| … of which {s} fine-tunes | | {sec / 60:.1f} min{more} |")
    lines += ["## Wall time (2 CPU cores)", "", *wall, "",
              "Experiment stages sum the wall time of every zoo command they ran, across resumed runs.", ""]

    if "clusters" in results:
        c = results["clusters"]
        r0 = c["rows"][0]
        lines += ["## Clusters", "",
                  f"k-means (`zoo clusters`, faiss, cosine) over the {c['n_models']} fine-tunes with k = the number of "
                  "labels; purity = share of models whose cluster's majority label is their own.", "",
                  f"| level | k | paper | zoo, sketches d={r0['sketch_dim']} | zoo, sketches d={r0['sketch_big_dim']} "
                  "| zoo, exact task vectors | agreement with exact (Rand), d=" + f"{r0['sketch_dim']} / {r0['sketch_big_dim']} |",
                  "|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| {r['level']} | {r['k']} | {r['paper']} | {pct(r['sketch_purity'])} | "
                         f"{pct(r['sketch_big_purity'])} | {pct(r['exact_purity'])} | "
                         f"{r['sketch_exact_rand_index']:.3f} / {r['sketch_big_exact_rand_index']:.3f} |")
        lines += ["", "Wall time: " + "; ".join(
            f"{r['level']}: sketches {r['sketch_seconds']:.1f} s, d={r['sketch_big_dim']} {r['sketch_big_seconds']:.1f} s, "
            f"exact {r['exact_seconds']:.1f} s" for r in c["rows"]) + ".", ""]
        if c.get("pair_probe"):
            lines += ["What separates models (exact cosine distance between task vectors, `zoo distance --exact`):", "",
                      "| pair | pairs | mean cosine distance |", "|---|---|---|"]
            lines += [f"| {k} | {v['pairs']} | {v['mean_exact_cosine_distance']:.3f} |" for k, v in c["pair_probe"].items()]
            lines.append("")
    if "fidelity" in results:
        lines += ["## Sketch answers against exact ones", "",
                  "`zoo fidelity -k 5 --rerank 20` on the real zoo's fine-tunes: the share of each model's 5 nearest "
                  "that are its exact 5 nearest (kNN@5 overlap), the share whose nearest is of its own dataset, and the "
                  "Spearman correlation of all pairwise distances; \"+ exact re-rank\" is `zoo nearest --rerank 20` "
                  "(reads 21 checkpoints a query).", "",
                  "| query path | kNN@5 overlap | 1-NN same dataset | Spearman | checkpoints read |", "|---|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['knn5_overlap']:.3f} | {r['nn1_same_dataset']:.3f} | "
                  f"{'' if r['spearman'] is None else format(r['spearman'], '.3f')} | {r['reads_models']} |"
                  for r in results["fidelity"]]
        lines.append("")
    if "map" in results:
        lines += ["## Map", "", "`zoo map --color-by dataset|task --kind finetune` (PCA of the sketches).", ""]
        for by, f in results["map"]["figures"].items():
            lines += [f"![zoo map coloured by {by}]({f['path']})", ""]

    if "interior" in results:
        it = results["interior"]
        tie = it["tie"]
        n_seeds = max((len(r["members"]) for r in it["dataset_level"]), default=0)
        lines += ["## Region interior", "",
                  f"Same-dataset regions ({n_seeds} seeds of one dataset): `zoo interpolate A B --alpha 0.5`, "
                  + ("`zoo centroid --dirichlet 1` (a random point of the convex hull, with 3 or more seeds), "
                     if n_seeds >= 3 else "")
                  + "`zoo centroid` (with two seeds, the midpoint again), and `zoo interpolate "
                  "--extrapolate` at α = −0.5 and 1.5 (half a segment past each end). Heads are averaged (identical "
                  "label spaces), so `zoo eval` scores them through the head, on the test split. Paper: points inside "
                  "the region perform like the fine-tuned models or better; points outside fall off.", "",
                  f"Matching means within {tie * 100:.1f} points.", "",
                  "| point | n | ≥ worse endpoint | ≥ endpoints' mean | ≥ better endpoint | mean vs endpoints' mean (pts) |",
                  "|---|---|---|---|---|---|"]
        kinds: dict[str, list[dict]] = {}
        for r in it["dataset_level"]:
            kinds.setdefault(r["point"], []).append(r)
        for k, rs in kinds.items():
            n = len(rs)
            lines.append(f"| {k} | {n} | {sum(r['vs_worst'] >= -tie for r in rs)}/{n} | "
                         f"{sum(r['vs_mean'] >= -tie for r in rs)}/{n} | {sum(r['vs_best'] >= -tie for r in rs)}/{n} | "
                         f"{pts(mean(r['vs_mean'] for r in rs))} |")
        ext = [r for r in it["dataset_level"] if "vs_nearer" in r]
        if ext:
            lines += ["", f"Extrapolation vs the nearer endpoint: mean {pts(mean(r['vs_nearer'] for r in ext))} points, "
                      f"matched or beaten in {sum(r['vs_nearer'] >= -tie for r in ext)}/{len(ext)}.", ""]
        names = list(kinds)
        lines += [f"Per dataset (test accuracy; endpoints = the {n_seeds} seeds):", "",
                  "| dataset | endpoints | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        per: dict[str, dict[str, dict]] = {}
        for r in it["dataset_level"]:
            per.setdefault(r["dataset"], {})[r["point"]] = r
        for ds, rs in per.items():
            ends = max((r["endpoints"] for r in rs.values()), key=len)
            lines.append(f"| {ds} | {' / '.join(f'{e:.3f}' for e in ends)} | " +
                         " | ".join(f"{rs[n]['accuracy']:.3f}" if n in rs else "" for n in names) + " |")
        tl = it["task_level"]
        if tl:
            lines += ["", "Task regions (models of different datasets, so heads differ): every model is scored with "
                      "`zoo eval --probe` (logistic regression on the frozen body's mean-pooled features, trained on "
                      "the dev split, scored on test). Endpoint = the seed-0 model of the evaluated dataset.", "",
                      "| point | evaluations | mean probe accuracy | ≥ endpoint | mean vs endpoint (pts) | > base | "
                      "mean vs base (pts) |", "|---|---|---|---|---|---|---|"]
            groups: dict[str, list[dict]] = {}
            for r in tl:
                groups.setdefault("interpolation between datasets" if r["point"].startswith("interpolation")
                                  else r["point"], []).append(r)
            for k, rs in groups.items():
                n = len(rs)
                lines.append(f"| {k} | {n} | {mean(r['accuracy'] for r in rs):.3f} | "
                             f"{sum(r['vs_endpoint'] >= -tie for r in rs)}/{n} | {pts(mean(r['vs_endpoint'] for r in rs))} | "
                             f"{sum(r['vs_base'] > tie for r in rs)}/{n} | {pts(mean(r['vs_base'] for r in rs))} |")
            ends = {r["dataset"]: (r["endpoint"], r["base"]) for r in tl}
            if it.get("not_done"):
                lines += ["", f"Not evaluated yet (`make reproduce` resumes): {', '.join(it['not_done'])}."]
            lines += ["", "Probe accuracy of the endpoints and the base: " + "; ".join(
                f"{d} {e:.3f} (base {b:.3f})" for d, (e, b) in sorted(ends.items())) + ".", ""]

    if "start" in results:
        s = results["start"]
        tie = s["tie"]
        lines += ["## Starting points", "",
                  "For each dataset D, `zoo finetune` on D from the base; on-region, leaving D out: from the centroid of "
                  "every zoo model not trained on D (`zoo centroid` of those names: all-centroid) and from the centroid "
                  "of D's task region without D (task-centroid); off-region, leaving D's whole task out: from the "
                  "centroid of the other tasks' models (off-centroid). Same hyperparameters, "
                  f"{s['seeds']} seed(s) each; test accuracy, mean over seeds.", ""]
        jd = s.get("judge")
        if jd:
            before = "; ".join(f"{r}-region {k} {v['select_start_best']} of {v['select_start_judged']}"
                               for r, by in jd["before"].items() for k, v in by.items())
            lines += [f"Judge stage ({', '.join(jd['seeds'])}): every start select-start is judged against "
                      f"({' and '.join(jd['regions'])}-region), the recommended mixtures too, fine-tuned with "
                      + ", ".join(f"{n} seeds in all ({k})" for k, n in jd["seeds"].items()) + " (seeds added on "
                      + "; ".join(f"{len(v)} datasets ({k})" for k, v in jd["added"].items())
                      + f", {jd['seconds'] / 60:.0f} min). With the start stage's seeds alone, select-start's pick was "
                      f"the best start: {before}."
                      + (f" The added seeds fine-tune a rebuild of the zoo ({jd['pair_rel_diff']:.0e} relative in "
                         "exact pair distances): the base is the same checkpoint, the centroids differ by about that much." if jd.get("pair_rel_diff") else "")
                      + (" Not run yet: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in jd["not_done"].items()) + "."
                         if jd.get("not_done") else ""), ""]
        lines += ["| setting | hyperparameters |", "|---|---|"]
        for k, hp in s["settings"].items():
            lines.append(f"| {k} | " + ", ".join(f"{a} {b}" for a, b in hp.items()) + " |")
        lines += ["", "| setting | start | wins / ties / losses vs base | mean gain (pts) | paper |", "|---|---|---|---|---|"]
        paper = {"all-centroid": "11 / 0 / 1 of 12, +3.06 (centroid of the other datasets' models)",
                 "task-centroid": "(the paper's task-centroid variant: better still)",
                 "off-centroid": "(not in the paper: a target whose task the zoo lacks)"}
        for k, sm in s["summary"].items():
            for start in ("all-centroid", "task-centroid", "off-centroid"):
                x = sm.get(start)
                if x:
                    lines.append(f"| {k} | {start} | {x['wins']} / {x['ties']} / {x['losses']} of {x['n']} | "
                                 f"{pts(x['mean_gain'])} | {paper[start]} |")
        for k, per in s["per_dataset"].items():
            lines += ["", f"### {k}", "", "| dataset | task | base | all-centroid | task-centroid | off-centroid | best |",
                      "|---|---|---|---|---|---|---|"]
            for ds, r in per.items():
                a = r["accuracy"]
                lines.append(f"| {ds} | {r['task']} | " + " | ".join(
                    f"{a[x]:.3f}" if x in a else "" for x in ("base", "all-centroid", "task-centroid", "off-centroid"))
                    + f" | {r['best']} |")
            if s.get("carried", {}).get("rows", {}).get(k):
                lines += ["", f"Carried from `{s['carried']['from']}`, {carried_from(s['carried'])}, not fine-tuned "
                          f"again in this run: {', '.join(s['carried']['rows'][k])}."]
            if s.get("not_done", {}).get(k):
                lines += ["", f"Not run yet (a run stopped by `--budget-min` or interrupted; `make reproduce` resumes from the cache): "
                          f"{', '.join(s['not_done'][k])}."]
        lines.append("")
    if "advice" in results:
        from zoo.select import Z as RULE_Z

        ad = results["advice"]
        judged = judge_advice(ad, results.get("start"))
        lines += ["## select-start's advice", "",
                  "`zoo select-start --task T --dataset D --neighbours 0 --train TRAIN` with the setting's "
                  f"hyperparameters: trial fine-tunes of every candidate on {ad['folds']} folds of up to "
                  + ", ".join(f"{n} ({k})" for k, n in ad["examples"].items())
                  + " examples of the training file, paired with the base's; a start is recommended when its gain "
                  f"clears {RULE_Z:g} standard errors, else the base (`zoo/select.py`). On-region: a zoo of the real zoo's "
                  "models and no runs; off-region: the same without D's task. Each call sees only those fine-tunes "
                  "(a recommended mixture's fine-tunes are removed before the next call). Judged against the fine-tunes above "
                  f"(best within {TIE * 100:.1f} points).", "",
                  "| region | setting | recommendation was the best start | largest loss to the base (pts) "
                  "| trial gain vs fine-tune gain: correlation | same sign | LogME gain vs fine-tune gain |",
                  "|---|---|---|---|---|---|---|"]
        waiting = []
        for region, by_setting in judged.items():
            for setting, j in by_setting.items():
                if not j["select_start_judged"]:
                    waiting.append(f"{region}-region {setting}")
                    continue
                worst = j["select_start_worst_loss"]
                lines.append(f"| {region} | {setting} | {j['select_start_best']} of {j['select_start_judged']} | "
                             f"{'' if worst is None else f'{worst * 100:.1f}'} | {corr(j['gain_correlation'])} "
                             f"({j['gain_pairs']} pairs) | {j['sign_agree']} of {j['sign_judged']} | "
                             f"{corr(j['logme_correlation'])} ({j['logme_pairs']} pairs) |")
        if waiting:
            lines += ["", f"Not judged yet (its select-start calls or the start stage's fine-tunes are still to run; "
                      f"`make reproduce` resumes): {', '.join(waiting)}."]
        yn = {True: "yes", False: "no", None: "not tested"}
        for region, by_setting in ad["picks"].items():
            for setting, picks in by_setting.items():
                if not picks:
                    continue
                rows = judged[region][setting]["rows"]
                keys = [k for k in ADVICE_START[region].values() if k != "base"]
                lines += ["", f"### {region}-region, {setting}: trial gains over the base (points, +/- one standard "
                          "error) and the recommendation", "",
                          "| dataset | task | " + " | ".join(keys) + " | recommended | was best |",
                          "|---|---|" + "---|" * len(keys) + "---|---|"]
                for ds, p in sorted(picks.items()):
                    g = [p["expected_gain"].get(k) for k in keys]
                    cells = [pts(x) + (f" ± {p['gain_se'][k] * 100:.1f}" if x is not None else "")
                             if x is not None else "" for x, k in zip(g, keys)]
                    mark = " (decided again)" if p.get("redecided_from") else ""
                    lines.append(f"| {ds} | {p['task']} | " + " | ".join(cells) + f" | {p['recommended']}{mark} | "
                                 f"{yn[rows.get(ds, {}).get('was_best')]} |")
                moved = ad.get("carried", {}).get("rows", {}).get(f"{region}:{setting}")
                if moved:
                    lines += ["", f"Carried from `{ad['carried']['from']}`, {carried_from(ad['carried'])}, not "
                              f"asked again in this run: {', '.join(moved)}."]
                if any(p.get("redecided_from") for p in picks.values()):
                    lines += ["", "(decided again): the select-start answer was made under another decision rule "
                              f"and is read again under z = {RULE_Z:g} from its cached trials by the same pure "
                              "`advise` (the trials are seeded: a new call measures the same)."]
        lines.append("")
    notes = Path(__file__).resolve().parent.parent / "docs" / "REPRODUCTION-NOTES.md"
    if notes.exists():
        lines += ["## Reading the results", "", "See [REPRODUCTION-NOTES.md](REPRODUCTION-NOTES.md) (written by hand "
                  "from a run of this report; the tables above are regenerated by every run).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", required=True, help="the real zoo (`make real-zoo`)")
    ap.add_argument("--data", default="data/real", help="the datasets (`make datasets`)")
    ap.add_argument("--work", help="zoo for the experiments' models (default: HOME-experiments)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--seeds", type=int, default=2, help="seeds per start in the starting-point experiment")
    ap.add_argument("--judge-seeds", type=int, default=4, help="seeds per judged start after the judge stage "
                    "(it adds seeds to the start stage's fine-tunes and the recommended mixtures')")
    ap.add_argument("--regions", default="on,off", help="the start and advice stages' targets: on-region (leave "
                    "the dataset out), off-region (leave its task out), or both")
    ap.add_argument("--settings", default="few-shot,full", help="the start and advice stages' settings, in order "
                    "(a run of one setting reports that one; the cache keeps the other's results)")
    ap.add_argument("--full-epochs", type=float, default=1.0)
    ap.add_argument("--fewshot-examples", type=int, default=128)
    ap.add_argument("--fewshot-epochs", type=float, default=5.0)
    ap.add_argument("--budget-min", type=float, help="start no new zoo command after this many minutes; the report "
                    "covers what is done and a rerun resumes")
    ap.add_argument("--report-only", action="store_true", help="run nothing new: rewrite the report from the cache")
    ap.add_argument("--datasets", nargs="*", help="only these datasets' models in the interior and start stages")
    ap.add_argument("--targets", nargs="+", metavar="DATASET", help="judge only these datasets in the start and advice "
                    "stages (every model stays in the zoos); the default is every dataset")
    ap.add_argument("--carry-from", metavar="REPORT_JSON", help="take the start and advice rows this run's cache lacks "
                    "from an earlier reproduction.json of the same zoo (checked by its exact pair distances); the "
                    "report lists the carried rows")
    ap.add_argument("--big-dim", type=int, default=4096, help="second sketch dimension for the clusters stage")
    ap.add_argument("--trial-examples", type=int, default=256, help="examples of a full training set in the advice trials")
    ap.add_argument("--trial-folds", type=int, default=4, help="folds of the advice trials")
    args = ap.parse_args()
    home, out, data = Path(args.home), Path(args.out), Path(args.data)
    work = Path(args.work) if args.work else home.with_name(home.name + "-experiments")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"error: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 1
    if args.judge_seeds < 1:
        print(f"error: --judge-seeds {args.judge_seeds}: give the number of seeds per judged start (1 or more)",
              file=sys.stderr)
        return 1
    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    if not regions or set(regions) - {"on", "off"}:
        print(f"error: --regions {args.regions!r}: choose on, off or both", file=sys.stderr)
        return 1
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()]
    if not chosen or set(chosen) - {"few-shot", "full"}:
        print(f"error: --settings {args.settings!r}: choose few-shot, full or both", file=sys.stderr)
        return 1
    if not (home / "catalog.duckdb").exists():
        print(f"error: no zoo at {home}; build it with `make real-zoo`", file=sys.stderr)
        return 1
    if {"interior", "start", "advice", "judge"} & set(stages) and not (data / "datasets.json").exists():
        print(f"error: {data / 'datasets.json'} not found; build the datasets with `make datasets`", file=sys.stderr)
        return 1
    probe: dict = {}

    def this_zoo() -> dict:
        """HOME's exact pair distances, read once: they read every fine-tune's weights."""
        if not probe:
            probe.update(pair_probe(home, [m for m in zoo(home, "ls", "--kind", "finetune") if m["dataset"] and m["task"]]))
        return probe

    prev, rel_diff = None, 0.0
    if args.carry_from:
        try:
            prev = json.loads(Path(args.carry_from).read_text())
        except (OSError, ValueError) as e:
            print(f"error: --carry-from {args.carry_from}: cannot read it as a report ({e})", file=sys.stderr)
            return 1
        try:
            rel_diff = check_same_zoo(prev, this_zoo(), args.carry_from)
        except NotSameZoo as e:
            print(f"error: --carry-from: {e}", file=sys.stderr)
            return 1
    targets = set(args.targets) if args.targets else None
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "reproduction.json"
    results: dict = json.loads(json_path.read_text()) if json_path.exists() else {}
    results.pop("probe", None)  # the linear-probe stage of earlier versions, replaced by `advice`

    started = time.time()

    def save() -> None:
        json_path.write_text(json.dumps(strict_json(results), indent=2, allow_nan=False))
        (out / "REPRODUCTION.md").write_text(report(results, home, data))

    try:
        if "clusters" in stages and not args.report_only:
            t0 = time.perf_counter()
            results["clusters"] = stage_clusters(home, args.big_dim)
            results["clusters"]["seconds"] = time.perf_counter() - t0
            results["fidelity"] = results["clusters"].pop("fidelity")
            save()
        if "map" in stages and not args.report_only:
            t0 = time.perf_counter()
            results["map"] = stage_map(home, out)
            results["map"]["seconds"] = time.perf_counter() - t0
            save()
        if {"interior", "start", "advice", "judge"} & set(stages):
            work.mkdir(parents=True, exist_ok=True)
            if args.report_only:
                real, base = real_models(home), zoo(home, "ls", "--kind", "base")[0]["name"]
            else:
                real, base = prepare_work(home, work)
            if args.datasets:
                real = [m for m in real if m["dataset"] in set(args.datasets)]
            cache = Cache(work / "reproduce-cache.json", only_cached=args.report_only,
                          deadline=started + 60 * args.budget_min if args.budget_min else None)
            evargs = ["--max-length", "64", "--batch-size", "32"]
            if "interior" in stages:
                results["interior"] = stage_interior(work, data, real, base, cache, evargs)
                save()
            settings = {"few-shot": {"examples": args.fewshot_examples, "epochs": args.fewshot_epochs, "lr": 1e-4,
                                     "batch_size": 16, "max_length": 64},
                        "full": {"epochs": args.full_epochs, "lr": 1e-4, "batch_size": 32, "max_length": 64}}
            settings = {k: v for k, v in settings.items() if k in chosen}
            if "start" in stages:
                results["start"] = stage_start(work, data, real, base, cache, settings, args.seeds, regions, targets)
                save()
            if "advice" in stages:
                results["advice"] = stage_advice(home, work, data, real, settings, args.report_only, cache.deadline,
                                                 {"few-shot": args.fewshot_examples, "full": args.trial_examples},
                                                 args.trial_folds, args.seeds, regions, targets)
            if prev is not None:
                for stage, rows in carry(results, prev, args.carry_from, rel_diff).items():
                    print(f"carried from {args.carry_from}: {stage} " + "; ".join(
                        f"{k}: {', '.join(v)}" for k, v in rows.items()), file=sys.stderr)
            if prev is not None:
                for stage, rows in carry(results, prev, args.carry_from, rel_diff).items():
                    print(f"carried from {args.carry_from}: {stage} " + "; ".join(
                        f"{k}: {', '.join(v)}" for k, v in rows.items()), file=sys.stderr)
            if "judge" in stages:
                if "start" not in results or "advice" not in results:
                    print("error: the judge stage adds seeds to the start and advice stages' rows; run those "
                          f"first (none in {json_path})", file=sys.stderr)
                    return 1
                try:  # the runs added are of this zoo's starts: it must be a build of the report's zoo
                    judge_diff = check_same_zoo(results, this_zoo(), str(json_path))
                except NotSameZoo as e:
                    print(f"error: the judge stage: {e}", file=sys.stderr)
                    return 1
                results["start"]["judge"] = stage_judge(work, data, real, base, cache, settings, args.judge_seeds,
                                                        regions, results, targets)
                results["start"]["judge"]["pair_rel_diff"] = judge_diff
            if "start" in results and "advice" in results:
                for region, by_setting in judge_advice(results["advice"], results["start"]).items():
                    results["start"][f"{region}_region"] = {
                        k: {x: v[x] for x in ("select_start_best", "select_start_judged", "select_start_worst_loss",
                                              "gain_correlation", "gain_pairs", "logme_correlation",
                                              "logme_pairs")} for k, v in by_setting.items()}
            save()
    except ZooFailed as e:
        print(f"error: {e}\n(rerun to resume: finished steps are cached in {work / 'reproduce-cache.json'})",
              file=sys.stderr)
        return 1
    print(f"wrote {out / 'REPRODUCTION.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
