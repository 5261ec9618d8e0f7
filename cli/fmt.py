"""Output formatting for the CLI: plain tables and JSON."""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Callable, Sequence

import click
import numpy as np


def _plain(v: Any) -> Any:
    if isinstance(v, (_dt.datetime, _dt.date)):
        return v.isoformat(sep=" ", timespec="seconds") if isinstance(v, _dt.datetime) else v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON or through ``render``."""
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


def table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    """A left-aligned text table; '(no rows)' when empty."""
    if not rows:
        return "(no rows)"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
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
    lines = []
    for e in reversed(d["ancestors"]):
        lines.append("  " * 0 + f"{'^' * e['depth']} {e['parent']}  ({e['relation']} -> {e['child']})")
    lines.append(f"* {d['name']}")
    for e in d["descendants"]:
        lines.append("  " * e["depth"] + f"└ {e['child']}  ({e['relation']} from {e['parent']})")
    return "\n".join(lines)
