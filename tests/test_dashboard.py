"""The dashboard in a real headless Chromium (Debian's), driven by Playwright, against a real
`swf-pool serve` process. Skipped, with the reason, only when no browser can be started."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swf_pool import Client, Pool, Status

from .helpers import wait_until
from .test_api import KEY, Server, start, stop
from .test_pool import APP

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("SWF_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "dashboard-overview.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("browser tests need playwright (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"]
            )
        except Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield launched
        launched.close()


@pytest.fixture
def server(dsn: str) -> Iterator[Server]:
    running = start(dsn, "--api-key", KEY)
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def log_in(page: Any) -> None:
    page.goto("/")
    assert page.url.endswith("/login?next=%2F")  # the key is required
    page.fill("input[name=key]", "wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "wrong API key"
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Overview')")


def test_find_why_a_run_failed_and_retry_it(page: Any, client: Client, tmp_path: Path) -> None:
    client.submit_many({"type": "t.echo", "payload": i} for i in range(5))
    failed = client.submit("t.nasty_error", {"pad": 10}, max_attempts=1).id
    Pool(client, APP, executor="inline").drain()
    client.submit("t.later")
    client.schedule("report.v1", cron="0 9 * * 1", timezone="Europe/Berlin")
    log_in(page)

    # the overview: depth per type, finished per minute, and it refreshes by itself
    row = page.locator("tr[data-type='t.later']")
    assert row.locator("td").nth(1).inner_text() == "1"
    assert "5 succeeded" in page.locator("svg.chart").get_attribute("aria-label")
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    if os.environ.get("SWF_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "overview.png", SCREENSHOT)
    client.submit("t.later")
    page.wait_for_function("document.getElementById('total-pending').textContent.trim() === '2'")

    # runs: filter the failed ones, open it, read why, retry it
    page.click("nav >> text=Runs")
    page.select_option("select[name=status]", "failed")
    page.click("text=Filter")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-id") == failed
    rows.first.locator("a").click()
    assert (
        page.locator("#last-error")
        .inner_text()
        .startswith("ValueError: nul and a lone surrogate ? xxxxxxxxxx")
    )
    timeline = page.locator("ol.timeline .event").all_inner_texts()
    assert timeline == ["created", "leased", "started", "failed"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Retry')")
    assert page.locator("[role=status]").inner_text() == f"requeued {failed}"
    assert page.locator("#run-status").inner_text() == "pending"
    run = client.get(failed)
    assert run is not None and (run.status, run.attempt, run.max_attempts) == (
        Status.PENDING,
        1,
        2,
    )


def test_cancel_a_run_and_pause_a_schedule(page: Any, client: Client) -> None:
    run_id = client.submit("t.later", {"why": "to be cancelled"}).id
    client.schedule("report.v1", cron="0 9 * * 1", timezone="America/New_York")
    log_in(page)
    page.goto("/runs?type=t.later")
    page.click(f"a:text('{run_id}')")
    # a dismissed confirmation changes nothing
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("button:text('Cancel')")
    assert page.locator("#run-status").inner_text() == "pending"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Cancel')")
    page.wait_for_selector("[role=status]")
    assert page.locator("#run-status").inner_text() == "cancelled"
    assert client.get(run_id).status is Status.CANCELLED  # type: ignore[union-attr]

    page.click("nav >> text=Schedules")
    fires = page.locator("table.schedules tbody tr td").nth(4).inner_text()
    assert "EST" in fires and "UTC" in fires  # in its zone and in UTC
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Pause')")
    assert page.locator("[role=status]").inner_text().startswith("paused")
    assert [s.enabled for s in client.schedules.list()] == [False]
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Resume')")
    wait_until(lambda: [s.enabled for s in client.schedules.list()] == [True])


def test_retry_every_failed_run_of_a_type(page: Any, client: Client) -> None:
    ids = [client.submit("t.nasty_error", {"pad": 1}, max_attempts=1).id for _ in range(3)]
    Pool(client, APP, executor="inline").drain()
    log_in(page)
    page.goto("/runs?status=failed&type=t.nasty_error")
    assert page.locator("table.runs tbody tr").count() == 3
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:text('Retry all failed t.nasty_error')")
    assert page.locator("[role=status]").inner_text() == "requeued 3 failed t.nasty_error run(s)"
    assert {client.get(i).status for i in ids} == {Status.PENDING}  # type: ignore[union-attr]


@pytest.mark.parametrize("target", ["//evil.example", "/\\evil.example", "https://evil.example"])
def test_login_never_redirects_off_site(server: Server, target: str) -> None:
    body = urllib.parse.urlencode({"key": KEY, "next": target}).encode()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(server.base + "/login", data=body, timeout=10)
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["location"] == "/"
        exc.close()
