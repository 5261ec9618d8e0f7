"""The `zoo` command: each command parses, makes one Zoo call, and formats."""
from __future__ import annotations

import sys

import click

from cli.fmt import emit, kv_pairs, show_model, show_lineage, table
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


if __name__ == "__main__":  # pragma: no cover
    main()
