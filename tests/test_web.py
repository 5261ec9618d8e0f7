"""zoo serve: every route over real HTTP, bad input, the host guard, and the pages in a real browser."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from zoo.errors import ZooValueError
from zoo.web import check_host, make_server


@pytest.fixture()
def served(filled):
    """The filled zoo (base, three fine-tunes of datasets a and b) plus a centroid, served on a free port."""
    filled.centroid(dataset="a", out="cen-a")
    server = make_server(filled, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield filled, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_every_page_answers_with_html_and_its_api_with_the_same_dicts(served):
    zoo, url = served
    for path in ("/models", "/models?q=ft-a&sort=name&desc=1&limit=2&offset=1", "/models/ft-a0", "/models/cen-a",
                 "/models/base?exact=1", "/map?color=task", "/regions", "/regions?task=t", "/regions?dataset=a",
                 "/sql", "/sql?q=SELECT+name+FROM+models"):
        status, headers, body = get(url + path)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), path
        assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
        assert body.startswith(b"<!doctype html>") and b"Traceback" not in body
    # The JSON API returns what the library (and --json) returns.
    status, _, body = get(url + "/api/models?sort=name&desc=1&limit=3&offset=1")
    page = json.loads(body)
    assert status == 200 and page["total"] == zoo.count() == 8 and page["offset"] == 1 and page["limit"] == 3
    assert page["rows"] == json.loads(json.dumps(zoo.ls(sort="name", descending=True, limit=3, offset=1), default=str))
    one = json.loads(get(url + "/api/models/ft-a0?k=3")[2])
    assert one["model"]["name"] == "ft-a0" and one["model"]["dataset"] == "a"
    assert one["nearest"] == json.loads(json.dumps(zoo.nearest("ft-a0", k=3, rerank=0).as_dict(), default=str))
    assert {r["name"] for r in one["nearest"]["results"]} == {"cen-a", "ft-a1", "ft-a2"}  # its region
    cen = json.loads(get(url + "/api/models/cen-a")[2])
    assert {e["parent"] for e in cen["lineage"]["ancestors"] if e["depth"] == 1} == {"ft-a0", "ft-a1", "ft-a2"}
    exact = json.loads(get(url + "/api/models/ft-a0?exact=1&k=2")[2])["nearest"]
    assert "re-rank" in exact["search"] and len(exact["results"]) == 2
    mp = json.loads(get(url + "/api/map?kind=finetune")[2])
    assert mp == json.loads(json.dumps(zoo.map_points(kind="finetune").as_dict()))
    assert len(mp["points"]) == mp["total"] == 6 and {p["dataset"] for p in mp["points"]} == {"a", "b"}
    few = json.loads(get(url + "/api/map?kind=finetune&points=4")[2])  # a larger family is sampled, said so
    assert len(few["points"]) == 4 and few["total"] == 6
    assert few == json.loads(get(url + "/api/map?kind=finetune&points=4")[2])  # the same sample each time
    reg = json.loads(get(url + "/api/regions?task=t")[2])
    want = zoo.region(task="t").as_dict()
    want.pop("centroid")
    assert reg == json.loads(json.dumps(want)) and reg["n"] == 6
    starts = json.loads(get(url + "/api/starts?task=t&dataset=c")[2])
    assert starts["recommended"] == "base" and starts == json.loads(json.dumps(zoo.select_start("t", dataset="c").as_dict()))
    sql = json.loads(get(url + "/api/sql?q=" + urllib.parse.quote("SELECT name FROM models ORDER BY id LIMIT 2"))[2])
    assert sql == {"columns": ["name"], "rows": [["base"], ["ft-a0"]]}
    status, headers, body = get(url + "/api/sql?format=csv&q=" + urllib.parse.quote("SELECT name, dataset FROM models "
                                                                                    "WHERE dataset = 'b' ORDER BY id"))
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert body.decode().splitlines() == ["name,dataset", "ft-b0,b", "ft-b1,b", "ft-b2,b"]
    status, headers, body = get(url + "/static/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"hull" in body
    status, headers, _ = get(url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")  # the redirect to /models, followed


def test_pages_show_the_model_and_link_its_relatives(served):
    zoo, url = served
    text = get(url + "/models/cen-a")[2].decode()
    for name in ("ft-a0", "ft-a1", "ft-a2"):
        assert f'href="/models/{name}"' in text  # parents in the lineage, neighbours
    assert "averaged_from" in text and "Nearest models" in text
    listing = get(url + "/models?limit=3")[2].decode()
    assert "rows 1-3 of 8" in listing and 'rel="next" href="/models?limit=3&amp;offset=3"' in listing
    last = get(url + "/models?limit=3&offset=6")[2].decode()
    assert "rows 7-8 of 8" in last and 'rel="prev"' in last and 'rel="next"' not in last
    region = get(url + "/regions?task=t")[2].decode()
    assert "Where to start a fine-tune" in region and "Recommended: <b>base</b>" in region


def test_names_and_labels_are_escaped(served):
    zoo, url = served
    zoo.set("ft-b0", dataset='<script>alert("x")</script>')
    for path in ("/models", "/models/ft-b0", "/regions"):
        text = get(url + path)[2].decode()
        assert '<script>alert("x")</script>' not in text and "&lt;script&gt;alert(&quot;x&quot;)" in text, path
    q = urllib.parse.quote("SELECT '<img src=x onerror=alert(1)>' AS v")
    text = get(url + "/sql?q=" + q)[2].decode()
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


@pytest.mark.parametrize("path,status,message", [
    ("/models/nope", 404, "no model named 'nope'"),
    ("/api/models/nope", 404, "no model named 'nope'"),
    ("/api/models?limit=abc", 400, "limit must be a whole number between 1 and 500, got 'abc'"),
    ("/api/models?limit=100000", 400, "limit must be a whole number between 1 and 500"),
    ("/api/models?offset=-1", 400, "offset must be a whole number >= 0, got '-1'"),
    ("/api/models?offset=99999999999999999999", 400, "--offset must be a whole number >= 0 (below 2**63)"),
    ("/api/models?kind=bogus", 400, "kind 'bogus' is not one of"),
    ("/api/models?sort=password", 400, "sort 'password' is not one of"),
    ("/api/models?family=nope", 404, "nope"),
    ("/api/models/ft-a0?k=0", 400, "k must be a whole number between 1 and 100"),
    ("/api/regions", 400, "say which region"),
    ("/api/regions?dataset=nope", 404, "no fine-tuned models match dataset=nope"),
    ("/api/starts", 400, "select-start needs ?task=T"),
    ("/api/sql", 400, "give a query"),
    ("/api/sql?q=DROP+TABLE+models", 400, "read-only"),
    ("/api/sql?q=SELECT+1&format=xml", 400, "format 'xml' is not one of json, csv"),
    ("/api/map?method=umap", 400, "method 'umap' is not one of pca, tsne"),
    ("/api/map?points=1", 400, "points must be a whole number between 2 and 50000, got '1'"),
    ("/api/nope", 404, "no API /api/nope"),
    ("/nope", 404, "no page '/nope'"),
    ("/static/..%2Fweb.py", 404, "no static file"),
    ("/static/secret.txt", 404, "no static file"),
])
def test_bad_requests_get_a_4xx_and_one_line(served, path, status, message):
    _, url = served
    got, headers, body = get(url + path)
    text = body.decode()
    assert got == status and "Traceback" not in text
    if path.startswith("/api/"):
        err = json.loads(text)
        assert err["status"] == status and message in err["error"] and "\n" not in err["error"]
    else:
        assert headers["Content-Type"].startswith("text/html") and message.replace("'", "&#x27;") in text


def test_only_reads(served):
    zoo, url = served
    before = zoo.count()
    for method in ("POST", "PUT", "DELETE"):
        status, _, body = get(url + "/api/models", method)
        assert status == 405 and "read-only" in json.loads(body)["error"]
    assert zoo.count() == before


def test_writers_elsewhere_go_on_while_it_serves(served, home):
    """The catalog is attached for a request only: another process writes between pages, and
    the next page shows the write."""
    _, url = served
    assert json.loads(get(url + "/api/models/ft-a0")[2])["model"]["task"] == "t"
    exe = Path(sys.executable).parent / "zoo"
    r = subprocess.run([str(exe), "--home", str(home), "set", "ft-a0", "--task", "moved"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(get(url + "/api/models/ft-a0")[2])["model"]["task"] == "moved"
    assert json.loads(get(url + "/api/models?task=moved")[2])["total"] == 1


def test_host_guard():
    assert check_host("127.0.0.1", False) is None and check_host("localhost", False) is None
    with pytest.raises(ZooValueError, match="--allow-remote"):
        check_host("0.0.0.0", False)
    assert "anyone who reaches this port" in check_host("0.0.0.0", True)


def test_cli_serve(filled, home):
    exe = Path(sys.executable).parent / "zoo"
    bad = subprocess.run([str(exe), "--home", str(home), "serve", "--host", "0.0.0.0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--allow-remote" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    proc = subprocess.Popen([str(exe), "--home", str(home), "serve", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # printed once it listens
        assert line.startswith("zoo serve: http://127.0.0.1:")
        base = line.split()[2]
        status, _, body = get(base + "api/models?limit=1")
        assert status == 200 and json.loads(body)["total"] == 7
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------- a real browser

def _chromium() -> str:
    """The system browser `make test` installs (Debian's chromium); ZOO_CHROMIUM names another."""
    import shutil

    path = os.environ.get("ZOO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: `make chromium` installs Debian's (or set ZOO_CHROMIUM)"
    return path


def _artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("ZOO_TEST_ARTIFACTS", tmp_path / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_pages_in_a_real_browser(served, tmp_path):
    """Debian's chromium, headless, driven by Playwright: list -> model -> neighbour by clicks,
    the map drawn, hovered and clicked, the other pages loaded; screenshots of each."""
    from playwright.sync_api import sync_playwright

    zoo, url = served
    shots = _artifacts(tmp_path)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.goto(url + "/models")
        assert pg.locator("table tbody tr").count() == 8
        pg.screenshot(path=str(shots / "models.png"), full_page=True)
        pg.fill("input[name=q]", "ft-b")
        pg.click("form.filters button")
        assert pg.locator("table tbody tr").count() == 3 and "q=ft-b" in pg.url
        pg.click("table tbody a >> text=ft-b1")
        pg.wait_for_url("**/models/ft-b1")
        assert pg.locator("h1").inner_text() == "ft-b1"
        pg.screenshot(path=str(shots / "model.png"), full_page=True)
        nearest = pg.locator("h2:has-text('Nearest models') + p + table tbody tr td:nth-child(2) a").first
        neighbour = nearest.inner_text()
        assert neighbour in {"ft-b0", "ft-b2"}
        nearest.click()
        pg.wait_for_url(f"**/models/{neighbour}")
        assert pg.locator("h1").inner_text() == neighbour
        pg.goto(url + "/map?kind=finetune")
        pg.wait_for_selector("#map[data-drawn]")
        assert pg.locator("#map circle.point").count() == 6
        assert pg.locator("#map .region").count() == 2  # datasets a and b outlined
        pg.screenshot(path=str(shots / "map.png"), full_page=True)
        dot = pg.locator('#map circle[data-name="ft-a2"]')
        dot.hover()
        assert "ft-a2" in pg.locator("#hover").inner_text()
        dot.click()
        pg.wait_for_url("**/models/ft-a2")
        pg.goto(url + "/map?color=task")
        pg.wait_for_selector("#map[data-drawn]")
        assert pg.locator("#map circle.point").count() == 8 and "task t" in pg.locator("ul.legend").inner_text()
        for path, name in (("/regions?task=t", "regions"), ("/sql?q=SELECT+name,+kind+FROM+models", "sql")):
            pg.goto(url + path)
            assert pg.locator("table").count() >= 1
            pg.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        browser.close()
    assert errors == []
    assert all((shots / f"{n}.png").stat().st_size > 5000 for n in ("models", "model", "map", "regions", "sql"))
