"""The dashboard in a real browser: Playwright (pytest-playwright) driving Debian's Chromium.

One live server (uvicorn in a thread) per module over a small synthetic catalogue on SQLite (the
API tests cover both backends; these test what the browser does with it). Nothing is downloaded:
the browser is /usr/bin/chromium (`make browser` installs it), and with CI=true a missing one
fails the tests instead of skipping them. Screenshots go to a temp directory, or to
SALESFC_SCREENSHOT_DIR (`make screenshots` writes the README's, docs/img/).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Page, expect

from app.main import create_app
from app.services.batch import run_forecast_all
from featurestore import jobs
from tests.app.conftest import READ_KEY, Served, build_served
from tests.conftest import IN_CI

CHROMIUM = Path(os.environ.get("SALESFC_CHROMIUM", "/usr/bin/chromium"))
HORIZON = 14  # the served fixture's model horizon
HISTORY_DAYS = 56  # app.services.dashboard.HISTORY_DAYS


@pytest.fixture(scope="session")
def base_url() -> None:
    """pytest-base-url's own fixture warns on pytest 9 (warnings are errors); pages use live."""
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, never a downloaded build; missing it fails under CI."""
    if not CHROMIUM.exists():
        message = f"Chromium not found at {CHROMIUM}: `make browser` installs it"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # --no-sandbox: Chromium refuses to start as root (CI runs as root) with its sandbox on.
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": ["--no-sandbox"]}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("SALESFC_SCREENSHOT_DIR")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, Served]]:
    """The app served on a free loopback port, with a champion and a stored nightly run."""
    root = tmp_path_factory.mktemp("dashboard")
    shutil.copy(sqlite_template, root / "store.db")
    # The README's pictures (make screenshots): a catalogue large enough for totals worth a look.
    n_skus = 120 if os.environ.get("SALESFC_SCREENSHOT_DIR") else 16
    served = build_served(f"sqlite:///{root / 'store.db'}", root / "models", n_skus)
    run_forecast_all(served.engine, served.registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(served.settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", served
    server.should_exit = True
    thread.join(10)
    sock.close()
    served.engine.dispose()


@pytest.fixture
def signed_in(
    live: tuple[str, Served], context: BrowserContext, page: Page
) -> Iterator[tuple[str, Page]]:
    """A page whose context holds the dashboard's key cookie (as the login form leaves it)."""
    base, _ = live
    context.add_cookies(
        [{"name": "salesfc_key", "value": READ_KEY, "url": base, "httpOnly": True,
          "sameSite": "Strict"}]
    )  # fmt: skip
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield base, page
    assert errors == [], f"the page reported errors: {errors}"


def ready(page: Page) -> None:
    """Wait until the page's script has drawn everything (it sets body[data-ready])."""
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)


