"""The `zoo` command: each command parses, makes one Zoo call, and formats.

Choices and defaults come from the library (``zoo.domain``, the ``Zoo`` signatures, the
``TrainParams`` fields), so the CLI never restates them. Importing this module loads no
torch, faiss, numba or transformers: the verbs import them when they run.
"""
from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from typing import Any, Callable

import click

from zoo import Zoo
from zoo.cli import fmt
from zoo.domain import COLOR_BY, KINDS, MAP_METHODS, METRICS, RUN_STATUSES, SORT_COLUMNS
from zoo.errors import ZooError
from zoo.params import TrainParams


class ZooGroup(click.Group):
    """Turns ZooError and bad arguments into one line on stderr and a non-zero exit (2 for arguments)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ZooError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = " ".join(["zoo", *(e.ctx.command_path.split()[1:] if e.ctx else []), "--help"])
            click.echo(f"error: {e.format_message().rstrip('.')}; see `{where}`", err=True)
            sys.exit(e.exit_code)
        except OSError as e:  # disk full, read-only home, a file vanished: the system's words, one line
            where = f" ({e.filename})" if e.filename else ""
            click.echo(f"error: {e.strerror or e}{where}; check the free space and permissions of the zoo home "
                       "and the paths given", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was committed for the interrupted step", err=True)
            sys.exit(130)


def default(fn: Callable[..., Any], name: str) -> Any:
    """The library's default for parameter ``name`` of ``fn``."""
    return inspect.signature(fn).parameters[name].default


def train_options(*names: str) -> Callable[[Callable], Callable]:
    """Click options generated from ``TrainParams`` fields (all of them, or those named)."""
    fields = {f.name: f for f in dataclasses.fields(TrainParams)}
    hints = typing.get_type_hints(TrainParams)

    def decorate(f: Callable) -> Callable:
        for name in reversed(names or tuple(fields)):
            fld, hint = fields[name], hints[name]
            choices = fld.metadata.get("choices")
            kind = click.Choice(choices) if choices else next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
            f = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=fld.default,
                             show_default=fld.default is not None, help=fld.metadata["help"])(f)
        return f
    return decorate


json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
metric_opt = click.option("--metric", type=click.Choice(METRICS), help="Default: the space's metric.")
space_opt = click.option("--space", "space", type=int, help="Sketch space id (default: the family's first).")
family_opt = click.option("--family", help="Family name (needed when the zoo has several).")
kind_opt = click.option("--kind", type=click.Choice(KINDS), help="Only models of this kind.")
region_opts = [click.option("--dataset"), click.option("--task")]
adapter_out_opts = [
    click.option("--rank", type=int, help="Adapters on one parent: truncate the averaged adapter to this rank by SVD "
                                          "(the relative error is reported; default: exact, rank = sum of ranks)."),
    click.option("--merged", is_flag=True, help="Write a full checkpoint even when every member is an adapter."),
]


