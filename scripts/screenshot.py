"""Screenshots of `zoo serve` pages for the docs, taken in headless Chromium (Playwright with
the system browser, as the tests do).

    python scripts/screenshot.py --home .zoo-real --out docs [--model NAME]

Writes OUT/serve-map.png (the family's fine-tunes coloured by dataset) and
OUT/serve-model.png (a model's page: metadata, lineage, nearest neighbours).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--model", help="the model page to show (default: the first fine-tune)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        print("error: no chromium on PATH; `make chromium` installs Debian's", file=sys.stderr)
        return 1
    exe = Path(sys.executable).parent / "zoo"
    proc = subprocess.Popen([str(exe), "--home", args.home, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        if not line.startswith("zoo serve: "):
            print(f"error: zoo serve did not start: {line.strip()} {proc.stderr.read().strip()}", file=sys.stderr)
            return 1
        url = line.split()[2].rstrip("/")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            pg = browser.new_page(viewport={"width": 1100, "height": 860})
            pg.goto(url + "/map?kind=finetune&color=dataset")
            pg.wait_for_selector("#map[data-drawn]")
            pg.locator("#map circle.point").first.hover()
            pg.screenshot(path=str(out / "serve-map.png"), full_page=True)
            name = args.model
            if name is None:
                pg.goto(url + "/models?kind=finetune&limit=1")
                name = pg.locator("table tbody a").first.inner_text()
            pg.goto(f"{url}/models/{name}")
            pg.screenshot(path=str(out / "serve-model.png"), full_page=True)
            browser.close()
        print(f"wrote {out / 'serve-map.png'} and {out / 'serve-model.png'}")
    finally:
        proc.terminate()
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