def test_login_form_lets_a_read_key_in_and_keeps_others_out(
    live: tuple[str, Served], page: Page, shots: Path
) -> None:
    base, served = live
    page.goto(f"{base}/dashboard/totals")
    expect(page).to_have_url(f"{base}/dashboard/login?next=%2Fdashboard%2Ftotals")
    assert "Champion" not in page.content()  # nothing of the service before signing in
    page.fill("input[name=key]", "not-a-key")
    page.click("#login button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not a read key")
    page.fill("input[name=key]", READ_KEY)
    page.click("#login button[type=submit]")
    expect(page).to_have_url(f"{base}/dashboard/totals")
    ready(page)
    page.goto(f"{base}/dashboard")
    expect(page.locator("#champion")).to_contain_text(served.version)
    cookie = next(c for c in page.context.cookies() if c["name"] == "salesfc_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click(".logout button")
    expect(page).to_have_url(f"{base}/dashboard/login")
    page.goto(f"{base}/dashboard")
    expect(page).to_have_url(f"{base}/dashboard/login?next=%2Fdashboard")


def test_overview_shows_champion_registry_history_run_and_jobs(
    signed_in: tuple[str, Page], live: tuple[str, Served], shots: Path
) -> None:
    base, page = signed_in
    served = live[1]
    job = jobs.create_job(served.engine, "retrain", {"folds": 1})
    jobs.start_job(served.engine, job.id, os.getpid())
    jobs.report_progress(served.engine, job.id, 0.4, "fitting lgbm_tweedie")
    page.goto(f"{base}/dashboard")
    ready(page)
    row = page.locator(f"tr.job[data-job-id='{job.id}']")
    expect(row.locator(".message")).to_have_text("fitting lgbm_tweedie")
    assert row.locator("progress").evaluate("p => p.value") == pytest.approx(0.4)
    # The page follows a running job: its progress moves without a reload.
    jobs.report_progress(served.engine, job.id, 0.7, "refitting on all data")
    expect(row.locator(".message")).to_have_text("refitting on all data", timeout=10_000)
    assert row.locator("progress").evaluate("p => p.value") == pytest.approx(0.7)
    jobs.finish_job(served.engine, job.id, ok=True, message="done")
    expect(row.locator(".status")).to_have_text("succeeded", timeout=10_000)
    expect(page.locator("#champion")).to_contain_text(served.version)
    expect(page.locator("#champion table.scores")).to_contain_text("rmsse")
    # The registry's promotion and its reason (the fixture promoted with "test fixture").
    expect(page.locator("#registry tbody tr").first).to_contain_text("test fixture")
    expect(page.locator("#nightly")).to_contain_text(served.version)
    expect(page.locator("#jobs")).to_be_visible()
    page.screenshot(path=str(shots / "dashboard-overview.png"), full_page=True)


def test_accuracy_plots_every_backtest_horizon(signed_in: tuple[str, Page], shots: Path) -> None:
    base, page = signed_in
    page.goto(f"{base}/dashboard/accuracy")
    ready(page)
    chart = page.locator("#by-horizon")
    expect(chart.locator("circle.pt.mean")).to_have_count(HORIZON)
    expect(chart.locator("circle.pt.whatif")).to_have_count(HORIZON)  # WAPE
    for segment in ("category", "store", "demand_class"):
        assert page.locator(f"#segment-{segment} tbody tr").count() >= 1


def test_sku_search_forecast_band_what_if_and_explanation(
    signed_in: tuple[str, Page], live: tuple[str, Served], shots: Path
) -> None:
    base, page = signed_in
    served = live[1]
    with served.engine.connect() as conn:
        sku = conn.exec_driver_sql(
            "select min(sku) from products where status != 'discontinued'"
        ).scalar()
    page.goto(f"{base}/dashboard/sku")
    page.fill("#search input[name=q]", str(sku)[:6])
    page.click("#search button")
    link = page.locator("#results a", has_text=str(sku))
    expect(link).to_have_count(1)
    link.click()
    ready(page)
    expect(page.locator("#sku-title")).to_have_text(str(sku))
    chart = page.locator("#forecast-chart")
    # One point per forecast day; the P10-P90 band spans the same days; history before it.
    expect(chart.locator("circle.pt.mean")).to_have_count(HORIZON)
    assert chart.locator("polygon.band").get_attribute("data-n") == str(HORIZON)
    history = int(chart.locator("polyline.history").get_attribute("data-n") or 0)
    assert 0 < history <= HISTORY_DAYS
    band = chart.locator("polygon.band").get_attribute("points") or ""
    assert len(band.split()) == 2 * HORIZON
    # The explanation: one bar per feature group.
    expect(page.locator("#explain-chart rect.bar").first).to_be_visible()
    assert page.locator("#explain-chart rect.bar").count() >= 3
    page.screenshot(path=str(shots / "dashboard-sku.png"), full_page=True)

    # What-if: a deep promotion redraws the forecast against its baseline.
    page.fill("#whatif input[name=depth]", "40")
    with page.expect_response(lambda r: r.url.endswith("/v1/forecast") and r.ok) as answer:
        page.click("#whatif button")
    body = answer.value.json()
    assert body["scenario"] is True
    expect(chart.locator("circle.pt.whatif")).to_have_count(HORIZON)
    expect(chart.locator("polyline.baseline")).to_have_attribute("data-n", str(HORIZON))
    expect(page.locator("#whatif-note")).to_contain_text("against a baseline of")
    days = body["forecasts"][0]["days"]
    changed = sum(d["mean"] for d in days) - sum(d["baseline_mean"] for d in days)
    assert changed != 0
    page.screenshot(path=str(shots / "dashboard-what-if.png"), full_page=True)


def test_totals_by_category_and_store_with_their_band(
    signed_in: tuple[str, Page], live: tuple[str, Served], shots: Path
) -> None:
    base, page = signed_in
    served = live[1]
    for level in ("category", "store"):
        with served.engine.connect() as conn:
            keys = conn.exec_driver_sql(
                f"select count(distinct {level}) from products where status != 'discontinued'"
            ).scalar()
        page.goto(f"{base}/dashboard/totals?level={level}")
        ready(page)
        cards = page.locator("section.total")
        expect(cards).to_have_count(int(keys or 0))
        for i in range(cards.count()):
            card = cards.nth(i)
            expect(card.locator("circle.pt.mean")).to_have_count(HORIZON)
            assert card.locator("polygon.band").get_attribute("data-n") == str(HORIZON)
            expect(card.locator(".period")).to_contain_text("P90")
        if level == "store":
            page.screenshot(path=str(shots / "dashboard-totals.png"), full_page=True)


def test_pages_answer_within_300_ms(signed_in: tuple[str, Page]) -> None:
    base, page = signed_in
    for path in ("", "/accuracy", "/sku?q=a", "/totals?level=store"):
        page.request.get(f"{base}/dashboard{path}")  # warm: first reads of the snapshot
        t0 = time.perf_counter()
        res = page.request.get(f"{base}/dashboard{path}")
        elapsed = time.perf_counter() - t0
        assert res.ok, path
        assert elapsed < 0.3, f"/dashboard{path} took {elapsed * 1000:.0f} ms"
