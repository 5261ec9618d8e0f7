"""Output formatting for the CLI: plain tables and JSON."""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Callable, Sequence

import click


def _plain(v: Any) -> Any:
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat(sep=" ", timespec="seconds") if isinstance(v, _dt.datetime) else v.isoformat()
    if type(v).__module__ == "numpy":  # a numpy scalar or array (numpy itself is not imported for this)
        return v.tolist()
    return str(v)


def plain(data: Any) -> Any:
    """A verb's typed result (or a list of them) as the plain dicts that JSON and renderers take."""
    if isinstance(data, list):
        return [plain(d) for d in data]
    return data.as_dict() if hasattr(data, "as_dict") else data


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` (a result, a list, rows) as JSON or through ``render``."""
    data = plain(data)
    if as_json:
        click.echo(json.dumps(data, default=_plain, indent=2))
    else:
        click.echo(render(data))


def _cell(v: Any, width: int = 48) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        s = f"{v:.4g}"
    elif isinstance(v, (dict, list)):
        s = json.dumps(v, default=_plain)
    else:
        s = _plain(v) if not isinstance(v, str) else v
    return s if len(s) <= width else s[: width - 1] + "…"


def table(rows: Sequence[dict[str, Any]], cols: Sequence[str], width: int = 48) -> str:
    """A left-aligned text table; '(no rows)' when empty."""
    if not rows:
        return "(no rows)"
    cells = [[_cell(r.get(c), width) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def kv_pairs(items: Sequence[str]) -> dict[str, str]:
    """Parse KEY=VALUE options."""
    out = {}
    for it in items:
        if "=" not in it:
            raise click.BadParameter(f"{it!r} is not KEY=VALUE", param_hint="--meta")
        k, v = it.split("=", 1)
        out[k.strip()] = v
    return out


def show_model(m: dict[str, Any]) -> str:
    keys = ["id", "name", "family", "kind", "dataset", "task", "seed", "n_params", "dtype", "format", "uri",
            "content_hash", "created_at"]
    lines = [f"{k:>13}: {_cell(m.get(k), 200)}" for k in keys]
    meta = {k: v for k, v in m.get("meta", {}).items() if v not in (None, "", [], {})}
    if meta:
        lines.append(f"{'meta':>13}: {_cell(meta, 200)}")
    for s in m.get("sketches", []):
        lines.append(f"{'sketch':>13}: space {s['space_id']} (d={s['dim']}, seed={s['seed']}) norm {s['norm']:.6g}")
    for title, rel in (("parents", m.get("parents", [])), ("children", m.get("children", []))):
        if rel:
            lines.append(f"{title:>13}: " + ", ".join(f"{r['name']} ({r['relation']}"
                                                      + (f", w={r['weight']:.4g}" if r.get("weight") is not None else "")
                                                      + ")" for r in rel))
    if m.get("evaluations"):
        lines.append("  evaluations:")
        lines.append(table(m["evaluations"], ["dataset", "split", "metric", "value", "n_examples", "created_at"]))
    return "\n".join(lines)


def show_lineage(d: dict[str, Any]) -> str:
    def edge(e: dict[str, Any], arrow: str) -> str:
        w = f", w={e['weight']:.3g}" if e.get("weight") is not None else ""
        return f"{'  ' * e['depth']}{e['child']} {arrow} {e['parent']}  ({e['relation']}{w})"

    lines = [f"* {d['name']}"]
    if d["ancestors"]:
        lines.append("ancestors (child <- parent):")
        lines += [edge(e, "<-") for e in d["ancestors"]]
    if d["descendants"]:
        lines.append("descendants (child <- parent):")
        lines += [edge(e, "<-") for e in d["descendants"]]
    if len(lines) == 1:
        lines.append("(no lineage)")
    return "\n".join(lines)


def fmt_distance(d: dict[str, Any]) -> str:
    s = d["sketch"]
    lines = [f"{d['a']} <-> {d['b']} (family {d['family']}, space {d['space_id']}, d={d['dim']})",
             f"  sketch: cosine distance {s['cosine']:.6f}  L2 {s['l2']:.6g}"]
    if "exact" in d:
        e = d["exact"]
        lines.append(f"  exact:  cosine distance {e['cosine']:.6f}  L2 {e['l2']:.6g}  (L2 relative error {d['relative_error_l2']:.2%})")
    return "\n".join(lines)


def fmt_region(r: dict[str, Any]) -> str:
    st = r["stats"]
    head = (f"region of {r['n']} model(s) in family {r['family']} ({r['metric']}, space {r['space_id']}): "
            f"radius {st['radius']:.4g}, mean {st['mean_dist']:.4g}, p95 {st['p95_dist']:.4g}, "
            f"mean pairwise cosine {st['mean_pairwise_cosine']:.4f}")
    return head + "\n" + table(r["members"], ["name", "dataset", "task", "distance_to_centroid", "loo_distance"])


def fmt_clusters(r: dict[str, Any]) -> str:
    head = (f"{r['k']} clusters of {r['n']} models (family {r['family']}, {r['metric']}, "
            f"{'exact task vectors' if r.get('exact') else 'sketches'}): "
            f"purity vs dataset {r['purity_dataset']:.3f}, vs task {r['purity_task']:.3f}")
    return head + "\n" + table(r["assignments"], ["cluster", "name", "dataset", "task"])


def fmt_fidelity(r: dict[str, Any]) -> str:
    head = (f"sketch answers against exact ones on {r['n']} models of family {r['family']} ({r['metric']}, "
            f"k = {r['k']}; 1.0 = the same answers)")
    rows = [{k: (f"{v:.3f}" if isinstance(v, float) else "-" if v is None else v) for k, v in x.items()}
            for x in r["settings"]]
    return head + "\n" + table(rows, ["setting", "knn_overlap", "nn1_same_dataset", "spearman", "reads_models"])


def _pts(x: float | None, se: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}" + (f" +/- {se * 100:.1f}" if se else "")


def fmt_select(r: dict[str, Any]) -> str:
    rows = []
    for c in r["candidates"]:
        ev = c["evidence"]
        bits = []
        if "members" in ev:
            bits.append(f"{ev['members']} models of {len(ev['datasets'])} dataset(s), radius {ev['radius']:.3g}")
        if ev.get("distance"):
            bits.append(f"{ev['distance']:.3g} from {ev['distance_to']}")
        if c["category"] == "base":
            bits.append(f"{ev.get('model', '')}: the reference")
        if c["category"] == "mixture":
            top = sorted(ev["regions"].items(), key=lambda kv: -kv[1])[:4]
            bits.append("learned mixture " + ", ".join(f"{k} {v:.2f}" for k, v in top)
                        + (", ..." if len(ev["regions"]) > 4 else ""))
        for src in c["sources"]:
            bits.append(f"{src['source']} {_pts(src['gain'], src['se'])} (n={src['n']})")
        if "trial_accuracy" in ev:
            bits.append(f"trial accuracy {ev['trial_accuracy']:.3f}")
        if "logme" in ev:
            bits.append(f"LogME {ev['logme']:.3f}")
        if c["other_datasets_gain"] is not None:
            bits.append(f"on other datasets {_pts(c['other_datasets_gain'])} over {c['other_datasets_runs']} run(s)")
        rows.append({"rank": c["rank"], "start": ("* " if c["recommended"] else "  ") + c["start"],
                     "gain": _pts(c["expected_gain"], c["gain_se"]), "prior": _pts(c["prior_gain"]),
                     "evidence": "; ".join(bits)})
    head = (f"starting points for task {r['task']}" + (f", dataset {r['dataset']}" if r["dataset"] else "")
            + f" ({r['basis']}; gain = expected accuracy points over the base, +/- one standard error;"
            + " prior = the paper's, on-region only, never decides)")
    return (head + "\n" + table(rows, ["rank", "start", "gain", "prior", "evidence"], width=110)
            + f"\nrecommended: {r['recommended']}: {r['reason']}"
            + "".join(f"\nnote: {n}" for n in r.get("notes", [])))


def columns(*cols: str, width: int = 48) -> Callable[[Sequence[dict[str, Any]]], str]:
    """A renderer of rows as a table of these columns."""
    return lambda rows: table(rows, cols, width)


def paged(render: Callable[[Sequence[dict[str, Any]]], str], offset: int, total: int) -> Callable[[Sequence[dict[str, Any]]], str]:
    """``render`` with a footer saying which rows of how many these are."""
    def out(rows: Sequence[dict[str, Any]]) -> str:
        span = f"{offset + 1}-{offset + len(rows)}" if rows else "none"
        return f"{render(rows)}\nrows {span} of {total}"
    return out


def to_csv(cols: Sequence[str]) -> Callable[[Sequence[dict[str, Any]]], str]:
    """A renderer of rows as CSV with a header row."""
    import csv
    import io

    def render(rows: Sequence[dict[str, Any]]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows([["" if r[c] is None else (_plain(r[c]) if not isinstance(r[c], (str, int, float)) else r[c])
                      for c in cols] for r in rows])
        return buf.getvalue().rstrip("\n")
    return render


def fmt_init(d: dict[str, Any]) -> str:
    return f"zoo ready at {d['home']} (schema {d['schema']})"


def fmt_add(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(("added " if r["created"] else "exists ") + f"{r['name']} (id {r['id']}, {r['kind']}, "
                     f"family {r['family']})" + (f": {r['note']}" if r["note"] else "") for r in rows)


def fmt_cache_scan(r: dict[str, Any]) -> str:
    lines = [f"Hugging Face cache {r['cache']}: {len(r['added'])} added, {len(r['skipped'])} skipped"]
    lines += [("added " if a["created"] else "exists ") + f"{a['name']} ({a['repo_id']}@{a['revision'][:10]}, "
              f"family {a['family']})" for a in r["added"]]
    lines += [f"skipped {s['repo_id']}: {s['why']}" for s in r["skipped"]]
    return "\n".join(lines)


def fmt_edited(r: dict[str, Any]) -> str:
    return f"{r['name']} (id {r['id']}): " + ", ".join(f"{k} {_cell(v['old'])!r} -> {_cell(v['new'])!r}"
                                                       for k, v in r["changed"].items())


def fmt_snapshot(r: dict[str, Any]) -> str:
    again = "; refreshed after every change" if r["refreshed_after_changes"] else ""
    return f"wrote {r['path']} ({r['models']} models, {r['bytes']} bytes){again}: open it with `duckdb -readonly {r['path']}`"


def fmt_exported(r: dict[str, Any]) -> str:
    return f"exported {r['name']} to {r['path']}: {len(r['files'])} files, {r['bytes']} bytes"


def fmt_checkup(r: dict[str, Any]) -> str:
    seen = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r["checked"].items())
    if not r["problems"]:
        return f"zoo is healthy ({seen})"
    rows = [dict(p, state="repaired" if p["repaired"] else "open") for p in r["problems"]]
    return (f"{len(rows)} problem(s), {sum(p['repaired'] for p in rows)} repaired ({seen}):\n"
            + table(rows, ["state", "kind", "what", "detail", "fix"], width=90))


def fmt_rm(d: dict[str, Any]) -> str:
    return f"removed {d['removed']} (id {d['id']})"


def fmt_nearest(r: dict[str, Any]) -> str:
    return (f"nearest to {r['query']} ({r['metric']}, space {r['space_id']}, {r['search']}):\n"
            + table(r["results"], ["rank", "name", "distance", "kind", "dataset", "task"]))


def fmt_inside(r: dict[str, Any]) -> str:
    return (f"{r['target']} is {'INSIDE' if r['inside'] else 'OUTSIDE'} the region "
            f"(score {r['score']:.3f} = distance {r['distance']:.4g} / threshold {r['threshold']:.4g}; "
            f"{r['percentile']:.0%} of members are as far or farther)")


def fmt_space_add(r: dict[str, Any]) -> str:
    return f"space {r['id']} (d={r['dim']}, seed={r['seed']}) on {r['family']}: {r['backfilled']} sketches"


def fmt_materialized(r: dict[str, Any]) -> str:
    verb = "wrote" if r["created"] else "exists"
    return (f"{verb} {r['name']} ({r['kind']}) at {r['path']}\n  members: "
            + ", ".join(f"{m} ({w:.3g})" for m, w in zip(r["members"], r["weights"])) + f"\n  {r['note']}")


def fmt_finetune(r: dict[str, Any]) -> str:
    return (f"{r['name']}: fine-tuned from {r['start']} ({r['start_kind']}) on {r['dataset']}, "
            f"{r['steps']} steps in {r['train_seconds']:.1f}s on {r['device']}"
            + (f"; eval accuracy {r['eval_accuracy']:.4f} (loss {r['eval_loss']:.4f})" if "eval_accuracy" in r else "")
            + (f"; eval perplexity {r['eval_perplexity']:.3f} (loss {r['eval_loss']:.4f})" if "eval_perplexity" in r
               else ""))


def fmt_eval(res: dict[str, Any] | list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['name']} on {r['dataset']} ({r['split']}): {r['metric']} {r['value']:.4f} over "
                     f"{r['n_examples']} examples ({r['how']})" for r in (res if isinstance(res, list) else [res]))


def fmt_map(r: dict[str, Any]) -> str:
    return (f"wrote {r['path']}: {len(r['points'])} models of family {r['family']} "
            f"({r['method']}, coloured by {r['color_by']})")


def floats(text: str | None, option: str) -> list[float] | None:
    """Parse a comma-separated list of numbers (``--weights 1,3``)."""
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers, e.g. 1,3", param_hint=option) from None
