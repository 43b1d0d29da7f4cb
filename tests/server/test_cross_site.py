"""In a real browser: a page of another origin cannot act for a signed-in dashboard user.

Debian's Chromium (installed with apt-get when missing) driven by Playwright's sync API, against
the whole service with API_KEY set. The user signs in to the dashboard; then a page served from
another loopback port (same site as the service: the SameSite=Strict cookie is sent) and from
`localhost` (another site: it is not) submits forms and runs `fetch` at the service. No job may be
enqueued and no answer read, while the dashboard's own page still enqueues and reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from string import Template
from typing import Any

import pytest
from helpers import Service, debian_tool, running
from playwright.sync_api import BrowserContext, Page, sync_playwright
from playwright.sync_api import Request as BrowserRequest
from playwright.sync_api import Response as BrowserResponse
from playwright.sync_api import TimeoutError as PlaywrightTimeout

# the first test may wait for apt-get to install Chromium
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
COUNTS = ("waiting", "active", "delayed", "completed", "failed", "deadLettered")
# the machine's network is closed: nothing in the background, no GPU, a fresh profile
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Two forms post into hidden frames as soon as the page has loaded: one text/plain whose single
# field makes the body `{"jobName":"noop",...,"data":{"x":"="}}` (valid JSON), one urlencoded.
# Then four fetches: JSON with credentials (needs a CORS preflight), text/plain in no-cors mode
# (sent, answer opaque), and a credentialed GET of the stats in both modes. Every outcome lands
# in window.results.
ATTACK_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>a page of another origin</title></head><body>
<iframe name="sink-plain" style="display:none"></iframe>
<iframe name="sink-urlencoded" style="display:none"></iframe>
<form id="plain" method="post" enctype="text/plain" target="sink-plain" action="$svc/enqueue-task">
<input type="hidden" name='{"jobName":"noop","options":{"jobId":"$tag-form-plain"},"data":{"x":"' value='"}}'>
</form>
<form id="urlencoded" method="post" target="sink-urlencoded" action="$svc/enqueue-task">
<input type="hidden" name='{"jobName":"noop","options":{"jobId":"$tag-form-urlencoded"},"data":{"x":"' value='"}}'>
</form>
<script>
window.results = {fetches: {}, frames: {}};
async function attempt(name, url, init) {
  try {
    const r = await fetch(url, init);
    let body = null;
    try { body = await r.text(); } catch (e) { body = null; }
    window.results.fetches[name] = {type: r.type, status: r.status, body: body, error: null};
  } catch (e) {
    window.results.fetches[name] = {type: null, status: null, body: null,
                                    error: e.name + ": " + e.message};
  }
}
window.addEventListener("load", () => {
  for (const frame of document.querySelectorAll("iframe")) {
    frame.addEventListener("load", () => { window.results.frames[frame.name] = true; });
  }
  document.getElementById("plain").submit();
  document.getElementById("urlencoded").submit();
  attempt("cors-json-enqueue", "$svc/enqueue-task", {
    method: "POST", credentials: "include", headers: {"content-type": "application/json"},
    body: JSON.stringify({jobName: "noop", options: {jobId: "$tag-fetch-json"}})});
  attempt("no-cors-text-enqueue", "$svc/enqueue-task", {
    method: "POST", mode: "no-cors", credentials: "include",
    headers: {"content-type": "text/plain"},
    body: JSON.stringify({jobName: "noop", options: {jobId: "$tag-fetch-no-cors"}})});
  attempt("cors-stats", "$svc/queue/stats", {credentials: "include"});
  attempt("no-cors-stats", "$svc/queue/stats", {mode: "no-cors", credentials: "include"});
});
</script></body></html>
""")
FETCHES = ("cors-json-enqueue", "no-cors-text-enqueue", "cors-stats", "no-cors-stats")
FRAMES = ("sink-plain", "sink-urlencoded")
ATTACK_JOBS = ("form-plain", "form-urlencoded", "fetch-json", "fetch-no-cors")


@dataclass
class Attacker:
    """A plain web server on another loopback port; remembers the Cookie headers it saw."""

    pages: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    port: int = 0


def serve_attacker() -> tuple[Attacker, ThreadingHTTPServer, threading.Thread]:
    attacker = Attacker()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if cookie := self.headers.get("cookie"):
                attacker.cookies.append(cookie)
            page = attacker.pages.get(self.path.split("?")[0])
            body = (page or "not here").encode()
            self.send_response(200 if page else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    attacker.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return attacker, server, thread


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("xsite") / "d", API_KEY=KEY) as service:
        yield service


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    attacker, server, thread = serve_attacker()
    try:
        yield attacker
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's Chromium (not a browser Playwright downloads), headless, in a fresh profile."""
    chromium = debian_tool("chromium", "chromium")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def dashboard(svc: Service, browser: BrowserContext) -> Page:
    """The dashboard, signed in through its own form in the browser."""
    base = f"http://127.0.0.1:{svc.port}"
    page = browser.new_page()
    first = page.goto(f"{base}/dashboard")
    assert first is not None and first.status == 401, "the dashboard should ask for the key"
    page.fill("input[name=key]", KEY)
    with page.expect_navigation(url=f"{base}/dashboard") as shown:
        page.click("button[type=submit]")
    assert shown.value is not None and shown.value.status == 200
    # the dashboard, not the sign-in form again: its script has read the counts
    page.wait_for_function("document.getElementById('counts')?.children.length > 0")
    assert page.locator("input[name=key]").count() == 0
    assert browser.cookies(base), "signing in set no cookie for 127.0.0.1"
    return page


