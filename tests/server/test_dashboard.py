"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the whole
service (`python -m supervisor`) with the test jobs.

Each test opens the page in a fresh browser context, collects every console error and uncaught
exception, saves a screenshot under its tmp_path, and fails on a blank page (the totals must be
visible) or on any console error. Set DASHBOARD_SCREENSHOT=path to also keep the populated
dashboard's screenshot there (deploy/dashboard.png in the README).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import Service, debian_tool, running, wait_for
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright
from playwright.sync_api import Request as BrowserRequest

# the first test may wait for apt-get to install Chromium
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "dashboard-key-1"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOTALS = ("waiting", "active", "delayed", "completed", "failed", "deadLettered")
SOON = 8_000  # ms: what "appears within a few seconds" means here


@dataclass
class Dashboard:
    """A dashboard page and what its console said."""

    page: Page
    context: BrowserContext
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    navigations: int = 0

    def watch(self) -> None:
        def console(message: Any) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text} ({message.location})")

        def navigated(frame: Any) -> None:
            if frame == self.page.main_frame:
                self.navigations += 1

        def sent(request: BrowserRequest) -> None:
            self.requests.append(f"{request.method} {request.url.removeprefix(self.base)}")

        self.page.on("console", console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on("framenavigated", navigated)
        self.page.on("request", sent)

    def wait_shown(self) -> None:
        """The totals are drawn and visible: the script ran and read /queue/stats."""
        self.page.wait_for_function(
            "document.querySelectorAll('#counts .count').length === 6 && "
            "[...document.querySelectorAll('#counts .count .n')].every(n => /^[0-9,.]+$/.test(n.textContent))",
            timeout=15_000,
        )
        for key in TOTALS:
            card = self.page.locator(f'#counts [data-key="{key}"]')
            assert card.is_visible(), f"the {key} total is not visible"
            box = card.bounding_box()
            assert box is not None and box["width"] > 40 and box["height"] > 20, box
        self.page.locator("#jobs").wait_for(state="visible")

    def total(self, key: str) -> int:
        text = self.page.locator(f'#counts [data-key="{key}"] .n').inner_text()
        return int(text.replace(",", "").replace(".", ""))

    def row(self, job_id: str) -> Any:
        return self.page.locator(f'#job-rows tr[data-id="{job_id}"]')

    def tab(self, name: str) -> None:
        self.page.click(f"#tab-{name}")
        self.page.wait_for_function(
            f"document.getElementById('tab-{name}').getAttribute('aria-selected') === 'true'"
        )

    def search(self, text: str) -> None:
        self.page.fill("#f-q", text)
        self.page.press("#f-q", "Enter")

    def shot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)

    def assert_clean(self) -> None:
        assert not self.errors, "the page logged errors:\n" + "\n".join(self.errors)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium (not a browser Playwright downloads), headless."""
    path = debian_tool("chromium", "chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with the test jobs and its three pools (default, worker1, worker2)."""
    with running(
        tmp_path_factory.mktemp("dash") / "d", JOB_MODULES="testjobs", CONSUMERS=1
    ) as service:
        yield service


@pytest.fixture
def dashboard(chromium: Browser, svc: Service, tmp_path: Path) -> Iterator[Dashboard]:
    context = chromium.new_context(viewport=VIEWPORT)
    base = f"http://127.0.0.1:{svc.port}"
    board = Dashboard(context.new_page(), context, base)
    board.watch()
    try:
        answer = board.page.goto(f"{base}/dashboard")
        assert answer is not None and answer.status == 200
        board.wait_shown()
        yield board
    finally:
        try:
            board.shot(tmp_path / "dashboard.png")
        finally:
            context.close()  # before the service stops: no event stream left open


def word() -> str:
    return "kumquat" + uuid.uuid4().hex[:8]


def dead_job(svc: Service, name: str, data: dict[str, Any]) -> str:
    job_id = svc.enqueue(name, data, attempts=1)
    svc.wait_status(job_id, "dead", 30)
    return job_id


