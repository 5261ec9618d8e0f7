"""The `zoo` command: each command parses, makes one Zoo call, and formats."""
from __future__ import annotations

import sys

import click

from zoo.cli.fmt import emit, fmt_select, fmt_clusters, fmt_distance, fmt_region, kv_pairs, show_lineage, show_model, table
from zoo import Zoo
from zoo.errors import ZooError


class ZooGroup(click.Group):
    """Turns ZooError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ZooError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was committed for the interrupted step", err=True)
            sys.exit(130)


json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(file_okay=False), envvar="ZOO_HOME",
              help="Zoo directory (default: $ZOO_HOME, else ~/.zoo).")
@click.version_option(package_name="zoo")
@click.pass_context
def main(ctx: click.Context, home: str | None) -> None:
    """zoo: a model-zoo database and query engine over weight sketches."""
    ctx.obj = Zoo(home, progress=sys.stderr.isatty())


@main.command()
@json_opt
@click.pass_obj
def init(z: Zoo, as_json: bool) -> None:
    """Create the zoo directory and its catalog."""
    emit(z.init(), as_json, lambda d: f"zoo ready at {d['home']} (schema {d['schema']})")


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--name", help="Model name (default: folder or file name).")
@click.option("--base", help="Base model this checkpoint was fine-tuned from.")
@click.option("--dataset")
@click.option("--task")
@click.option("--seed", type=int)
@click.option("--kind", type=click.Choice(["base", "finetune", "centroid", "interpolation", "external"]))
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
@json_opt
@click.pass_obj
def add(z: Zoo, paths, name, base, dataset, task, seed, kind, meta, as_json) -> None:
    """Register checkpoints (model folders, .safetensors/.bin files, or folders of them)."""
    res = z.add(paths, name=name, base=base, dataset=dataset, task=task, seed=seed, kind=kind, meta=kv_pairs(meta))
    emit([r.as_dict() for r in res], as_json,
         lambda rows: "\n".join(("added " if r["created"] else "exists ") + f"{r['name']} (id {r['id']}, {r['kind']}, "
                                f"family {r['family']})" + (f": {r['note']}" if r["note"] else "") for r in rows))


@main.command("ls")
@click.option("--family")
@click.option("--dataset")
@click.option("--task")
@click.option("--kind")
@json_opt
@click.pass_obj
def ls_(z: Zoo, family, dataset, task, kind, as_json) -> None:
    """List models."""
    rows = z.ls(family=family, dataset=dataset, task=task, kind=kind)
    emit(rows, as_json, lambda r: table(r, ["id", "name", "family", "kind", "dataset", "task", "seed", "n_params", "dtype"]))


@main.command()
@click.argument("name")
@json_opt
@click.pass_obj
def show(z: Zoo, name, as_json) -> None:
    """Show a model: metadata, lineage, evaluations."""
    emit(z.show(name), as_json, show_model)


@main.command()
@click.argument("name")
@json_opt
@click.pass_obj
def lineage(z: Zoo, name, as_json) -> None:
    """Show the lineage tree above and below a model."""
    emit(z.lineage(name), as_json, show_lineage)


@main.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even if other models derive from it.")
@json_opt
@click.pass_obj
def rm(z: Zoo, name, force, as_json) -> None:
    """Remove a model from the catalog (its files stay)."""
    emit(z.rm(name, force=force), as_json, lambda d: f"removed {d['removed']} (id {d['id']})")


@main.command()
@click.argument("query")
@click.option("--limit", type=int, help="Return at most this many rows.")
@json_opt
@click.pass_obj
def sql(z: Zoo, query, limit, as_json) -> None:
    """Run read-only SQL on the catalog."""
    cols, rows = z.sql(query, limit)
    emit([dict(zip(cols, r)) for r in rows], as_json, lambda recs: table(recs, cols))


metric_opt = click.option("--metric", type=click.Choice(["cosine", "l2"]), help="Default: the space's metric.")
space_opt = click.option("--space", "space", type=int, help="Sketch space id (default: the family's first).")
family_opt = click.option("--family", help="Family name (needed when the zoo has several).")


@main.command()
@click.argument("target")
@click.option("-k", "k", type=int, default=5, show_default=True)
@click.option("--dataset")
@click.option("--task")
@click.option("--kind")
@metric_opt
@space_opt
@family_opt
@json_opt
@click.pass_obj
def nearest(z: Zoo, target, k, dataset, task, kind, metric, space, family, as_json) -> None:
    """The k models nearest to NAME or PATH (a path is sketched, not registered)."""
    res = z.nearest(target, k=k, dataset=dataset, task=task, kind=kind, metric=metric, space=space, family=family)
    emit(res, as_json, lambda r: f"nearest to {r['query']} ({r['metric']}, space {r['space_id']}, {r['search']}):\n"
         + table(r["results"], ["rank", "name", "distance", "kind", "dataset", "task"]))


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--exact", is_flag=True, help="Also compute the exact distance from the weights.")
@space_opt
@json_opt
@click.pass_obj
def distance(z: Zoo, a, b, exact, space, as_json) -> None:
    """Distance between two task vectors (sketch estimate; --exact reads the weights)."""
    emit(z.distance(a, b, exact=exact, space=space), as_json, fmt_distance)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--dataset")
@click.option("--task")
@click.option("--all", "all_models", is_flag=True, help="Every model of the family.")
@click.option("--exclude-dataset")
@family_opt
@metric_opt
@space_opt
@json_opt
@click.pass_obj
def region(z: Zoo, names, dataset, task, all_models, exclude_dataset, family, metric, space, as_json) -> None:
    """Members, centroid and spread of a region (--dataset, --task, --all or NAMES)."""
    res = z.region(dataset=dataset, task=task, names=names or None, family=family, metric=metric, space=space,
                   exclude_dataset=exclude_dataset, all_models=all_models)
    emit(res, as_json, fmt_region)


@main.command()
@click.option("-k", "k", type=int, required=True, help="Number of clusters.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--exact", is_flag=True, help="Cluster exact task vectors (reads every model's weights once).")
@family_opt
@metric_opt
@space_opt
@json_opt
@click.pass_obj
def clusters(z: Zoo, k, seed, exact, family, metric, space, as_json) -> None:
    """k-means on sketches of fine-tuned models, with purity against dataset and task labels."""
    emit(z.clusters(k, family=family, metric=metric, space=space, seed=seed, exact=exact), as_json, fmt_clusters)


@main.command()
@click.argument("target")
@click.argument("names", nargs=-1)
@click.option("--dataset")
@click.option("--task")
@family_opt
@metric_opt
@space_opt
@json_opt
@click.pass_obj
def inside(z: Zoo, target, names, dataset, task, family, metric, space, as_json) -> None:
    """Is TARGET (name or path) inside a region? Exit 0 either way; see 'inside' in the output."""
    res = z.inside(target, dataset=dataset, task=task, names=names or None, family=family, metric=metric, space=space)
    emit(res, as_json, lambda r: f"{r['target']} is {'INSIDE' if r['inside'] else 'OUTSIDE'} the region "
         f"(score {r['score']:.3f} = distance {r['distance']:.4g} / threshold {r['threshold']:.4g}; "
         f"{r['percentile']:.0%} of members are as far or farther)")


@main.command()
@json_opt
@click.pass_obj
def reindex(z: Zoo, as_json) -> None:
    """Rebuild every FAISS index from the catalog."""
    emit(z.reindex(), as_json, lambda rows: table(rows, ["space_id", "count", "index"]))


@main.group()
def space() -> None:
    """Sketch spaces of a family."""


@space.command("ls")
@json_opt
@click.pass_obj
def space_ls(z: Zoo, as_json) -> None:
    """List sketch spaces."""
    emit(z.spaces(), as_json, lambda rows: table(rows, ["id", "family", "dim", "seed", "metric", "tensor_filter", "sketches"]))


@space.command("add")
@click.option("--dim", type=int, default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine", show_default=True)
@click.option("--filter", "tensor_filter", help="Regex on canonical tensor names to sketch (default: whole body).")
@family_opt
@json_opt
@click.pass_obj
def space_add(z: Zoo, dim, seed, metric, tensor_filter, family, as_json) -> None:
    """Add a sketch space and backfill its sketches (reads each model once)."""
    res = z.space_add(family=family, dim=dim, seed=seed, metric=metric, tensor_filter=tensor_filter)
    emit(res, as_json, lambda r: f"space {r['id']} (d={r['dim']}, seed={r['seed']}) on {r['family']}: "
         f"{r['backfilled']} sketches")


def _fmt_materialized(r: dict) -> str:
    verb = "wrote" if r["created"] else "exists"
    return (f"{verb} {r['name']} ({r['kind']}) at {r['path']}\n  members: "
            + ", ".join(f"{m} ({w:.3g})" for m, w in zip(r["members"], r["weights"])) + f"\n  {r['note']}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--dataset")
@click.option("--task")
@click.option("--all", "all_models", is_flag=True, help="Every fine-tuned model of the family.")
@click.option("--exclude-dataset")
@click.option("--weights", help="Comma-separated weights, one per member (normalised to sum 1).")
@click.option("--dirichlet", type=float, help="Sample a point of the convex hull with this concentration.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", help="Name of the new model (default: derived from the members).")
@family_opt
@json_opt
@click.pass_obj
def centroid(z: Zoo, names, dataset, task, all_models, exclude_dataset, weights, dirichlet, seed, out, family, as_json):
    """Write the weighted average of a region's members as a checkpoint and register it."""
    w = [float(x) for x in weights.split(",")] if weights else None
    res = z.centroid(dataset=dataset, task=task, names=names or None, all_models=all_models, exclude_dataset=exclude_dataset,
                     weights=w, dirichlet=dirichlet, seed=seed, out=out, family=family)
    emit(res, as_json, _fmt_materialized)


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--alpha", type=float, required=True, help="Position on the line: 0 is A, 1 is B.")
@click.option("--extrapolate", is_flag=True, help="Allow alpha outside [0, 1].")
@click.option("--out", help="Name of the new model.")
@json_opt
@click.pass_obj
def interpolate(z: Zoo, a, b, alpha, extrapolate, out, as_json) -> None:
    """Write (1 - alpha) A + alpha B as a checkpoint and register it."""
    emit(z.interpolate(a, b, alpha, extrapolate=extrapolate, out=out), as_json, _fmt_materialized)


