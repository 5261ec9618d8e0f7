"""``zoo serve``: browse, search and compare the zoo in a web browser.

A local web app over the same ``Zoo`` API as the CLI (no second implementation of any
query), read-only: every page reads the catalog for the length of one request, so zoo's
writers in other processes are never blocked for longer. Every page has a JSON twin under
``/api`` that returns the dicts ``--json`` prints. Pages are plain HTML; the map draws with
a little JavaScript served by the app itself (no CDN: the machine may be offline), and a
Content-Security-Policy allows scripts from the app alone.

``App`` maps a request path to a response and is tested without sockets; ``serve`` runs it
in a threaded HTTP server from the standard library.
"""
from __future__ import annotations

import html
import json
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, unquote

from zoo.domain import COLOR_BY, KINDS, SORT_COLUMNS
from zoo.errors import EmptyRegion, NotFound, ZooBusy, ZooError, ZooValueError

if TYPE_CHECKING:  # pragma: no cover
    from zoo.api import Zoo

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
MAX_PAGE = 500
SQL_ROWS = 1000
MAP_POINTS = 5000  # a browser draws this many SVG points smoothly; larger families are sampled
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Response:
    """What the server sends back: status, content type and body."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Query:
    """A request's query parameters with checked conversions (bad values raise ``ZooValueError``)."""

    def __init__(self, raw: str):
        self.values: dict[str, str] = {}
        for k, v in parse_qsl(raw, keep_blank_values=True):
            self.values[k] = v

    def text(self, key: str) -> str | None:
        v = self.values.get(key, "").strip()
        return v or None

    def whole(self, key: str, default: int | None, least: int = 0, most: int | None = None) -> int | None:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            v = int(raw)
        except ValueError:
            v = None
        if v is None or v < least or (most is not None and v > most):
            span = f"between {least} and {most}" if most is not None else f">= {least}"
            raise ZooValueError(f"{key} must be a whole number {span}, got {raw!r}")
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
        v = self.text(key)
        if v is None:
            return default
        if v not in choices:
            raise ZooValueError(f"{key} {v!r} is not one of {', '.join(choices)}")
        return v

    def flag(self, key: str) -> bool:
        return self.text(key) not in (None, "0", "false", "no", "off")

    def with_(self, **changes: Any) -> str:
        """This query string with some values changed (None removes one)."""
        out = dict(self.values)
        for k, v in changes.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = str(v)
        return urlencode(out)


# ---------------------------------------------------------------- the JSON API (the same dicts as --json)

def _plain(x: Any) -> Any:
    return x.as_dict() if hasattr(x, "as_dict") else x


class Api:
    """The data behind every page, each from one or a few ``Zoo`` calls."""

    def __init__(self, zoo: "Zoo"):
        self.zoo = zoo

    def models(self, q: Query) -> dict[str, Any]:
        filters = dict(family=q.text("family"), kind=q.choice("kind", KINDS), dataset=q.text("dataset"),
                       task=q.text("task"), search=q.text("q"))
        limit = q.whole("limit", PAGE_SIZE, 1, MAX_PAGE)
        offset = q.whole("offset", 0, 0)
        rows = self.zoo.ls(**filters, sort=q.choice("sort", SORT_COLUMNS, "id"), descending=q.flag("desc"),
                           limit=limit, offset=offset)
        return {"total": self.zoo.count(**filters), "offset": offset, "limit": limit, "rows": rows}

    def model(self, name: str, q: Query) -> dict[str, Any]:
        k = q.whole("k", 10, 1, 100)
        exact = q.flag("exact")
        out: dict[str, Any] = {"model": self.zoo.show(name), "lineage": _plain(self.zoo.lineage(name)),
                               "runs": self.zoo.runs(model=name, limit=100)}
        try:  # the sketch answer by default: milliseconds; ?exact=1 re-ranks from the weights
            out["nearest"] = _plain(self.zoo.nearest(name, k=k, rerank=None if exact else 0))
        except (EmptyRegion, NotFound, ZooValueError) as e:
            out["nearest"], out["nearest_error"] = None, str(e)
        return out

    def map(self, q: Query) -> dict[str, Any]:
        return _plain(self.zoo.map_points(family=q.text("family"), kind=q.choice("kind", KINDS),
                                          method=q.choice("method", ("pca", "tsne"), "pca"),
                                          max_points=q.whole("points", MAP_POINTS, 2, 50_000)))

    def region(self, q: Query) -> dict[str, Any]:
        task, dataset = q.text("task"), q.text("dataset")
        if task is None and dataset is None:
            raise ZooValueError("say which region: ?task=T or ?dataset=D (or both)")
        reg = _plain(self.zoo.region(dataset=dataset, task=task, family=q.text("family")))
        reg.pop("centroid", None)  # d numbers of no use on a page; `zoo region --json` has them
        return reg

    def starts(self, q: Query) -> dict[str, Any]:
        task = q.text("task")
        if task is None:
            raise ZooValueError("select-start needs ?task=T (and optionally &dataset=D)")
        return _plain(self.zoo.select_start(task, dataset=q.text("dataset"), family=q.text("family"),
                                            neighbours=q.whole("neighbours", 3, 0, 50)))

    def sql(self, q: Query) -> dict[str, Any]:
        query = q.text("q")
        if query is None:
            raise ZooValueError("give a query: ?q=SELECT ...")
        cols, rows = self.zoo.sql(query, limit=q.whole("limit", SQL_ROWS, 1, 100_000))
        return {"columns": cols, "rows": [list(r) for r in rows]}

    def families(self) -> list[str]:
        return sorted({s["family"] for s in self.zoo.spaces()})