def test_with_an_api_key_the_page_asks_for_the_key_once_and_a_reload_does_not_ask_again(
    chromium: Browser, tmp_path: Path
) -> None:
    service = Service(tmp_path / "d", API_KEY=KEY, JOB_MODULES="testjobs", CONSUMERS=1, POOLS="")
    service.http.headers["Authorization"] = f"Bearer {KEY}"
    context = chromium.new_context(viewport=VIEWPORT)
    try:
        service.start()
        base = f"http://127.0.0.1:{service.port}"
        page = context.new_page()
        first = page.goto(f"{base}/dashboard")
        assert first is not None and first.status == 401, "the dashboard should ask for the key"
        assert page.locator("input[name=key]").is_visible()
        page.screenshot(path=str(tmp_path / "sign-in.png"))

        board = Dashboard(page, context, base)
        board.watch()  # from here on: no console error
        page.fill("input[name=key]", KEY)
        with page.expect_navigation(url=f"{base}/dashboard") as shown:
            page.click("button[type=submit]")
        assert shown.value is not None and shown.value.status == 200
        board.wait_shown()
        assert page.locator("input[name=key]").count() == 0

        # the session works for the API calls and the event stream: a new job shows up
        job_id = service.enqueue("noop", {"signed": "in"})
        board.row(job_id).wait_for(timeout=SOON)

        again = page.reload()
        assert again is not None and again.status == 200, "a reload asked for the key again"
        board.wait_shown()
        assert page.locator("input[name=key]").count() == 0
        board.row(job_id).wait_for(timeout=SOON)
        other = context.new_page()
        admin = other.goto(f"{base}/admin")
        assert admin is not None and admin.status == 200
        assert other.locator("input[name=key]").count() == 0
        other.close()
        board.shot(tmp_path / "signed-in.png")
        board.assert_clean()

        # another browser (no cookie) is asked again; the API without the key answers 401
        stranger = chromium.new_context()
        try:
            asked = stranger.new_page().goto(f"{base}/dashboard")
            assert asked is not None and asked.status == 401
        finally:
            stranger.close()
        assert service.http.get("/jobs", headers={"Authorization": ""}).status_code == 401
    finally:
        context.close()
        service.stop()


def test_the_page_loads_with_totals_chart_and_every_consumer_and_no_console_error(
    svc: Service, dashboard: Dashboard, chromium: Browser, tmp_path: Path
) -> None:
    page = dashboard.page
    for pool in ("default", "worker1", "worker2"):
        page.locator("#workers tr td:nth-child(2)", has_text=pool).first.wait_for(timeout=SOON)
    assert page.locator("#workers tr").count() == 3  # one consumer in each pool
    page.locator("#chart svg").wait_for(timeout=SOON)
    assert "completed" in page.locator("#legend").inner_text()
    page.click("[data-minutes='1440']")  # the last day: 15-minute bars
    page.wait_for_function("document.getElementById('legend').textContent.includes('15 min')")
    tabs = page.locator("#tabs [role=tab]").all_inner_texts()
    assert tabs == [
        "all", "queued", "active", "delayed", "failed", "completed", "dead", "cancelled"
    ]  # fmt: skip
    page.locator("#live.on").wait_for(timeout=SOON)  # the event stream is open
    dashboard.assert_clean()

    # a phone in dark mode: nothing wider than the screen, dark colours, the totals shown
    phone = chromium.new_context(viewport=PHONE, color_scheme="dark", is_mobile=True)
    try:
        small = Dashboard(phone.new_page(), phone, dashboard.base)
        small.watch()
        small.page.goto(f"{dashboard.base}/dashboard")
        small.wait_shown()
        width = small.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px phone"
        background = small.page.evaluate(
            "getComputedStyle(document.documentElement).backgroundColor"
        )
        channels = [int(c) for c in background.removeprefix("rgb(").rstrip(")").split(",")[:3]]
        assert max(channels) < 80, f"not dark: {background}"
        small.shot(tmp_path / "phone-dark.png")
        small.assert_clean()
    finally:
        phone.close()