def job_count(svc: Service) -> int:
    r = svc.http.get("/queue/stats", headers=AUTH)
    assert r.status_code == 200, r.text
    stats = r.json()
    return sum(int(stats[name]) for name in COUNTS)


def run_until(page: Page, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Let the browser's events flow until `done()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        page.wait_for_timeout(50)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost"], ids=["same-site-other-port", "cross-site-localhost"]
)
def test_a_page_of_another_origin_neither_enqueues_nor_reads_with_the_dashboard_cookie(
    svc: Service, attacker: Attacker, browser: BrowserContext, dashboard: Page, host: str
) -> None:
    base = f"http://127.0.0.1:{svc.port}"
    tag = f"xsite-{host.replace('.', '-')}"
    attacker.pages[f"/{tag}"] = ATTACK_PAGE.substitute(svc=base, tag=tag)
    attacker.cookies.clear()
    before = job_count(svc)

    page = browser.new_page()
    sent: dict[BrowserRequest, str | None] = {}  # every request to the service: its outcome
    answers: list[str] = []

    def started(request: BrowserRequest) -> None:
        if request.url.startswith(base):
            sent[request] = None

    def finished(response: BrowserResponse) -> None:
        if response.url.startswith(base):
            answers.append(f"{response.request.method} {response.url} -> {response.status}")

    def settled(request: BrowserRequest, how: str) -> None:
        if request.url.startswith(base):
            sent[request] = how

    page.on("request", started)
    page.on("response", finished)
    page.on("requestfinished", lambda r: settled(r, "finished"))
    page.on("requestfailed", lambda r: settled(r, f"failed: {r.failure}"))
    try:
        page.goto(f"http://{host}:{attacker.port}/{tag}")
        page.wait_for_function(
            f"Object.keys(window.results.fetches).length === {len(FETCHES)}", timeout=15_000
        )
        try:  # a frame's load event means its form's answer has arrived
            page.wait_for_function(
                f"Object.keys(window.results.frames).length === {len(FRAMES)}", timeout=5_000
            )
        except PlaywrightTimeout:
            pass  # then the requests themselves, below, say when they are over
        form_posts = [r for r in sent if r.method == "POST" and r.is_navigation_request()]
        assert len(form_posts) == len(FRAMES), f"the forms were not submitted: {list(sent)}"
        run_until(page, lambda: all(sent.values()), 10, "the requests to the service to end")
        results: dict[str, Any] = page.evaluate("window.results")
    finally:
        page.close()

    if host == "127.0.0.1":  # same site: the browser sends the dashboard's cookie along
        assert attacker.cookies, "the browser did not send the dashboard cookie on its own site"

    enqueued = {
        job: r.status_code
        for job in ATTACK_JOBS
        if (r := svc.http.get(f"/jobs/{tag}-{job}", headers=AUTH)).status_code != 404
    }
    assert not enqueued, f"jobs enqueued from {host}:{attacker.port}: {enqueued}; {answers}"
    assert job_count(svc) == before, f"the service holds new jobs; {answers}"

    for name in FETCHES:
        got = results["fetches"][name]
        blocked = got["error"] is not None and got["error"].startswith("TypeError")
        opaque = got["type"] == "opaque" and got["status"] == 0 and not got["body"]
        assert blocked or opaque, f"{name} from {host} read an answer: {got}"


def test_the_dashboard_page_itself_still_enqueues_and_reads(svc: Service, dashboard: Page) -> None:
    answer = dashboard.evaluate(
        """async () => {
          const r = await fetch('/enqueue-task', {method: 'POST',
            headers: {'content-type': 'application/json'},
            body: JSON.stringify({jobName: 'noop', options: {jobId: 'same-origin-1'}})});
          const stats = await fetch('/queue/stats');
          return {status: r.status, body: await r.json(),
                  statsStatus: stats.status, stats: await stats.json()};
        }"""
    )
    assert answer["status"] == 202, answer
    assert answer["body"]["jobId"] == "same-origin-1"
    assert answer["statsStatus"] == 200 and "waiting" in answer["stats"], answer
    job = svc.http.get("/jobs/same-origin-1", headers=AUTH)
    assert job.status_code == 200, job.text