# ---------------------------------------------------------------- HTML

def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def model_link(name: str | None) -> str:
    return "" if name is None else f'<a href="/models/{quote(name, safe="")}">{esc(name)}</a>'


def table(rows: list[dict[str, Any]], cols: list[str], cells: dict[str, Callable[[Any], str]] | None = None,
          empty: str = "none") -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    cells = cells or {}
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cells[c](r.get(c)) if c in cells else esc(_short(r.get(c)))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(x: Any) -> Any:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, default=str)
    return x


def page(title: str, body: str, nav: str = "") -> str:
    links = "".join(f'<a href="{h}"{" class=on" if h == nav else ""}>{t}</a>'
                    for h, t in (("/models", "Models"), ("/map", "Map"), ("/regions", "Regions"), ("/sql", "SQL")))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · zoo</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"></head>'
            f'<body><header><a class="brand" href="/models">zoo</a><nav>{links}</nav></header>'
            f'<main><h1>{esc(title)}</h1>{body}</main></body></html>')


def field_(name: str, q: Query, label: str, kind: str = "text") -> str:
    return (f'<label>{esc(label)} <input type="{kind}" name="{name}" value="{esc(q.text(name) or "")}">'
            '</label>')


def select(name: str, q: Query, label: str, options: tuple[str, ...] | list[str], blank: str = "any") -> str:
    cur = q.text(name)
    opts = ([f'<option value="">{esc(blank)}</option>'] if blank is not None else []) + [
        f'<option{" selected" if o == cur else ""}>{esc(o)}</option>' for o in options]
    return f'<label>{esc(label)} <select name="{name}">{"".join(opts)}</select></label>'


