"""Fine-tuning runs and evaluations: the catalog side (run rows, results registered back,
evaluations recorded) around the training and scoring in ``zoo.finetune``.

The catalog is open only to record a run's start and its end, never while it trains.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence


from zoo import catalog
from zoo.domain import check_name, folder_safe
from zoo.errors import CatalogUnreadable, Conflict, WriteBackPending, ZooBusy, ZooError, ZooValueError
from zoo.files import crash_point
from zoo.materialize import resolve_start
from zoo.register import AddResult, add, write_record
from zoo.results import Evaluation, Finetuned
from zoo.store import Store

if TYPE_CHECKING:  # pragma: no cover
    from zoo.db import Conn


def finetune(store: Store, start: str, train: str | os.PathLike, eval: str | os.PathLike | None = None,
             dataset: str | None = None, task: str | None = None, out: str | None = None,
             family: str | None = None, step_hook: Callable[[int], None] | None = None,
             **params: Any) -> Finetuned:
    """Fine-tune from START, evaluate, and register the result with a run row and evaluations;
    a failure marks the run failed with its error and registers nothing."""
    from zoo.data import read_examples
    from zoo.finetune import resolve_device
    from zoo.params import TrainParams

    tp = TrainParams(**params)
    check_name(out, "--out", folder=True)
    device = resolve_device(tp.device)
    train_ex = read_examples(train)
    eval_ex = read_examples(eval) if eval is not None else None
    dataset = dataset or Path(train).stem
    start_row = resolve_start(store, start, family)
    with store.read() as conn:
        base_row = catalog.model_by_id(conn, store.family_of(conn, start_row).base_model_id)
        name = out or catalog.unique_model_name(conn, folder_safe(f"{dataset}-from-{start_row['name']}-s{tp.seed}"))
        if catalog.name_taken(conn, name):
            raise Conflict(f"a model named {name!r} already exists; choose another --out")
        # A region spec means whatever the zoo holds when it runs: the members it meant then
        # are recorded, so the start can be made again after the zoo has grown.
        members = {p["name"]: p["weight"] for p in catalog.parents(conn, start_row["id"])
                   if p["relation"] in ("averaged_from", "interpolated_from")}
        # A LoRA result is an adapter on a full checkpoint: the start, or an adapter start's parent.
        on = start_row["name"]
        if tp.method == "lora" and start_row["meta"].get("adapter_parent") is not None:
            on = catalog.model_by_id(conn, start_row["meta"]["adapter_parent"])["name"]
    run_params = dict(tp.as_dict(), start=start, start_kind=start_row["kind"], start_name=start_row["name"],
                      start_members=members or None,
                      task=task, train=str(Path(train).resolve()), eval=str(Path(eval).resolve()) if eval else None)
    # Installed before the run row exists (a SIGTERM that finds the row finds the handler too)
    # and restored after, so a library caller's own handler is left as it was.
    with store.output(name) as out_dir, sigterm_as_exit() as termination:
        with store.write() as conn:
            run_id = catalog.insert_run(conn, start_model_id=start_row["id"], dataset=dataset, method=tp.method,
                                        params=dict(run_params, pid=os.getpid(), host=socket.gethostname()),
                                        device=device, status="running", started_at=_dt.datetime.now())
        crash_point("finetune:started")
        try:
            metrics = _train(store, start_row, base_row, (train_ex, eval_ex), tp, out_dir, termination, step_hook)
            _describe(store, out_dir, name, start_row, on, base_row, dataset, tp)
            crash_point("finetune:trained")
            rec = dict(run_id=run_id, path=str(out_dir), name=name, base=on, start=start_row["name"], dataset=dataset,
                       task=task, seed=tp.seed, start_kind=start_row["kind"], metrics=metrics,
                       kind="adapter" if tp.method == "lora" else "finetune")
            try:
                res = register_result(store, rec)
            except ZooBusy as e:  # a reader holds the catalog: the weights are kept, never discarded
                store.save_pending(rec)
                raise WriteBackPending(f"{e}; the trained model is kept at {out_dir} and the next zoo command "
                                       "registers it") from None
        except WriteBackPending:
            raise
        except BaseException as e:
            shutil.rmtree(out_dir, ignore_errors=True)
            err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            with store.write() as conn:
                catalog.update_run(conn, run_id, status="failed", finished_at=_dt.datetime.now(), error=err[:2000])
            raise
    return Finetuned(run_id, res.name, res.id, start_row["name"], start_row["kind"], dataset, task, device, str(out_dir),
                     metrics)


# What a line of a plan may set: the run's inputs ("from" is the start spec) and TrainParams fields.
PLAN_RUN_KEYS = ("from", "train", "eval", "dataset", "task", "out", "family")


def read_plan(plan: str | os.PathLike | Sequence[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of a plan (a JSON Lines file, one object a run, or the objects themselves),
    each with ``defaults`` under it, all checked before any run starts: keys, start and
    train given, files present, training parameters valid, ``out`` names distinct. Paths
    in a file's lines are relative to the file's folder."""
    import json

    from zoo.params import TrainParams

    if isinstance(plan, (str, os.PathLike)):
        path = Path(plan).expanduser()
        if not path.is_file():
            raise ZooValueError(f"plan file {str(path)!r} does not exist; give a JSON Lines file, one run an object")
        lines, where, folder = [], str(path), path.resolve().parent
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if text.strip():
                try:
                    lines.append((n, json.loads(text)))
                except json.JSONDecodeError as e:
                    raise ZooValueError(f"{where} line {n} is not JSON ({e.msg}); one run an object per line") from None
    else:
        lines, where, folder = list(enumerate(plan, 1)), "plan", None
    if not lines:
        raise ZooValueError(f"{where} holds no runs; one JSON object per line, e.g. "
                            '{"from": "base", "train": "train.jsonl", "seed": 0}')
    allowed = set(PLAN_RUN_KEYS) | {f.replace("_", "-") for f in TrainParams.__dataclass_fields__} | \
        set(TrainParams.__dataclass_fields__)
    runs, outs = [], {}
    for n, line in lines:
        at = f"{where} line {n}"
        if not isinstance(line, dict):
            raise ZooValueError(f"{at}: a run is a JSON object, got {type(line).__name__}")
        bad = sorted(k for k in line if k not in allowed)
        if bad:
            raise ZooValueError(f"{at}: unknown key(s) {', '.join(map(repr, bad))}; a run takes "
                                f"{', '.join(PLAN_RUN_KEYS)} and the training options ({', '.join(TrainParams.__dataclass_fields__)})")
        run = dict(defaults, **{k.replace("-", "_"): v for k, v in line.items()})
        for key in ("from", "train"):
            if not run.get(key):
                raise ZooValueError(f"{at}: no {key!r}; give it in the line or as --{key} for every line")
        for key in ("train", "eval"):
            if run.get(key) is not None:
                f = Path(str(run[key])).expanduser()
                f = f if f.is_absolute() or folder is None or key in defaults and key not in line else folder / f
                if not f.is_file():
                    raise ZooValueError(f"{at}: {key} file {str(f)!r} does not exist")
                run[key] = str(f)
        params = {k: v for k, v in run.items() if k not in PLAN_RUN_KEYS}
        try:
            TrainParams(**params)
        except ZooValueError as e:
            raise ZooValueError(f"{at}: {e}") from None
        if run.get("out"):
            check_name(run["out"], "out", folder=True)
            if run["out"] in outs:
                raise ZooValueError(f"{at}: out {run['out']!r} is also line {outs[run['out']]}'s; name each result once")
            outs[run["out"]] = n
        runs.append(dict(run, line=n))
    return runs


