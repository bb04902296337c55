"""The HTML report in a real browser: it renders offline, loads nothing, runs nothing.

Drives the system Chromium (Debian ``chromium``) through the ``playwright`` Python package with
``executable_path``, so no browser is downloaded at run time. Skipped only when Chromium is not
installed; CI installs it (``apt-get install chromium``, ``pip install playwright``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.report.html import build_report
from tests.bench.report.test_html import HOSTILE, make_fake_run

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (apt-get install chromium, or set CHROMIUM=/path)"
)
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@dataclass
class Visit:
    """What the page did while loading, recorded by browser event listeners."""

    page: object
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium with a fresh profile in tmp (playwright's own --user-data-dir)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Chromium is installed but the playwright package is not: pip install playwright")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, offline=True, viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def visit(context, url: str) -> Visit:  # noqa: ANN001 - playwright BrowserContext
    """Open ``url`` in a new tab, recording requests, console errors and dialogs until load."""
    page = context.new_page()
    v = Visit(page)
    page.on("request", lambda r: v.requests.append(r.url))
    page.on("console", lambda m: v.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: v.console_errors.append(f"page error: {e}"))

    def on_dialog(dialog) -> None:  # noqa: ANN001
        v.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(url, wait_until="load")
    page.wait_for_timeout(300)  # let late console messages arrive
    return v


@pytest.fixture(scope="module")
def report_visit(browser_context, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Visit]:  # noqa: ANN001
    # 16 images per cell: the 4x4 sample grids are wider than their 340 px figures, as in the quick preset
    index = build_report([make_fake_run(tmp_path_factory.mktemp("runs"), images=16, per_sample=True)])
    v = visit(browser_context, index.as_uri())
    yield v
    v.page.close()


def test_page_shows_tables_and_images(report_visit: Visit) -> None:
    page = report_visit.page
    assert page.locator("table").count() >= 3  # run header, ranking, summary
    summary = page.locator("h2:text('Summary') + div table")
    assert summary.is_visible()
    assert summary.locator("tbody tr").count() == 9
    widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : -1)")
    assert page.locator("img.plot").count() == 3 and page.locator("figure img").count() == 9  # one grid per cell
    assert page.locator("table.cmp img").count() == 3 * 3 * 8 + 3 * 8  # 8 prompts: per method, then chosen cells
    assert all(w > 0 for w in widths), widths
    assert page.evaluate("document.scripts.length") == 0


def test_figures_do_not_overlap_at_1400_px(report_visit: Visit) -> None:
    """Each figure holds its own image (none spills into the next one) and no two figures overlap."""
    figures = report_visit.page.evaluate("""[...document.querySelectorAll('figure')].map(f => {
        const box = r => [r.left, r.top, r.right, r.bottom];
        return {box: box(f.getBoundingClientRect()),
                inner: [...f.querySelectorAll('img')].map(i => box(i.getBoundingClientRect()))};
    })""")
    assert len(figures) == 9
    for fig in figures:
        left, top, right, bottom = fig["box"]
        for l, t, r, b in fig["inner"]:
            assert left - 0.5 <= l and r <= right + 0.5 and top - 0.5 <= t and b <= bottom + 0.5, (fig["box"], (l, t, r, b))
    for i, a in enumerate(figures):
        for b in figures[i + 1:]:
            apart = (a["box"][2] <= b["box"][0] or b["box"][2] <= a["box"][0]
                     or a["box"][3] <= b["box"][1] or b["box"][3] <= a["box"][1])
            assert apart, (a["box"], b["box"])


def test_no_console_errors_no_network_no_dialog(report_visit: Visit) -> None:
    assert report_visit.console_errors == []
    assert report_visit.dialogs == []
    # The page itself comes from file:; data: images are no network request.
    assert [u for u in report_visit.requests if not u.startswith(("file:", "data:"))] == []


def test_hostile_prompt_is_text(report_visit: Visit) -> None:
    text = report_visit.page.evaluate("document.body.innerText")
    assert "<script>alert(1)</script>" in text
    assert HOSTILE in text


def test_recorders_catch_a_bad_page(browser_context, tmp_path: Path) -> None:  # noqa: ANN001
    """The listeners above are not vacuous: a page that fetches, logs and alerts is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://127.0.0.1:9/x.png"><script>console.error("boom"); alert(1)</script>',
                   encoding="utf-8")
    v = visit(browser_context, bad.as_uri())
    v.page.close()
    assert any(u.startswith("http://127.0.0.1:9/") for u in v.requests)
    assert any("boom" in e for e in v.console_errors)
    assert v.dialogs == ["1"]