class Pages:
    """HTML renderings of the API's dicts."""

    def __init__(self, api: Api):
        self.api = api

    def models(self, q: Query) -> str:
        data = self.api.models(q)
        form = ('<form class="filters" method="get" action="/models">'
                + field_("q", q, "search") + select("family", q, "family", self.api.families())
                + select("kind", q, "kind", KINDS) + field_("dataset", q, "dataset") + field_("task", q, "task")
                + select("sort", q, "sort", SORT_COLUMNS, blank=None)
                + f'<label><input type="checkbox" name="desc" value="1"{" checked" if q.flag("desc") else ""}> '
                'descending</label><button>Show</button></form>')
        rows, total, off, lim = data["rows"], data["total"], data["offset"], data["limit"]
        span = f"rows {off + 1}-{off + len(rows)} of {total}" if rows else f"no rows (of {total})"
        pager = []
        if off > 0:
            pager.append(f'<a rel="prev" href="/models?{esc(q.with_(offset=max(0, off - lim) or None))}">previous</a>')
        if off + len(rows) < total:
            pager.append(f'<a rel="next" href="/models?{esc(q.with_(offset=off + lim))}">next</a>')
        cols = ["name", "kind", "family", "dataset", "task", "seed", "n_params", "created_at"]
        return page("Models", form + f'<p class="count">{span} {" · ".join(pager)}</p>'
                    + table(rows, cols, {"name": model_link}, "no models match") +
                    f'<p class="api"><a href="/api/models?{esc(q.with_())}">JSON</a></p>', "/models")

    def model(self, name: str, q: Query) -> str:
        d = self.api.model(name, q)
        m = d["model"]
        facts = [("kind", m.get("kind")), ("family", m.get("family")), ("dataset", m.get("dataset")),
                 ("task", m.get("task")), ("seed", m.get("seed")), ("format", m.get("format")),
                 ("parameters", m.get("n_params")), ("registered", m.get("created_at")), ("weights", m.get("uri"))]
        body = ['<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts if v is not None)
                + "</dl>"]
        if m.get("meta"):
            body.append(f'<details><summary>meta</summary><pre>{esc(json.dumps(m["meta"], indent=1, default=str))}'
                        "</pre></details>")
        body.append("<h2>Evaluations</h2>" + table(m.get("evaluations", []),
                                                   ["dataset", "split", "metric", "value", "n_examples"]))
        body.append("<h2>Runs</h2>" + table(d["runs"], ["id", "status", "start", "result", "dataset", "method",
                                                        "eval_accuracy", "finished_at"],
                                            {"start": model_link, "result": model_link}))
        lin = d["lineage"]
        edge = ["depth", "parent", "relation", "weight", "child"]
        links = {"parent": model_link, "child": model_link}
        body.append('<h2>Lineage</h2><h3>Parents and their ancestors</h3>'
                    + table(lin["ancestors"], edge, links, "no parents: registered as is")
                    + "<h3>Children and their descendants</h3>" + table(lin["descendants"], edge, links, "no children"))
        nn = d["nearest"]
        if nn is None:
            body.append(f'<h2>Nearest models</h2><p class="empty">{esc(d.get("nearest_error"))}</p>')
        else:
            how = "exact re-rank from the weights" if q.flag("exact") else "sketch distances"
            other = (f'<a href="?{esc(q.with_(exact=None))}">sketch only (fast)</a>' if q.flag("exact")
                     else f'<a href="?{esc(q.with_(exact=1))}">re-rank exactly from the weights</a>')
            body.append(f'<h2>Nearest models</h2><p class="note">{esc(nn["metric"])} distance, {how} · {other}</p>'
                        + table(nn["results"], ["rank", "name", "distance", "kind", "dataset", "task"],
                                {"name": model_link}, "no other models in this family"))
        body.append(f'<p class="api"><a href="/api/models/{quote(name, safe="")}?{esc(q.with_())}">JSON</a> · '
                    f'<a href="/map?family={quote(str(m.get("family") or ""))}&amp;focus={quote(name, safe="")}">'
                    "on the map</a></p>")
        return page(name, "".join(body), "/models")

    def map(self, q: Query) -> str:
        form = ('<form class="filters" id="map-form" method="get" action="/map">'
                + select("family", q, "family", self.api.families(), blank="default")
                + select("color", q, "colour by", COLOR_BY, blank=None) + select("kind", q, "kind", KINDS)
                + "<button>Draw</button></form>")
        src = "/api/map?" + esc(q.with_(color=None, focus=None))
        return page("Map", form + f'<div id="map" data-src="{src}" data-color="{esc(q.text("color") or "dataset")}" '
                    f'data-focus="{esc(q.text("focus") or "")}"><p class="empty">drawing…</p></div>'
                    '<p id="hover" class="note">hover a point to see the model; click to open it</p>'
                    '<script src="/static/app.js"></script>', "/map")

    def regions(self, q: Query) -> str:
        form = ('<form class="filters" method="get" action="/regions">' + field_("task", q, "task")
                + field_("dataset", q, "dataset") + select("family", q, "family", self.api.families(), blank="default")
                + "<button>Show</button></form>")
        if q.text("task") is None and q.text("dataset") is None:
            return page("Regions", form + '<p class="note">Name a task or a dataset to see its region: its members, '
                        "their distances to the centroid, its radius and spread, and where a fine-tune on it "
                        "should start.</p>" + self._region_index(), "/regions")
        reg = self.api.region(q)
        stats = "".join(f"<dt>{esc(k)}</dt><dd>{esc(_short(v))}</dd>" for k, v in reg["stats"].items())
        body = [f'<dl class="facts"><dt>family</dt><dd>{esc(reg["family"])}</dd><dt>members</dt><dd>{reg["n"]}</dd>'
                f'<dt>metric</dt><dd>{esc(reg["metric"])}</dd>{stats}</dl>',
                "<h2>Members</h2><p class=note>nearest the centroid first: distance to the centroid, and to "
                "the centroid of the others (leave-one-out)</p>"
                + table(sorted(reg["members"], key=lambda m: m["distance_to_centroid"]),
                        ["name", "distance_to_centroid", "loo_distance", "dataset", "task"],
                        {"name": model_link})]
        if q.text("task"):
            st = self.api.starts(q)
            body.append(f'<h2>Where to start a fine-tune</h2><p class="note">{esc(st["basis"])}. Recommended: '
                        f'<b>{esc(st["recommended"])}</b>: {esc(st["reason"])}. Trial evidence needs the target\'s '
                        "examples: <code>zoo select-start --train FILE</code>.</p>"
                        + table(st["candidates"], ["rank", "start", "category", "expected_gain", "gain_se",
                                                    "prior_gain", "evidence"]))
        body.append(f'<p class="api"><a href="/api/regions?{esc(q.with_())}">JSON</a>'
                    + (f' · <a href="/api/starts?{esc(q.with_())}">starts JSON</a>' if q.text("task") else "") + "</p>")
        return page("Region " + " / ".join(f"{k} {q.text(k)}" for k in ("task", "dataset") if q.text(k)),
                    form + "".join(body), "/regions")

    def _region_index(self) -> str:
        cols, rows = self.api.zoo.sql("SELECT task, dataset, count(*) AS models FROM models WHERE task IS NOT NULL "
                                      "OR dataset IS NOT NULL GROUP BY task, dataset ORDER BY task, dataset", limit=500)
        items = []
        for task, dataset, n in rows:
            links = []
            if task:
                links.append(f'<a href="/regions?{esc(urlencode({"task": task}))}">task {esc(task)}</a>')
            if dataset:
                links.append(f'<a href="/regions?{esc(urlencode({"dataset": dataset}))}">dataset {esc(dataset)}</a>')
            items.append(f"<li>{' · '.join(links)} ({n} models)</li>")
        return "<h2>Regions in this zoo</h2><ul class=regions>" + "".join(items) + "</ul>" if items else ""

    def sql(self, q: Query) -> str:
        query = q.text("q") or ""
        form = ('<form method="get" action="/sql" class="sql"><textarea name="q" rows="5" cols="90" '
                'placeholder="SELECT name, dataset, task FROM models LIMIT 10">' + esc(query) + "</textarea>"
                "<button>Run</button></form>"
                '<p class="note">One read-only query on the catalog, in the same sandbox as <code>zoo sql</code> '
                f"(no files, no writes, a time limit); the first {SQL_ROWS} rows.</p>")
        if not query:
            return page("SQL", form, "/sql")
        res = self.api.sql(q)
        rows = [dict(zip(res["columns"], r)) for r in res["rows"]]
        enc = esc(urlencode({"q": query}))
        return page("SQL", form + f'<p class="count">{len(rows)} row(s) · <a href="/api/sql?{enc}&amp;format=csv">CSV</a>'
                    f' · <a href="/api/sql?{enc}">JSON</a></p>' + table(rows, res["columns"]), "/sql")