def finetune_plan(store: Store, plan: str | os.PathLike | Sequence[dict[str, Any]],
                  on_done: Callable[[Finetuned], Any] | None = None, **defaults: Any) -> list[Finetuned]:
    """Every run of a plan, in order, in this process: torch and transformers are imported
    once (5-10 s a process) instead of once a run. All lines are checked first; a run that
    fails is recorded failed, stops the plan and names its line; the runs before it stay.
    ``on_done`` hears each result as its run finishes."""
    runs = read_plan(plan, {("from" if k == "start" else k): v for k, v in defaults.items() if v is not None})
    done: list[Finetuned] = []
    for run in store.bar(runs, "plan", unit="run"):
        params = {k: v for k, v in run.items() if k not in PLAN_RUN_KEYS and k != "line"}
        try:
            done.append(finetune(store, run["from"], run["train"], run.get("eval"), run.get("dataset"), run.get("task"),
                                 run.get("out"), run.get("family"), **params))
            if on_done is not None:
                on_done(done[-1])
        except ZooError as e:
            finished = f"; the lines before it finished ({', '.join(r.name for r in done)})" if done else ""
            try:
                told = type(e)(f"plan line {run['line']}: {e}{finished}")
            except TypeError:  # an error type built from more than a message
                raise e from None
            raise told from e
    return done


def _train(store: Store, start_row: dict[str, Any], base_row: dict[str, Any], data: tuple[Any, Any], tp: Any,
           out_dir: Path, termination: "Termination", step_hook: Callable[[int], None] | None) -> dict[str, Any]:
    """Train (checking for SIGTERM at every step) and save into ``out_dir``; the metrics."""
    from zoo.finetune import train as run_training

    def hook(step: int) -> None:
        termination.check()
        if step_hook is not None:
            step_hook(step)

    from zoo.sources import model_ref

    metrics = run_training(model_ref(store, start_row), [store.weights(base_row)], data[0], data[1], tp, out_dir,
                           progress=store.progress, step_hook=hook)
    termination.check()
    return metrics