def options(*opts: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Several decorators as one, applied in the order written."""
    def decorate(f: Callable) -> Callable:
        for o in reversed(opts):
            f = o(f)
        return f
    return decorate


# --json, then the Zoo as the command's first argument: the tail of every command's decorators.
json_obj = options(json_opt, click.pass_obj)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), envvar="ZOO_HOME",
              help="Zoo directory (default: $ZOO_HOME, else ~/.zoo).")
@click.option("--catalog", envvar="ZOO_CATALOG", metavar="URL|FILE",
              help="The catalog: a PostgreSQL URL (postgresql://user@host/db) shared by a team, or a DuckDB file "
                   "(default: $ZOO_CATALOG, else catalog.duckdb in the home). See docs/SCALING.md.")
@click.option("--store", type=click.Path(file_okay=False), envvar="ZOO_STORE",
              help="Folder of the weights and checkpoints, shareable by a team's machines (default: $ZOO_STORE, "
                   "else the home).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for training, evaluation and sketching (default: decided per verb from the CPUs "
                   "free to this process; also ZOO_THREADS).")
@click.version_option(package_name="zoo")
@click.pass_context
def main(ctx: click.Context, home: str | None, catalog: str | None, store: str | None, threads: int | None) -> None:
    """zoo: a model-zoo database and query engine over weight sketches."""
    ctx.obj = Zoo(home, progress=sys.stderr.isatty(), threads=threads, catalog=catalog, store=store)


@main.command()
@json_obj
def init(z: Zoo, as_json: bool) -> None:
    """Create the zoo directory and its catalog."""
    fmt.emit(z.init(), as_json, fmt.fmt_init)


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--name", help="Model name (default: folder or file name, or the Hub repository's name).")
@click.option("--base", help="Base model this checkpoint was fine-tuned from.")
@options(*region_opts)
@click.option("--seed", type=int)
@kind_opt
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
@click.option("--in-place", is_flag=True, help="Reference the files where they are instead of bringing them into "
              "the zoo's store (for very large models; moving them then needs `zoo relocate`).")
@click.option("--scan-cache", "scan_cache", is_flag=True, help="Register every model of the Hugging Face cache that "
              "fits a family (HF_HUB_CACHE; never downloads).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Read, hash and sketch on a Ray cluster: --ray alone starts a local one; --ray ADDRESS "
                   "(ray://HOST:10001, auto) joins one. Same results as without.")
@json_obj
def add(z: Zoo, paths, name, base, dataset, task, seed, kind, meta, in_place, scan_cache, ray_address, as_json) -> None:
    """Register checkpoints: model folders, .safetensors/.bin files, folders of them, or Hugging Face
    repo ids (org/name[@revision]) and cache folders, resolved offline in the local cache."""
    if scan_cache or not paths:
        if paths or not scan_cache:
            raise click.UsageError("give PATHS to register, or --scan-cache alone")
        return fmt.emit(z.add_from_cache(dataset=dataset, task=task), as_json, fmt.fmt_cache_scan)
    res = z.add(paths, name=name, base=base, dataset=dataset, task=task, seed=seed, kind=kind, meta=fmt.kv_pairs(meta),
                in_place=in_place, ray=ray_address)
    fmt.emit(res, as_json, fmt.fmt_add)


@main.command("ls")
@family_opt
@options(*region_opts)
@kind_opt
@click.option("--search", "-s", help="Only models whose name, dataset, task or family contains this text (any case).")
@click.option("--sort", type=click.Choice(SORT_COLUMNS), default="id", show_default=True, help="Column to sort by.")
@click.option("--desc", is_flag=True, help="Sort in descending order.")
@click.option("--limit", type=int, help="At most this many models (with --offset: a page; a footer tells the total).")
@click.option("--offset", type=int, default=0, help="Skip this many models first.")
@json_obj
def ls_(z: Zoo, family, dataset, task, kind, search, sort, desc, limit, offset, as_json) -> None:
    """List models."""
    filters = dict(family=family, dataset=dataset, task=task, kind=kind, search=search)
    rows = z.ls(**filters, sort=sort, descending=desc, limit=limit, offset=offset)
    render = fmt.columns("id", "name", "family", "kind", "dataset", "task", "seed", "n_params", "dtype")
    if limit is not None or offset:
        render = fmt.paged(render, offset, z.count(**filters))
    fmt.emit(rows, as_json, render)


def _by_name(verb: str, render: Callable[[Any], str], doc: str) -> None:
    """A command that takes one model NAME and prints what ``Zoo.<verb>(name)`` returns."""
    @main.command(verb, help=doc)
    @click.argument("name")
    @json_opt
    @click.pass_obj
    def command(z: Zoo, name: str, as_json: bool) -> None:
        fmt.emit(getattr(z, verb)(name), as_json, render)


@main.command("set")
@click.argument("name")
@click.option("--name", "new_name", help="A new name.")
@click.option("--dataset", help="The dataset ('' clears it).")
@click.option("--task", help="The task ('' clears it).")
@click.option("--seed", type=int)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Set a metadata key (repeatable).")
@json_obj
def set_(z: Zoo, name, new_name, dataset, task, seed, meta, as_json) -> None:
    """Edit a model's metadata (name, dataset, task, seed, meta keys); weights stay as they are."""
    res = z.set(name, new_name=new_name, dataset=dataset, task=task, seed=seed, meta=fmt.kv_pairs(meta))
    fmt.emit(res, as_json, fmt.fmt_edited)


@main.command()
@click.argument("name")
@click.argument("path")
@json_obj
def relocate(z: Zoo, name, path, as_json) -> None:
    """Point model NAME at its checkpoint's new PATH (checked: same weights as registered)."""
    fmt.emit(z.relocate(name, path), as_json, fmt.fmt_edited)


_by_name("show", fmt.show_model, "Show a model: metadata, lineage, evaluations.")
_by_name("lineage", fmt.show_lineage, "Show the lineage tree above and below a model.")


@main.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even if other models derive from it.")
@json_obj
def rm(z: Zoo, name, force, as_json) -> None:
    """Remove a model from the catalog (files zoo wrote itself go too)."""
    fmt.emit(z.rm(name, force=force), as_json, fmt.fmt_rm)


@main.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=1), help="Return at most this many rows.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop the query after this many seconds (default 30).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (with a header row) instead of a table.")
@json_obj
def sql(z: Zoo, query, limit, timeout, as_csv, as_json) -> None:
    """Run one read-only query on the catalog (sandboxed: no files, no writes)."""
    cols, rows = z.sql(query, limit, timeout)
    fmt.emit([dict(zip(cols, r)) for r in rows], as_json, fmt.to_csv(cols) if as_csv else fmt.columns(*cols))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one).")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other than localhost (anyone reaching it can read "
              "the catalog).")
