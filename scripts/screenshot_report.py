"""Screenshot the top of a run's report for the README: `python scripts/screenshot_report.py reports/RUN`.

Drives the system Chromium through playwright (as the browser test does), so nothing is downloaded;
writes docs/report.png (the verdict, legend, run table and ranking at 1,400 px wide), quantised to a
palette so the file stays small.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]


def screenshot(run_dir: Path, out: Path, width: int = 1400, height: int = 1150) -> Path:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium not found: apt-get install chromium, or set CHROMIUM=/path")
    page_file = (run_dir / "index.html").resolve()
    if not page_file.is_file():
        raise SystemExit(f"{run_dir} has no index.html: pass a run directory with a report")
    raw = out.with_suffix(".raw.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(page_file.as_uri())
        page.screenshot(path=str(raw))
        browser.close()
    Image.open(raw).convert("RGB").quantize(colors=64).save(out, optimize=True)
    raw.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory holding index.html")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    print(screenshot(args.run, args.out))


if __name__ == "__main__":
    main()
