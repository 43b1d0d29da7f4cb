"""Deduplication through the HTTP API: each mode under 40 concurrent enqueues spread over two
HTTP workers makes one job, and every answer names it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from helpers import Service, running

BURST = 40


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running(tmp_path_factory.mktemp("dedupe") / "d", JOB_MODULES="testjobs") as service:
        yield service


def burst(svc: Service, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Each body on its own connection, all at once: the two HTTP workers share them."""

    def send(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=str(svc.http.base_url), timeout=10) as client:
            return client.post("/enqueue-task", json=body)

    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(send, bodies))


def one_job(answers: list[httpx.Response]) -> str:
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * (BURST - 1) + [202], [a.text for a in answers if a.status_code >= 300]
    assert all(a.json().get("deduplicated") for a in answers if a.status_code == 200)
    ids = {a.json()["jobId"] for a in answers}
    assert len(ids) == 1, ids
    return ids.pop()


def test_simple_makes_one_job_while_it_runs_then_a_new_one(svc: Service) -> None:
    dedupe = {"key": "report-42", "ttl": 600, "mode": "simple"}
    body = {"jobName": "sleeper", "data": {"seconds": 1}, "options": {"dedupe": dedupe}}
    job = one_job(burst(svc, [body] * BURST))
    svc.wait_status(job, "completed", 20)
    after = svc.http.post("/enqueue-task", json=body)
    assert after.status_code == 202 and after.json()["jobId"] != job


def test_throttle_makes_one_job_per_ttl_even_once_it_finished(svc: Service) -> None:
    dedupe = {"key": "digest", "ttl": 600, "mode": "throttle"}
    body = {"jobName": "noop", "options": {"dedupe": dedupe}}
    job = one_job(burst(svc, [body] * BURST))
    svc.wait_status(job, "completed", 10)
    again = svc.http.post("/enqueue-task", json=body)
    assert again.status_code == 200 and again.json()["jobId"] == job


def test_debounce_runs_one_job_with_the_newest_data_ttl_after_the_last_enqueue(
    svc: Service,
) -> None:
    dedupe = {"key": "search-index", "ttl": 2, "mode": "debounce"}
    bodies = [
        {"jobName": "noop", "data": {"v": i}, "options": {"dedupe": dedupe}} for i in range(BURST)
    ]
    job = one_job(burst(svc, bodies))
    sent_at = time.time()
    last = svc.http.post(
        "/enqueue-task", json={**bodies[0], "data": {"v": "last"}}
    )  # while it still waits
    assert last.status_code == 200 and last.json()["jobId"] == job
    assert last.json()["jobData"] == {"v": "last"}
    done = svc.wait_status(job, "completed", 20)
    assert done["data"] == {"v": "last"}
    started = datetime.strptime(done["startedAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    # not before ttl after the last enqueue (sent before the script ran: 0.2 s slack)
    assert started.timestamp() >= sent_at + 2 - 0.2, (started, sent_at)


def test_a_bad_dedupe_option_is_422_naming_it(svc: Service) -> None:
    for dedupe, word in (
        ({"key": "k"}, "ttl"),
        ({"key": "", "ttl": 1}, "key"),
        ({"key": "k", "ttl": 1, "mode": "sometimes"}, "mode"),
        ({"key": "k", "ttl": 0}, "ttl"),
    ):
        r = svc.http.post("/enqueue-task", json={"jobName": "noop", "options": {"dedupe": dedupe}})
        assert r.status_code == 422 and word in r.json()["detail"], r.text
