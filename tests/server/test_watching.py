"""Watching a running service through its API: the job listing, a job's tries and log lines,
per-minute history, the event stream and bulk dead-letter actions."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Service, wait_for


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(
        tmp_path_factory.mktemp("watch") / "d", JOB_MODULES="testjobs", ACCESS_LOG="1"
    )
    try:
        yield service.start()
    finally:
        service.stop()


def listed(svc: Service, **params: Any) -> list[dict[str, Any]]:
    """Every page of GET /jobs with these filters."""
    jobs: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = svc.http.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        jobs += r.json()["jobs"]
        cursor = r.json()["cursor"]
        if cursor is None:
            return jobs


def test_the_listing_finds_jobs_by_status_name_and_a_word_of_their_error(svc: Service) -> None:
    done = [svc.enqueue("noop", {"n": i}) for i in range(5)]
    failed = svc.enqueue("says_why", {"reversed": "tnahpele"})
    svc.wait_status(failed, "dead")
    for job_id in done:
        svc.wait_status(job_id, "completed")
    assert [j["id"] for j in listed(svc, q="ELEPHANT")] == [failed]
    assert failed in {j["id"] for j in listed(svc, status="dead")}
    names = {j["jobName"] for j in listed(svc, name="noop")}
    assert names == {"noop"}
    pages = listed(svc, name="noop", limit=2)
    assert [j["id"] for j in pages][:5] == done[::-1]  # newest first, none twice
    assert svc.http.get("/jobs", params={"q": failed}).json()["jobs"][0]["id"] == failed


@pytest.mark.parametrize(
    "params",
    [{"status": "running"}, {"limit": "0"}, {"limit": "x"}, {"cursor": "abc"}, {"q": "x" * 201}],
)
def test_a_bad_listing_filter_is_a_422_naming_it(svc: Service, params: dict[str, str]) -> None:
    r = svc.http.get("/jobs", params=params)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert next(iter(params)) in r.json()["detail"]


def test_a_job_shows_every_try_and_its_own_log_lines(svc: Service) -> None:
    job_id = svc.enqueue("says_why", {"reversed": "olleh"})
    record = svc.wait_status(job_id, "dead")
    (only,) = record["tries"]
    assert only["outcome"] == "failed" and only["error"] == "RuntimeError: gave up: hello"
    assert only["consumer"] == record["assignedWorker"] and only["attempt"] == 1
    assert "RuntimeError" in svc.http.get(f"/dlq/{job_id}").json()["traceback"]
    logs = svc.http.get(f"/jobs/{job_id}/logs").json()
    assert [line["text"] for line in logs["lines"]] == ["step 1 of 1: giving up on 'olleh'"]
    assert svc.http.get("/jobs/nope/logs").status_code == 404


def test_history_counts_the_finished_tries_of_the_last_minutes(svc: Service) -> None:
    before = svc.http.get("/queue/history", params={"minutes": 2}).json()
    job_id = svc.enqueue("noop")
    svc.wait_status(job_id, "completed")
    after = svc.http.get("/queue/history", params={"minutes": 2}).json()
    assert after["step"] == 60 and len(after["total"]["completed"]) == 2
    assert sum(after["total"]["completed"]) >= sum(before["total"]["completed"]) + 1
    assert set(after["pools"]) >= {"default"}
    assert svc.http.get("/queue/history", params={"minutes": 1441}).status_code == 422


class Events:
    """A client of GET /events in a thread: the events it got, as they arrive."""

    def __init__(self, svc: Service, headers: dict[str, str] | None = None, **params: str):
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.client = httpx.Client(base_url=svc.http.base_url, timeout=httpx.Timeout(5, read=60))
        self.opened = threading.Event()  # from then on it gets every event
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self.read, args=(params, headers or {}), daemon=True)
        self.thread.start()

    def read(self, params: dict[str, str], headers: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", "/events", params=params, headers=headers) as r:
                ident = ""
                for line in r.iter_lines():
                    self.opened.set()
                    if line.startswith("id: "):
                        ident = line[4:]
                    elif line.startswith("data: "):
                        self.got.append((ident, json.loads(line[6:])))
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def types(self, job_id: str) -> list[str]:
        return [e["type"] for _, e in self.got if e["id"] == job_id]

    def close(self) -> None:
        self.client.close()


def test_a_client_sees_its_jobs_events_live_and_resumes_after_a_reconnect(svc: Service) -> None:
    live = Events(svc, job="")
    try:
        assert live.opened.wait(10)
        job_id = svc.enqueue("noop")
        svc.wait_status(job_id, "completed")
        wait_for(lambda: "completed" in live.types(job_id), 10, 0.05, "the completed event")
        assert live.types(job_id) == ["enqueued", "started", "completed"]
        first_id = next(i for i, e in live.got if e["id"] == job_id)
    finally:
        live.close()
    resumed = Events(svc, {"Last-Event-ID": first_id}, job=job_id)
    try:
        wait_for(lambda: len(resumed.types(job_id)) >= 2, 10, 0.05, "the missed events")
        assert resumed.types(job_id) == ["started", "completed"]  # after the one it had seen
    finally:
        resumed.close()


def test_bulk_retry_and_delete_act_on_the_dead_jobs_matching_the_filter(svc: Service) -> None:
    keep = svc.enqueue("says_why", {"reversed": "peek"})
    retry = [svc.enqueue("says_why", {"reversed": "kcab"}) for _ in range(3)]
    for job_id in [keep, *retry]:
        svc.wait_status(job_id, "dead")
    r = svc.http.post("/dlq/retry-matching", json={"q": "gave up: back"})
    assert r.status_code == 200 and r.json() == {"retried": 3, "more": False}, r.text
    for job_id in retry:  # each ran again (and failed again)
        wait_for(lambda j=job_id: len(svc.job(j)["tries"]) == 2, 30, 0.1, "a second try")
    r = svc.http.post("/dlq/delete-matching", json={"q": "gave up: keep"})
    assert r.json() == {"deleted": 1, "more": False}
    assert svc.http.get(f"/jobs/{keep}").status_code == 404
    assert svc.http.post("/dlq/retry-matching", json={"status": "x"}).status_code == 422
    assert svc.http.post("/dlq/retry-matching", content=b"{}").status_code == 415


def test_open_event_streams_end_when_the_service_stops(data_dir: Path) -> None:
    svc = Service(data_dir, GRACEFUL_TIMEOUT=90).start()
    streams = [Events(svc) for _ in range(3)]
    try:
        for s in streams:
            assert s.opened.wait(10)
        svc.signal(signal.SIGTERM)
        # well before the graceful time-out: the streams did not hold the drain up
        assert svc.wait_exit(45) == 0
        for s in streams:
            assert s.ended.wait(5)
    finally:
        for s in streams:
            s.close()
        svc.stop()


def test_a_request_id_and_trace_context_follow_the_job_into_its_try_and_logs(
    svc: Service,
) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = svc.http.post(
        "/enqueue-task",
        json={"jobName": "traced", "data": {}},
        headers={"X-Request-ID": "req-42.a", "traceparent": parent},
    )
    assert r.status_code == 202 and r.headers["x-request-id"] == "req-42.a"
    job_id = r.json()["jobId"]
    record = svc.wait_status(job_id, "completed")
    assert record["requestId"] == "req-42.a" and record["traceparent"] == parent
    seen = record["result"]
    assert seen["requestId"] == "req-42.a"
    version, trace, span, flags = seen["traceparent"].split("-")
    assert (version, trace, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert span != "00f067aa0ba902b7"  # a span of its own, in the same trace
    # a bad id or trace context is replaced, never stored as sent
    r = svc.http.post(
        "/enqueue-task",
        json={"jobName": "says_why", "data": {"reversed": "x"}},
        headers={"X-Request-ID": "no spaces\tplease", "traceparent": "00-zz"},
    )
    generated = r.headers["x-request-id"]
    assert len(generated) == 32 and generated != "no spaces\tplease"
    failed = svc.wait_status(r.json()["jobId"], "dead")
    assert failed["requestId"] == generated and failed["traceparent"] is None

    def consumer_logged_it() -> bool:
        for line in svc.log_path.read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("jobId") == failed["id"] and entry.get("role", "").startswith("consumer"):
                return entry.get("requestId") == generated and bool(entry.get("consumerId"))
        return False

    wait_for(consumer_logged_it, 10, 0.1, "a consumer's log line naming the request")


def test_every_log_line_is_json_and_the_access_log_names_the_request(svc: Service) -> None:
    r = svc.http.get("/queue/stats", headers={"X-Request-ID": "access-7"})
    assert r.status_code == 200

    def lines() -> list[dict[str, Any]]:
        text = svc.log_path.read_text().splitlines()
        return [json.loads(line) for line in text if line.strip()]  # a non-JSON line fails

    def accessed() -> dict[str, Any] | None:
        found = [e for e in lines() if e.get("requestId") == "access-7"]
        return found[0] if found else None

    wait_for(lambda: accessed() is not None, 10, 0.1, "the access log line of the request")
    entry = accessed()
    assert entry is not None and entry["logger"] == "uvicorn.access"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/queue/stats", 200)
    assert entry["role"] == "http worker" and {"time", "level", "pid"} <= entry.keys()
    assert any(e["logger"] == "gunicorn.error" and e["role"] == "master" for e in lines())