@click.pass_obj
def serve(z: Zoo, host, port, allow_remote) -> None:
    """Browse the zoo in a web browser: models, map, regions, SQL and a JSON API (read-only; Ctrl-C stops)."""
    def ready(url: str, warning: str | None) -> None:
        if warning:
            click.echo(warning, err=True)
        click.echo(f"zoo serve: {url} (Ctrl-C stops)", err=True)

    z.serve(host, port, allow_remote, ready)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead (not refreshed; default: "
              "snapshot.duckdb in the home, refreshed after every change).")
@json_obj
def snapshot(z: Zoo, out, as_json) -> None:
    """Write a read-only copy of the catalog for notebooks and other tools: reading it never blocks zoo."""
    fmt.emit(z.snapshot(out), as_json, fmt.fmt_snapshot)


@main.command()
@click.argument("target")
@click.option("-k", "k", type=int, default=default(Zoo.nearest, "k"), show_default=True)
@options(*region_opts)
@kind_opt
@click.option("--rerank", type=int, default=None, show_default="auto",
              help="Rank this many nearest sketches again by exact distance from their weights (reads them); "
                   "default: the top max(2k, 10) while their weights total at most ZOO_RERANK_BYTES (2 GiB); "
                   "0: sketches only (milliseconds).")
@options(metric_opt, space_opt, family_opt, json_obj)
def nearest(z: Zoo, target, k, dataset, task, kind, metric, space, family, rerank, as_json) -> None:
    """The k models nearest to NAME or PATH (a path is sketched, not registered)."""
    res = z.nearest(target, k=k, dataset=dataset, task=task, kind=kind, metric=metric, space=space, family=family,
                    rerank=rerank)
    fmt.emit(res, as_json, fmt.fmt_nearest)


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--exact", is_flag=True, help="Also compute the exact distance from the weights.")
@options(space_opt, json_obj)
def distance(z: Zoo, a, b, exact, space, as_json) -> None:
    """Distance between two task vectors (sketch estimate; --exact reads the weights)."""
    fmt.emit(z.distance(a, b, exact=exact, space=space), as_json, fmt.fmt_distance)


@main.command()
@click.argument("names", nargs=-1)
@options(*region_opts)
@click.option("--all", "all_models", is_flag=True, help="Every fine-tuned model of the family.")
@click.option("--exclude-dataset")
@options(family_opt, metric_opt, space_opt, json_obj)
def region(z: Zoo, names, dataset, task, all_models, exclude_dataset, family, metric, space, as_json) -> None:
    """Members, centroid and spread of a region (--dataset, --task, --all or NAMES)."""
    res = z.region(dataset=dataset, task=task, names=names or None, family=family, metric=metric, space=space,
                   exclude_dataset=exclude_dataset, all_models=all_models)
    fmt.emit(res, as_json, fmt.fmt_region)