def train_options(f):
    for opt in reversed([
        click.option("--method", type=click.Choice(["full", "bitfit"]), default="full", show_default=True),
        click.option("--epochs", type=float, default=3.0, show_default=True),
        click.option("--lr", type=float, help="Learning rate (default 5e-5 full, 1e-3 bitfit)."),
        click.option("--batch-size", type=int, default=16, show_default=True),
        click.option("--max-length", type=int, default=128, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)]):
        f = opt(f)
    return f


@main.command()
@click.option("--from", "start", required=True,
              help="Model name, 'base', or a region such as centroid:task=T,exclude_dataset=D.")
@click.option("--train", "train_file", required=True, type=click.Path(dir_okay=False))
@click.option("--eval", "eval_file", type=click.Path(dir_okay=False))
@click.option("--dataset", help="Dataset name (default: the train file's stem).")
@click.option("--task")
@click.option("--out", help="Name of the fine-tuned model.")
@family_opt
@train_options
@json_opt
@click.pass_obj
def finetune(z: Zoo, start, train_file, eval_file, dataset, task, out, family, as_json, **params) -> None:
    """Fine-tune from START, evaluate, and register the result (GPU when present)."""
    res = z.finetune(start, train_file, eval_file, dataset=dataset, task=task, out=out, family=family, **params)
    emit(res, as_json, lambda r: f"{r['name']}: fine-tuned from {r['start']} ({r['start_kind']}) on {r['dataset']}, "
         f"{r['steps']} steps in {r['train_seconds']:.1f}s on {r['device']}"
         + (f"; eval accuracy {r['eval_accuracy']:.4f} (loss {r['eval_loss']:.4f})" if "eval_accuracy" in r else ""))