# ---------------------------------------------------------------- routing

def _status_of(e: ZooError) -> int:
    if isinstance(e, (NotFound, EmptyRegion)):
        return 404
    if isinstance(e, ZooBusy):
        return 503
    return 400


class App:
    """Request path (with query string) -> ``Response``. Thread-safe: one request at a time
    reads the catalog (each read takes milliseconds; DuckDB's shared instance is not
    re-entered from several threads)."""

    def __init__(self, zoo: "Zoo"):
        self.api = Api(zoo)
        self.pages = Pages(self.api)
        self.lock = threading.Lock()

    def __call__(self, target: str, method: str = "GET") -> Response:
        url = urlsplit(target)
        path, q = unquote(url.path), Query(url.query)
        is_api = path.startswith("/api/")
        if method not in ("GET", "HEAD"):
            return self._error(405, f"{method} is not allowed: zoo serve is read-only", is_api)
        try:
            with self.lock:
                return self._route(path, q)
        except ZooError as e:
            return self._error(_status_of(e), str(e).splitlines()[0] if str(e) else type(e).__name__, is_api)
        except Exception as e:  # a bug: the page gets one line, the server's log the traceback
            traceback.print_exc(file=sys.stderr)
            return self._error(500, f"internal error ({type(e).__name__}); the server's log has the details", is_api)

    def _route(self, path: str, q: Query) -> Response:
        if path in ("", "/"):
            return Response(302, "text/plain; charset=utf-8", b"", {"Location": "/models"})
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path.startswith("/api/"):
            out = self._api(path[len("/api/"):], q)
            return out if isinstance(out, Response) else self._json(out)
        if path == "/models":
            return self._html(self.pages.models(q))
        if path.startswith("/models/") and len(path) > len("/models/"):
            return self._html(self.pages.model(path[len("/models/"):], q))
        pages = {"/map": self.pages.map, "/regions": self.pages.regions, "/sql": self.pages.sql}
        if path in pages:
            return self._html(pages[path](q))
        raise NotFound(f"no page {path!r}; the pages are /models, /map, /regions and /sql, their data under /api/")

    def _api(self, rest: str, q: Query) -> Any:
        if rest == "models":
            return self.api.models(q)
        if rest.startswith("models/") and len(rest) > len("models/"):
            return self.api.model(rest[len("models/"):], q)
        calls = {"map": self.api.map, "regions": self.api.region, "starts": self.api.starts, "sql": self.api.sql}
        if rest not in calls:
            raise NotFound(f"no API /api/{rest}; use models, models/NAME, map, regions, starts or sql")
        if rest == "sql" and q.choice("format", ("json", "csv"), "json") == "csv":
            return Response(200, "text/csv; charset=utf-8", _csv(self.api.sql(q)).encode(),
                            {"Content-Disposition": 'attachment; filename="zoo-query.csv"'})
        return calls[rest](q)

    def _static(self, name: str) -> Response:
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
        f = STATIC / name
        if "/" in name or name.startswith(".") or f.suffix not in types or not f.is_file():
            raise NotFound(f"no static file {name!r}")
        return Response(200, types[f.suffix], f.read_bytes(), {"Cache-Control": "max-age=300"})

    @staticmethod
    def _json(data: Any) -> Response:
        return Response(200, "application/json", json.dumps(data, default=str).encode())

    @staticmethod
    def _html(text: str) -> Response:
        return Response(200, "text/html; charset=utf-8", text.encode())

    @staticmethod
    def _error(status: int, message: str, is_api: bool) -> Response:
        if is_api:
            return Response(status, "application/json", json.dumps({"error": message, "status": status}).encode())
        return Response(status, "text/html; charset=utf-8",
                        page(f"Error {status}", f'<p class="error">{esc(message)}</p>').encode())