@main.command()
@click.option("-k", "k", type=int, required=True, help="Number of clusters.")
@click.option("--seed", type=int, default=default(Zoo.clusters, "seed"), show_default=True)
@click.option("--exact", is_flag=True, help="Cluster exact task vectors (reads every model's weights once).")
@options(family_opt, metric_opt, space_opt, json_obj)
def clusters(z: Zoo, k, seed, exact, family, metric, space, as_json) -> None:
    """k-means on sketches of fine-tuned models, with purity against dataset and task labels."""
    fmt.emit(z.clusters(k, family=family, metric=metric, space=space, seed=seed, exact=exact), as_json, fmt.fmt_clusters)


@main.command()
@click.argument("target")
@click.argument("names", nargs=-1)
@options(*region_opts)
@options(family_opt, metric_opt, space_opt, json_obj)
def inside(z: Zoo, target, names, dataset, task, family, metric, space, as_json) -> None:
    """Is TARGET (name or path) inside a region? Exit 0 either way; see 'inside' in the output."""
    res = z.inside(target, dataset=dataset, task=task, names=names or None, family=family, metric=metric, space=space)
    fmt.emit(res, as_json, fmt.fmt_inside)


@main.command("doctor")
@click.option("--repair", is_flag=True, help="Mend what can be mended (orphans, indexes, store copies).")
@json_obj
def doctor_(z: Zoo, repair, as_json) -> None:
    """Check the catalog, the weight store, checkpoints and indexes against each other.

    Exit 0 when nothing is left wrong, 1 otherwise."""
    res = z.doctor(repair=repair)
    fmt.emit(res, as_json, fmt.fmt_checkup)
    sys.exit(0 if res.ok else 1)


@main.command()
@json_obj
def reindex(z: Zoo, as_json) -> None:
    """Rebuild every FAISS index from the catalog."""
    fmt.emit(z.reindex(), as_json, fmt.columns("space_id", "count", "index"))


@main.group()
def space() -> None:
    """Sketch spaces of a family."""


@space.command("ls")
@json_obj
def space_ls(z: Zoo, as_json) -> None:
    """List sketch spaces."""
    fmt.emit(z.spaces(), as_json, fmt.columns("id", "family", "dim", "seed", "metric", "tensor_filter", "sketches"))


@space.command("add")
@click.option("--dim", type=int, default=default(Zoo.space_add, "dim"), show_default=True)
@click.option("--seed", type=int, default=default(Zoo.space_add, "seed"), show_default=True)
@click.option("--metric", type=click.Choice(METRICS), default=default(Zoo.space_add, "metric"), show_default=True)
@click.option("--filter", "tensor_filter", help="Regex on canonical tensor names to sketch (default: whole body).")
@options(family_opt, json_obj)
def space_add(z: Zoo, dim, seed, metric, tensor_filter, family, as_json) -> None:
    """Add a sketch space and backfill its sketches (reads each model once)."""
    res = z.space_add(family=family, dim=dim, seed=seed, metric=metric, tensor_filter=tensor_filter)
    fmt.emit(res, as_json, fmt.fmt_space_add)


@main.command()
@click.argument("names", nargs=-1)
@options(*region_opts)
@click.option("--all", "all_models", is_flag=True, help="Every fine-tuned model of the family.")
@click.option("--exclude-dataset")
@click.option("--weights", help="Comma-separated weights, one per member (normalised to sum 1).")
@click.option("--dirichlet", type=float, help="Sample a point of the convex hull with this concentration.")
@click.option("--seed", type=int, default=default(Zoo.centroid, "seed"), show_default=True)
@click.option("--out", help="Name of the new model (default: derived from the members).")
@options(family_opt, *adapter_out_opts, json_obj)
def centroid(z: Zoo, names, dataset, task, all_models, exclude_dataset, weights, dirichlet, seed, out, family, rank,
             merged, as_json):
    """Write the weighted average of a region's members as a checkpoint and register it."""
    res = z.centroid(dataset=dataset, task=task, names=names or None, all_models=all_models, exclude_dataset=exclude_dataset,
                     weights=fmt.floats(weights, "--weights"), dirichlet=dirichlet, seed=seed, out=out, family=family,
                     rank=rank, merged=merged)
    fmt.emit(res, as_json, fmt.fmt_materialized)