def _describe(store: Store, out_dir: Path, name: str, start_row: dict[str, Any], on: str, base_row: dict[str, Any],
              dataset: str, tp: Any) -> None:
    """The trained folder's model card, and the base's support files it lacks (e.g. the
    sentence-transformers modules): it loads and explains itself outside the zoo."""
    from zoo.cards import copy_support, ref_of, write_card

    with store.read() as conn:
        parent = catalog.model(conn, on)
    lora = tp.method == "lora"
    copy_support(store.weights(base_row), [], out_dir)
    write_card(out_dir, name, "adapter" if lora else "finetune", [ref_of(parent if lora else start_row)],
               [f"Fine-tuned by zoo from {start_row['name']} ({start_row['kind']}) on {dataset}: method {tp.method}, "
                f"{tp.epochs:g} epoch(s), learning rate {tp.lr:g}, batch size {tp.batch_size}, seed {tp.seed}."],
               "peft" if lora else "transformers")


def register_result(store: Store, rec: dict[str, Any]) -> AddResult:
    """Register a run's trained model and finish its run row with evaluations, in one transaction.

    ``rec``: run_id, path, name, base (the start's name; a LoRA result's parent), start (when
    it differs from base), dataset, task, seed, start_kind, kind, metrics.
    """
    metrics, run_id = rec["metrics"], rec["run_id"]

    def record(conn: Conn, results: list[AddResult]) -> None:
        mid = results[0].id
        catalog.update_run(conn, run_id, result_model_id=mid, status="finished", finished_at=_dt.datetime.now(),
                           metrics=metrics)
        for metric in ("accuracy", "perplexity", "loss"):
            if f"eval_{metric}" in metrics:
                catalog.insert_evaluation(conn, model_id=mid, dataset=rec["dataset"], split="eval", metric=metric,
                                          value=float(metrics[f"eval_{metric}"]), n_examples=metrics["n_eval"],
                                          run_id=run_id)

    start = rec.get("start", rec["base"])
    [res] = add(store, [rec["path"]], name=rec["name"], base=rec["base"], dataset=rec["dataset"], task=rec["task"],
                seed=rec["seed"], kind=rec.get("kind", "finetune"),
                meta={"run_id": run_id, "start_kind": rec["start_kind"]}, on_commit=record,
                lineage=[(start, "finetuned_from", None)] if start != rec["base"] else ())
    return res


def finish_pending(store: Store) -> list[int]:
    """Register the fine-tunes whose write-back found the catalog busy; their run ids. One that
    cannot be registered any more (its folder gone) is marked failed; a busy catalog waits for
    the next command."""
    done = []
    for rec in store.pending():
        try:
            register_result(store, rec)
        except (ZooBusy, CatalogUnreadable):  # still busy, or a read-only home: the next command tries again
            break
        except ZooError as e:
            with store.write() as conn:
                catalog.update_run(conn, rec["run_id"], status="failed", finished_at=_dt.datetime.now(),
                                   error=f"the write-back of {rec['path']} failed: {e}"[:2000])
        store.drop_pending(rec["run_id"])
        done.append(rec["run_id"])
    return done


def evaluate_many(store: Store, names: Sequence[str], data: str | os.PathLike, train: str | os.PathLike | None = None,
                  split: str = "test", dataset: str | None = None, probe: bool = False,
                  **params: Any) -> list[Evaluation]:
    """Accuracy of each model on one data file, recorded in ``evaluations`` as it comes: through
    its head when it has the data's label space, else (or with ``probe``) a linear probe on its
    frozen body. The data is read and every name checked before the first evaluation."""
    from zoo.data import read_examples
    from zoo.finetune import evaluate as run_eval
    from zoo.params import TrainParams
    from zoo.sources import model_ref

    tp = TrainParams(**params)
    ex = read_examples(data)
    probe_ex = read_examples(train) if train is not None else None
    dataset = dataset or Path(data).stem
    with store.read() as conn:
        rows = [catalog.model(conn, n) for n in names]
        bases = [store.base_weights(conn, store.family_of(conn, r)) for r in rows]
    out = []
    for row, base_path in zip(rows, bases):
        res = run_eval(model_ref(store, row), [base_path], ex, probe_ex, tp, probe=probe)
        with store.write() as conn:
            catalog.insert_evaluation(conn, model_id=row["id"], dataset=dataset, split=split, metric=res["metric"],
                                      value=float(res["value"]), n_examples=res["n_examples"])
            write_record(store, conn, row["id"])
        out.append(Evaluation(row["name"], dataset, split, res))
    return out


class Termination:
    """What ``sigterm_as_exit`` saw: ``check()`` raises again if a SIGTERM came in, for the case
    where the handler's exception was raised inside a callback whose caller swallowed it."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise SystemExit(f"terminated by signal {self.signum}")


@contextmanager
def sigterm_as_exit() -> Iterator[Termination]:
    """While inside, SIGTERM raises SystemExit in the main thread, so a killed run is recorded
    as failed; the previous handler is restored on the way out."""
    import signal
    import threading

    state = Termination()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def _handler(signum: int, frame: Any) -> None:
        state.signum = signum
        state.check()

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)