@main.command()
@click.option("--status", type=click.Choice(["running", "finished", "failed"]))
@click.option("--limit", type=int)
@json_opt
@click.pass_obj
def runs(z: Zoo, status, limit, as_json) -> None:
    """List fine-tuning runs, newest first."""
    emit(z.runs(status=status, limit=limit), as_json, lambda rows: table(
        rows, ["id", "status", "start", "result", "dataset", "method", "device", "eval_accuracy", "started_at", "error"]))


@main.command("eval")
@click.argument("names", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(dir_okay=False))
@click.option("--train", "train_file", type=click.Path(dir_okay=False), help="Probe training data (default: half of --data).")
@click.option("--split", default="test", show_default=True)
@click.option("--dataset", help="Dataset name (default: the data file's stem).")
@click.option("--probe", is_flag=True, help="Always use a linear probe on the frozen body, even when the head fits.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@json_opt
@click.pass_obj
def eval_(z: Zoo, names, data, train_file, split, dataset, probe, as_json, **params) -> None:
    """Accuracy of each NAME on a data file (a linear probe when its head does not fit the labels).

    JSON is one object for one name, a list for several."""
    res = z.evaluate_many(names, data, train=train_file, split=split, dataset=dataset, probe=probe, **params)
    emit(res[0] if len(res) == 1 else res, as_json, lambda _: "\n".join(
        f"{r['name']} on {r['dataset']} ({r['split']}): {r['metric']} {r['value']:.4f} over {r['n_examples']} "
        f"examples ({r['how']})" for r in res))


@main.command("select-start")
@click.option("--task", required=True)
@click.option("--dataset", help="The target dataset (left out of the regions).")
@click.option("--neighbours", type=int, default=3, show_default=True, help="Nearest dataset regions to list.")
@click.option("--train", type=click.Path(exists=True, dir_okay=False),
              help="The target's training data: probe every candidate on it (materializes the centroids).")
@click.option("--probe-examples", type=int, default=256, show_default=True, help="Examples of --train to probe on.")
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds of the probe.")
@click.option("--max-length", type=int, default=128, show_default=True)
@family_opt
@json_opt
@click.pass_obj
def select_start(z: Zoo, task, dataset, neighbours, train, probe_examples, folds, max_length, family, as_json) -> None:
    """Rank starting points for fine-tuning on DATASET of TASK, with evidence."""
    res = z.select_start(task, dataset=dataset, family=family, neighbours=neighbours, train=train,
                         probe_examples=probe_examples, folds=folds, max_length=max_length)
    emit(res, as_json, fmt_select)


@main.command("map")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Image file (.png, .svg, .pdf).")
@click.option("--color-by", type=click.Choice(["dataset", "task", "kind"]), default="dataset", show_default=True)
@click.option("--method", type=click.Choice(["pca", "tsne"]), default="pca", show_default=True)
@click.option("--kind", help="Only models of this kind (e.g. finetune).")
@click.option("--no-labels", is_flag=True, help="Do not print model names next to points.")
@family_opt
@space_opt
@json_opt
@click.pass_obj
def map_(z: Zoo, out, color_by, method, kind, no_labels, family, space, as_json) -> None:
    """Draw the zoo: a 2-D projection of sketches, coloured by dataset, task or kind."""
    res = z.map(out, color_by=color_by, family=family, method=method, space=space, kind=kind, annotate=not no_labels)
    emit(res, as_json, lambda r: f"wrote {r['path']}: {len(r['points'])} models of family {r['family']} "
         f"({r['method']}, coloured by {r['color_by']})")


if __name__ == "__main__":  # pragma: no cover
    main()