@main.command()
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False))
@json_obj
def export(z: Zoo, name, dest, as_json) -> None:
    """Copy model NAME's checkpoint to a new folder DEST, loadable with transformers."""
    fmt.emit(z.export(name, dest), as_json, fmt.fmt_exported)


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--alpha", type=float, required=True, help="Position on the line: 0 is A, 1 is B.")
@click.option("--extrapolate", is_flag=True, help="Allow alpha outside [0, 1].")
@click.option("--out", help="Name of the new model.")
@options(*adapter_out_opts, json_obj)
def interpolate(z: Zoo, a, b, alpha, extrapolate, out, rank, merged, as_json) -> None:
    """Write (1 - alpha) A + alpha B as a checkpoint and register it."""
    fmt.emit(z.interpolate(a, b, alpha, extrapolate=extrapolate, out=out, rank=rank, merged=merged), as_json,
             fmt.fmt_materialized)


@main.command()
@click.option("--from", "start", help="Model name, 'base', or a region such as centroid:task=T,exclude_dataset=D.")
@click.option("--train", "train_file", type=click.Path(dir_okay=False))
@click.option("--eval", "eval_file", type=click.Path(dir_okay=False))
@click.option("--dataset", help="Dataset name (default: the train file's stem).")
@click.option("--task")
@click.option("--out", help="Name of the fine-tuned model.")
@click.option("--plan", type=click.Path(dir_okay=False), help="Several runs in one process, a JSON Lines file: one "
              "object a run with from, train, eval, dataset, task, out and training options; the options given "
              "here fill what a line leaves out; paths in the file are relative to it.")
@family_opt
@train_options()
@json_obj
def finetune(z: Zoo, start, train_file, eval_file, dataset, task, out, family, plan, as_json, **params) -> None:
    """Fine-tune from START, evaluate, and register the result (GPU when present)."""
    if plan is None:
        if not start or not train_file:
            raise click.UsageError("give --from and --train (or --plan FILE for several runs)")
        res = z.finetune(start, train_file, eval_file, dataset=dataset, task=task, out=out, family=family, **params)
        return fmt.emit(res, as_json, fmt.fmt_finetune)
    if out:
        raise click.UsageError('--out names one result; with --plan, give each line its own "out"')
    show = None if as_json else lambda r: click.echo(fmt.fmt_finetune(fmt.plain(r)))  # each run as it ends
    res = z.finetune_plan(plan, show, start=start, train=train_file, eval=eval_file, dataset=dataset, task=task,
                          family=family, **params)
    if as_json:
        fmt.emit(res, True, str)


@main.command()
@click.option("--status", type=click.Choice(RUN_STATUSES))
@click.option("--limit", type=int)
@click.option("--model", help="Only the runs that started from this model or made it.")
@json_obj
def runs(z: Zoo, status, limit, model, as_json) -> None:
    """List fine-tuning runs, newest first."""
    fmt.emit(z.runs(status=status, limit=limit, model=model), as_json, fmt.columns(
        "id", "status", "start", "result", "dataset", "method", "device", "eval_accuracy", "started_at", "error"))


@main.command("eval")
@click.argument("names", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(dir_okay=False))
@click.option("--train", "train_file", type=click.Path(dir_okay=False), help="Probe training data (default: half of --data).")
@click.option("--split", default=default(Zoo.evaluate_many, "split"), show_default=True)
@click.option("--dataset", help="Dataset name (default: the data file's stem).")
@click.option("--probe", is_flag=True, help="Always use a linear probe on the frozen body, even when the head fits.")
@train_options("batch_size", "max_length", "device")
@json_obj
def eval_(z: Zoo, names, data, train_file, split, dataset, probe, as_json, **params) -> None:
    """Accuracy of each NAME on a data file (a linear probe when its head does not fit the labels).

    JSON is one object for one name, a list for several."""
    res = z.evaluate_many(names, data, train=train_file, split=split, dataset=dataset, probe=probe, **params)
    fmt.emit(res[0] if len(res) == 1 else res, as_json, fmt.fmt_eval)