def _csv(res: dict[str, Any]) -> str:
    """A query's columns and rows as CSV with a header row."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(res["columns"])
    w.writerows(res["rows"])
    return buf.getvalue()


# ---------------------------------------------------------------- the server

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def check_host(host: str, allow_remote: bool) -> str | None:
    """Refuse a non-local address unless allowed; the warning to print when it is."""
    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        raise ZooValueError(f"--host {host!r} would serve the zoo beyond this machine; pass --allow-remote to mean it "
                            "(anyone who reaches the port can read the catalog and run read-only SQL)")
    return (f"warning: serving on {host}: anyone who reaches this port can browse the catalog and run read-only "
            "SQL on it; there is no login")


def make_server(zoo: "Zoo", host: str = "127.0.0.1", port: int = 8000) -> Any:
    """A threaded HTTP server for ``App(zoo)`` (port 0: a free one); call ``serve_forever``."""
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    app = App(zoo)

    class Handler(BaseHTTPRequestHandler):
        server_version = "zoo"
        sys_version = ""

        def _send(self, head_only: bool) -> None:
            res = app(self.path, self.command)
            self.send_response(res.status)
            self.send_header("Content-Type", res.content_type)
            self.send_header("Content-Length", str(len(res.body)))
            for k, v in {**SECURITY_HEADERS, **res.headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if not head_only:
                self.wfile.write(res.body)

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            self._send(False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._send(True)

        def do_POST(self) -> None:  # noqa: N802 (answered 405: read-only)
            self._send(False)

        do_PUT = do_DELETE = do_PATCH = do_POST

        def log_message(self, fmt: str, *args: Any) -> None:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server((host, port), Handler)


def serve(zoo: "Zoo", host: str = "127.0.0.1", port: int = 8000, allow_remote: bool = False,
          on_ready: Callable[[str, str | None], Any] | None = None) -> None:
    """Serve until interrupted; ``on_ready(url, warning)`` hears the address once it listens."""
    warning = check_host(host, allow_remote)
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ZooValueError(f"--port must be 0-65535 (0 picks a free one), got {port!r}")
    try:
        server = make_server(zoo, host, port)
    except OSError as e:
        raise ZooValueError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port "
                            "(0 picks a free one)") from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"http://{shown}:{bound}/", warning)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