def test_a_job_enqueued_through_the_api_appears_within_seconds_without_a_reload(
    svc: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    dashboard.page.locator("#live.on").wait_for(timeout=SOON)
    navigations = dashboard.navigations
    job_id = svc.enqueue("sleeper", {"seconds": 1.5})
    row = dashboard.row(job_id)
    row.wait_for(timeout=SOON)
    dashboard.shot(tmp_path / "appeared.png")
    # and it changes as it runs, live: active, then completed
    dashboard.page.wait_for_function(
        f"document.querySelector('#job-rows tr[data-id=\"{job_id}\"]')?.dataset.status === 'completed'",
        timeout=15_000,
    )
    assert svc.job(job_id)["status"] == "completed"
    assert dashboard.navigations == navigations, "the page was reloaded"
    assert any(r.startswith("GET /events") for r in dashboard.requests), dashboard.requests
    dashboard.assert_clean()


def test_search_finds_a_failed_job_by_a_word_of_its_error_and_its_detail_opens_by_keyboard(
    svc: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    target = word()
    failing = dead_job(svc, "says_why", {"reversed": target[::-1]})
    other = dead_job(svc, "says_why", {"reversed": word()[::-1]})
    done = svc.enqueue("noop", {"note": target[::-1]})
    svc.wait_status(done, "completed")
    assert target not in str(svc.job(failing)["data"]), "the word must be in the error only"

    dashboard.search(target)
    row = dashboard.row(failing)
    row.wait_for(timeout=SOON)
    dashboard.page.wait_for_function(
        "document.querySelectorAll('#job-rows tr').length === 1", timeout=SOON
    )
    assert dashboard.row(other).count() == 0 and dashboard.row(done).count() == 0
    assert target in row.inner_text()

    # keyboard: focus the row, Enter opens the detail, Escape closes it and focus comes back
    row.focus()
    dashboard.page.keyboard.press("Enter")
    detail = dashboard.page.locator("#detail")
    detail.wait_for(state="visible")
    dashboard.page.locator("#d-error", has_text=target).wait_for(timeout=SOON)
    assert "RuntimeError" in dashboard.page.locator("#d-traceback").inner_text()
    assert "reversed" in dashboard.page.locator("#d-data").inner_text()
    tries = dashboard.page.locator("#d-tries tbody tr")
    tries.first.wait_for(timeout=SOON)
    assert tries.count() == 1 and target in tries.first.inner_text()  # its one try, failed
    dashboard.page.locator("#d-logs li", has_text="giving up on").wait_for(timeout=SOON)
    dashboard.page.screenshot(path=str(tmp_path / "detail.png"))
    dashboard.page.keyboard.press("Escape")
    detail.wait_for(state="hidden")
    assert dashboard.page.evaluate("document.activeElement.dataset.id") == failing
    dashboard.assert_clean()


def test_a_dlq_retry_clicked_in_the_page_runs_the_dead_job_again(
    svc: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    job_id = dead_job(svc, "fails_first_run", {"marker": str(tmp_path / "marker")})
    assert svc.job(job_id)["attempts"] == 1
    dashboard.tab("dead")
    dashboard.row(job_id).wait_for(timeout=SOON)
    dashboard.row(job_id).click()
    dashboard.page.locator("#d-retry").wait_for(timeout=SOON)
    dashboard.page.click("#d-retry")
    record = svc.wait_status(job_id, "completed", 30)
    assert "attempt" in record["result"], record  # it ran again, and this time it succeeded
    # the open detail follows without a reload: completed, its tries listed
    dashboard.page.locator("#d-status .badge", has_text="completed").wait_for(timeout=SOON)
    tries = record.get("tries")
    assert tries and tries[-1]["outcome"] == "completed", f"the tries of {job_id}: {tries}"
    dashboard.page.wait_for_function(
        f"document.querySelectorAll('#d-tries tbody tr').length === {len(tries)}", timeout=SOON
    )
    assert "completed" in dashboard.page.locator("#d-tries tbody tr").last.inner_text()
    dashboard.page.keyboard.press("Escape")
    # it leaves the dead tab without a reload
    dashboard.row(job_id).wait_for(state="detached", timeout=SOON)
    dashboard.assert_clean()


def test_retrying_every_dead_job_matching_the_filter_asks_for_confirmation_first(
    svc: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    tag = word()
    matching = [
        dead_job(svc, "fails_first_run", {"marker": str(tmp_path / f"m{i}"), "tag": tag})
        for i in range(2)
    ]
    unrelated = dead_job(svc, "says_why", {"reversed": word()[::-1]})
    dashboard.tab("dead")
    dashboard.search(tag)
    for job_id in matching:
        dashboard.row(job_id).wait_for(timeout=SOON)
    dialog = dashboard.page.locator("#confirm")

    dashboard.page.click("#bulk-retry")
    dialog.wait_for(state="visible")
    assert tag in dashboard.page.locator("#confirm-text").inner_text()
    dashboard.page.screenshot(path=str(tmp_path / "confirm.png"))
    dashboard.page.click("#confirm-cancel")
    dialog.wait_for(state="hidden")
    assert not [r for r in dashboard.requests if "retry-matching" in r], "retried unconfirmed"
    assert {svc.job(j)["status"] for j in matching} == {"dead"}

    dashboard.page.click("#bulk-retry")
    dialog.wait_for(state="visible")
    dashboard.page.click("#confirm-ok")
    dialog.wait_for(state="hidden")
    for job_id in matching:
        svc.wait_status(job_id, "completed", 30)
    dashboard.page.locator("#toast", has_text="Retried 2 dead jobs").wait_for(timeout=SOON)
    assert svc.job(unrelated)["status"] == "dead", "a job outside the filter was retried"
    for job_id in matching:
        dashboard.row(job_id).wait_for(state="detached", timeout=SOON)
    dashboard.assert_clean()


def test_a_delayed_job_cancelled_from_its_detail_is_cancelled(
    svc: Service, dashboard: Dashboard
) -> None:
    job_id = svc.enqueue("noop", {"later": True}, delay=600)
    dashboard.tab("delayed")
    dashboard.row(job_id).wait_for(timeout=SOON)
    dashboard.row(job_id).click()
    dashboard.page.click("#d-cancel")
    dashboard.page.locator("#confirm").wait_for(state="visible")
    dashboard.page.click("#confirm-ok")
    wait_for(lambda: svc.job(job_id)["status"] == "cancelled", 10, what="the cancel")
    dashboard.page.locator("#d-status .badge", has_text="cancelled").wait_for(timeout=SOON)
    assert dashboard.page.locator("#d-cancel").count() == 0
    dashboard.assert_clean()


def test_a_pool_paused_in_the_page_starts_nothing_until_resumed_there(
    svc: Service, dashboard: Dashboard
) -> None:
    pause = dashboard.page.locator('tr[data-pool="worker1"] button[data-flow="pause"]')
    pause.click()
    wait_for(lambda: svc.http.get("/pools/worker1/limits").json()["paused"], 10, what="paused")
    job_id = svc.enqueue("noop", {}, queue="worker1")
    row = dashboard.page.locator('tr[data-pool="worker1"]')
    row.locator(".badge", has_text="paused").wait_for(timeout=SOON)
    assert svc.job(job_id)["waitingFor"] == "the pool is paused"
    row.locator('button[data-flow="resume"]').click()
    svc.wait_status(job_id, "completed", 10)
    row.locator(".badge", has_text="running").wait_for(timeout=SOON)
    dashboard.assert_clean()


def test_a_scheduler_shows_its_next_run_and_is_paused_and_resumed_in_the_page(
    svc: Service, dashboard: Dashboard
) -> None:
    body = {"jobName": "noop", "cron": "0 9 * * 1", "tz": "Europe/Paris"}
    assert svc.http.put("/schedulers/weekly", json=body).status_code == 200
    try:
        row = dashboard.page.locator('tr[data-scheduler="weekly"]')
        row.wait_for(timeout=SOON + 5000)  # the panel reloads every 5 s
        assert "0 9 * * 1 (Europe/Paris)" in row.inner_text()
        assert row.locator("time").count() == 1  # the next run
        row.locator('button[data-scheduler-act="pause"]').click()
        wait_for(lambda: svc.http.get("/schedulers/weekly").json()["paused"], 10, what="paused")
        row.locator(".badge", has_text="paused").wait_for(timeout=SOON)
        row.locator('button[data-scheduler-act="resume"]').click()
        row.locator(".badge", has_text="running").wait_for(timeout=SOON)
        assert svc.http.get("/schedulers/weekly").json()["paused"] is False
        dashboard.assert_clean()
    finally:
        svc.http.delete("/schedulers/weekly")


def test_a_populated_dashboard_shows_every_pool_and_each_kind_of_job(
    svc: Service, dashboard: Dashboard, tmp_path: Path
) -> None:
    """Also the README's screenshot (DASHBOARD_SCREENSHOT=deploy/dashboard.png)."""
    long_running: list[str] = []
    for numbers in ([1, 2, 3], [4, 5, 6, 7], [10, 20], [3, 1, 4, 1, 5]):
        svc.enqueue("calculation", {"operation": "sum", "numbers": numbers})
    for i in range(3):
        svc.enqueue("worker1", {"duration": 0.2, "batch": i})
        svc.enqueue("worker2", {"duration": 0.3, "batch": i})
    for text in ("card declined", "mailbox full"):
        dead_job(svc, "message", {"message": text, "shouldFail": True})
    svc.enqueue("flaky", {"succeed_on": 9}, backoff={"type": "fixed", "delay": 600})
    long_running.append(svc.enqueue("videoProcessing", {"videoId": "abc123", "duration": 120}))
    long_running.append(svc.enqueue("sleeper", {"seconds": 120}, queue="worker1"))
    long_running.append(svc.enqueue("noop", {"report": "nightly"}, delay=3600))
    try:
        page = dashboard.page
        wait_for(lambda: svc.job(long_running[0]).get("progress"), 20, what="the video's progress")
        page.wait_for_function(
            "document.querySelectorAll('#job-rows tr[data-status=failed]').length > 0 && "
            "document.querySelectorAll('#job-rows tr[data-status=active]').length > 0",
            timeout=15_000,
        )
        page.evaluate("window.scrollTo(0, 0)")
        assert dashboard.total("completed") > 0 and dashboard.total("deadLettered") > 0
        assert page.locator("#chart svg rect.s-completed").count() > 0
        shot = tmp_path / "populated.png"
        page.screenshot(path=str(shot))  # the viewport: 1280x800
        if target := os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, target)
        dashboard.assert_clean()
    finally:
        for job_id in long_running:
            svc.http.delete(f"/jobs/{job_id}")
