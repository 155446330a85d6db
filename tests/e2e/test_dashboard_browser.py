"""The dashboard in a real browser: Playwright drives Debian's chromium against `churn serve`.

The home is filled as the README says (a trained champion, `churn simulate` with drift,
`churn monitor run`, `churn batch score`), then a browser signs in with a printed link and a
user's morning is walked through: every panel drawn, the window selector, a drift cell's
histogram, the CSV download. Refusals are checked in the same browser. Set
CHURN_DASHBOARD_SCREENSHOT to a path to keep a screenshot of the page (docs/dashboard.png).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from churn_mlops.dashboard.sessions import SessionStore
from churn_mlops.settings import Settings
from tests.e2e.servers import server
from tests.integration.serving_fixtures import TrainedHome, make_trained_home

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PANELS = ("model", "traffic", "scores", "drift", "performance", "alerts", "at-risk", "data-quality")
CHARTS = (
    "traffic-volume",
    "traffic-latency",
    "score-distribution",
    "decision-rate",
    "drift-heatmap",
    "performance",
    "coverage",
)


def _browser_or_skip() -> Any:
    """Playwright's sync API, or a skip (a failure in CI) naming what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package (uv sync)"
    if not Path(CHROMIUM).exists():
        missing = "Debian's chromium (scripts/test-tools installs it)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} is missing; CI must provide it")
        pytest.skip(f"{missing} is missing")
    return sync_playwright


def _churn(home: TrainedHome, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "churn_mlops", *args, "--json"],
        env=home.environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _churn_quiet(home: TrainedHome, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "churn_mlops", *args], env=home.environment(), check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> TrainedHome:
    """A home after the README's morning: traffic with drift, monitoring, and a batch run."""
    root = tmp_path_factory.mktemp("dashboard")
    home = make_trained_home(root)
    _churn(home, "simulate", "--days", "14", "--per-day", "800", "--drift-from-day", "9", "--drift", "0.8")
    _churn(home, "monitor", "run")
    customers = root / "base.csv"
    _churn_quiet(
        home, "data", "generate", "--rows", "3000", "--bad-fraction", "0.02", "--output", str(customers)
    )
    _churn(home, "data", "ingest", "--source", str(customers))
    _churn(home, "batch", "score", "--input", str(customers), "--output", str(root / "scores.parquet"))
    return home


@pytest.fixture(scope="module")
def served(filled: TrainedHome) -> Iterator[str]:
    """The model server on the filled home."""
    with server(filled) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (no browser download)."""
    sync_playwright = _browser_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _link(home: TrainedHome, url: str, *extra: str) -> str:
    found = _churn(home, "dashboard", "link", *extra)["url"]
    return url + found[found.index("/dashboard/signin") :]  # the test server's port, not the default


def test_a_signed_in_browser_sees_every_panel_and_can_work_with_them(
    filled: TrainedHome, served: str, browser: Any, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(_link(filled, served))
    page.wait_for_selector("body[data-ready]")
    assert page.url == f"{served}/dashboard"
    for name in PANELS:
        panel = page.locator(f'[data-panel="{name}"]')
        assert panel.count() == 1, name
        assert panel.locator("[data-empty]").count() == 0, f"{name}: {panel.inner_text()[:300]}"
    for chart in CHARTS:  # plotly drew an SVG in every chart
        assert page.locator(f'[data-chart="{chart}"][data-drawn] svg.main-svg').count() >= 1, chart
    assert page.locator('[data-panel="at-risk"] tbody tr').count() == 20
    quality = page.locator('[data-panel="data-quality"] tbody tr')
    assert quality.count() == 2  # the ingest and the batch run, each with its quarantined rows
    assert "ingest" in quality.nth(1).inner_text()
    assert ": " in quality.nth(1).locator("td").last.inner_text()  # a reason: "column: check (rows)"
    assert page.locator('[data-panel="alerts"] tbody tr.firing').count() >= 1  # the drift fired
    assert "version 1" in page.locator('[data-panel="model"]').inner_text()
    if os.environ.get("CHURN_DASHBOARD_SCREENSHOT"):
        page.screenshot(path=os.environ["CHURN_DASHBOARD_SCREENSHOT"], full_page=True)

    # A drift cell opens that feature's histogram against the reference.
    heatmap = page.locator('[data-chart="drift-heatmap"] .nsewdrag').first
    box = heatmap.bounding_box()
    heatmap.click(position={"x": box["width"] * 0.95, "y": box["height"] * 0.05})
    histogram = page.locator('[data-chart="drift-histogram"][data-drawn]')
    histogram.wait_for()
    assert histogram.get_attribute("data-feature")
    assert "against the reference" in histogram.inner_text()

    # The CSV of customers at risk downloads, one row per customer shown.
    with page.expect_download() as download:
        page.locator("[data-download]").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == 20
    assert float(rows[0]["churn_probability"]) > 0.5

    # The window selector changes the charts: 7 days show 7 days.
    before = _days_drawn(page)
    page.locator('[data-window-selector] a[data-days="7"]').click()
    page.wait_for_selector("body[data-ready]")
    assert "days=7" in page.url
    after = _days_drawn(page)
    assert len(before) == 14
    assert after == before[-7:]
    assert problems == []
    context.close()


def _days_drawn(page: Any) -> list[str]:
    """The days on the traffic chart's x axis, read from what plotly drew."""
    days: list[str] = page.evaluate(
        "() => document.querySelector('[data-chart=\"traffic-volume\"]').data[0].x"
    )
    return days


def test_a_link_works_once_and_not_after_it_expires(filled: TrainedHome, served: str, browser: Any) -> None:
    link = _link(filled, served)
    first = browser.new_context()
    first.new_page().goto(link)
    assert first.pages[0].url == f"{served}/dashboard"
    first.close()

    second = browser.new_context().new_page()
    second.goto(link)
    assert second.url.startswith(f"{served}/dashboard/signin")
    assert "used already or it has expired" in second.inner_text("body")

    an_hour_ago = SessionStore(
        Settings(home=filled.home).serving_database_url, clock=lambda: datetime.now(UTC) - timedelta(hours=1)
    )
    token = an_hour_ago.create_link("expired", ttl_seconds=300)  # it expired 55 minutes ago
    an_hour_ago.close()
    third = browser.new_context().new_page()
    third.goto(f"{served}/dashboard/signin?token={token}")
    assert "used already or it has expired" in third.inner_text("body")
    third.goto(f"{served}/dashboard")
    assert third.url == f"{served}/dashboard/signin"


def test_a_predict_only_key_cannot_open_the_dashboard(filled: TrainedHome, served: str, browser: Any) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{served}/dashboard")
    assert page.url == f"{served}/dashboard/signin"  # no session: the sign-in form
    page.fill("#key", filled.predict_key)
    page.click("button[type=submit]")
    assert "lacks the 'view' scope" in page.inner_text("body")
    page.goto(f"{served}/dashboard")
    assert page.url == f"{served}/dashboard/signin"
    data = httpx.get(f"{served}/dashboard/data", headers={"X-API-Key": filled.predict_key})
    assert data.status_code == 403