@main.command()
@click.option("-k", "k", type=int, default=default(Zoo.fidelity, "k"), show_default=True, help="Neighbours compared.")
@click.option("--rerank", type=int, multiple=True, default=default(Zoo.fidelity, "rerank"), show_default=True,
              help="Re-rank depths to measure (repeat the option for several).")
@kind_opt
@options(family_opt, json_obj)
def fidelity(z: Zoo, k, rerank, kind, family, as_json) -> None:
    """How far sketch answers agree with exact ones on this zoo (reads every model's weights once)."""
    fmt.emit(z.fidelity(k=k, rerank=rerank, family=family, kind=kind or "finetune"), as_json, fmt.fmt_fidelity)


@main.command("select-start")
@click.option("--task", required=True)
@click.option("--dataset", help="The target dataset (left out of the regions).")
@click.option("--neighbours", type=int, default=default(Zoo.select_start, "neighbours"), show_default=True,
              help="Nearest dataset regions to list.")
@click.option("--train", type=click.Path(exists=True, dir_okay=False),
              help="The target's training data: trial fine-tunes of every candidate on it (materializes the centroids).")
@click.option("--examples", type=int, default=default(Zoo.select_start, "examples"), show_default=True,
              help="Examples of --train for the trials (label-stratified sample).")
@click.option("--folds", type=int, default=default(Zoo.select_start, "folds"), show_default=True,
              help="Folds of the trials: each fine-tunes on the others and scores the held-out one.")
@click.option("--min-gain", type=float, default=0.0, show_default=True,
              help="Accuracy points a start must gain over the base, beyond 1.645 standard errors, to be recommended.")
@click.option("--mixture/--no-mixture", default=True, show_default=True,
              help="With --train: also learn a mixture of the base and the dataset regions on the examples.")
@click.option("--mix-budget", type=int, default=default(Zoo.select_start, "mix_budget"), show_default=True,
              help="Mixtures the weight search scores (one forward pass of the examples each).")
@click.option("--mix-regions", type=int, default=default(Zoo.select_start, "mix_regions"), show_default=True,
              help="Dataset regions mixed at most (the nearest to the target).")
@train_options("epochs", "lr", "batch_size", "max_length", "seed", "head_init")
@options(family_opt, json_obj)
def select_start(z: Zoo, task, dataset, neighbours, train, examples, folds, min_gain, mixture, mix_budget, mix_regions,
                 family, as_json, **params) -> None:
    """Recommend where a fine-tune on DATASET of TASK should start: the base unless evidence says otherwise."""
    res = z.select_start(task, dataset=dataset, family=family, neighbours=neighbours, train=train, examples=examples,
                         folds=folds, min_gain=min_gain / 100, mixture=mixture, mix_budget=mix_budget,
                         mix_regions=mix_regions, **params)
    fmt.emit(res, as_json, fmt.fmt_select)


@main.command("map")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Image file (.png, .svg, .pdf).")
@click.option("--color-by", type=click.Choice(COLOR_BY), default=default(Zoo.map, "color_by"), show_default=True)
@click.option("--method", type=click.Choice(MAP_METHODS), default=default(Zoo.map, "method"), show_default=True)
@kind_opt
@click.option("--no-labels", is_flag=True, help="Do not print model names next to points.")
@options(family_opt, space_opt, json_obj)
def map_(z: Zoo, out, color_by, method, kind, no_labels, family, space, as_json) -> None:
    """Draw the zoo: a 2-D projection of sketches, coloured by dataset, task or kind."""
    res = z.map(out, color_by=color_by, family=family, method=method, space=space, kind=kind, annotate=not no_labels)
    fmt.emit(res, as_json, fmt.fmt_map)


if __name__ == "__main__":  # pragma: no cover
    main()
