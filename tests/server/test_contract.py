"""The HTTP contract, against one running service with real consumers and a real store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import Service, wait_for

FAST = {"backoff": {"type": "fixed", "delay": 0.1}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    data = tmp_path_factory.mktemp("contract") / "d"
    files = data.parent / "files"
    files.mkdir()
    (files / "hello.txt").write_text("one\ntwo\n")
    (files.parent / "secret.txt").write_text("secret\n")
    (files / "escape").symlink_to(files.parent / "secret.txt")
    service = Service(data, JOB_MODULES="testjobs", FILES_DIR=files, DLQ_MAX=5)
    try:
        yield service.start()
    finally:
        service.stop()


def post(svc: Service, path: str, body: Any) -> httpx.Response:
    return svc.http.post(path, json=body)


# enqueue and read


def test_enqueue_answers_202_with_location_and_the_contract_fields(svc: Service) -> None:
    r = post(svc, "/enqueue-task", {"jobName": "noop", "data": {"n": 1}})
    assert r.status_code == 202
    body = r.json()
    assert r.headers["location"] == f"/jobs/{body['jobId']}"
    assert body["message"] == "Task enqueued successfully"
    assert body["jobName"] == "noop" and body["jobData"] == {"n": 1}
    assert body["status"] == "queued" and body["assignedWorker"].startswith("test-default-")


def test_job_record_has_every_field_and_iso_times(svc: Service) -> None:
    job = svc.enqueue("calculation", {"operation": "stats", "numbers": [2, 4, 6]})
    record = svc.wait_status(job, "completed")
    for field in ("id", "jobName", "status", "data", "result", "error", "attempts", "assignedWorker",
                  "pool", "progress", "createdAt", "startedAt", "completedAt"):  # fmt: skip
        assert field in record
    assert record["result"]["sum"] == 12 and record["result"]["product"] == 48
    assert record["result"]["average"] == 4 and record["result"]["min"] == 2
    assert record["attempts"] == 1 and record["pool"] == "default"
    assert record["createdAt"].endswith("Z") and len(record["createdAt"]) == 24
    assert record["createdAt"] <= record["startedAt"] <= record["completedAt"]


def test_unknown_job_id_is_404(svc: Service) -> None:
    r = svc.http.get("/jobs/nope")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_same_job_id_is_a_duplicate_and_creates_nothing(svc: Service) -> None:
    body = {"jobName": "sleeper", "data": {"seconds": 0.5}, "options": {"jobId": "idem-1"}}
    first = post(svc, "/enqueue-task", body)
    second = post(svc, "/enqueue-task", body)
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["duplicate"] is True and second.json()["jobId"] == "idem-1"
    svc.wait_status("idem-1", "completed")
    assert svc.job("idem-1")["attempts"] == 1


def test_racing_duplicates_on_different_workers_make_one_job(svc: Service) -> None:
    body = {"jobName": "noop", "options": {"jobId": "race-1"}}
    codes: list[int] = []

    def hit() -> None:
        with httpx.Client(base_url=str(svc.http.base_url)) as c:
            codes.append(c.post("/enqueue-task", json=body).status_code)

    threads = [threading.Thread(target=hit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 15 + [202]


def test_a_bulk_enqueue_answers_each_job_in_order_and_a_bad_one_fails_alone(
    svc: Service,
) -> None:
    existing = svc.enqueue("noop", {}, jobId="bulk-existing")
    jobs = [
        {"jobName": "noop", "data": {"n": 1}},
        {"jobName": "no-such-job"},
        {"jobName": "noop", "options": {"jobId": existing}},
        "not an object",
        {"jobName": "noop", "options": {"delay": 3600}},
        {"jobName": "noop", "options": {"queue": "no-such-pool"}},
        {"jobName": "calculation", "data": {"operation": "sum", "numbers": [1, 2]}},
    ]
    r = post(svc, "/enqueue-tasks", {"jobs": jobs})
    assert r.status_code == 207, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [202, 422, 200, 422, 202, 422, 202]
    assert "jobs[1].jobName" in results[1]["detail"] and results[1]["error"] == "validation_error"
    assert "jobs[3]" in results[3]["detail"] and "no-such-pool" in results[5]["detail"]
    assert results[2]["jobId"] == existing and results[2]["duplicate"] is True
    assert results[4]["jobStatus"] == "delayed" and results[0]["jobStatus"] == "queued"
    assert results[0]["jobData"] == {"n": 1}
    assert svc.wait_status(results[6]["jobId"], "completed")["result"]["sum"] == 3
    svc.wait_status(results[0]["jobId"], "completed")
    assert svc.http.delete(f"/jobs/{results[4]['jobId']}").status_code == 200  # leave no delayed
    # all accepted: 202; the shape itself is checked
    r = post(svc, "/enqueue-tasks", {"jobs": [{"jobName": "noop"}] * 3})
    assert r.status_code == 202 and len({x["jobId"] for x in r.json()["results"]}) == 3
    for body in ({"jobs": []}, {"jobs": {}}, {}, {"jobs": [{"jobName": "noop"}] * 1001}):
        r = post(svc, "/enqueue-tasks", body)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", body


def test_delayed_job_waits_then_runs(svc: Service) -> None:
    r = post(
        svc,
        "/enqueue-task",
        {"jobName": "sleeper", "data": {"seconds": 0}, "options": {"delay": 1}},
    )
    assert r.status_code == 202 and r.json()["status"] == "delayed"
    job = r.json()["jobId"]
    assert svc.job(job)["status"] == "delayed"
    record = svc.wait_status(job, "completed", 10)
    assert record["result"]["started"] * 1000 >= _ms(record["createdAt"]) + 1000 - 5


def _ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


# retries, dead letters


def test_failed_tries_are_retried_with_backoff_then_complete(svc: Service) -> None:
    job = svc.enqueue("flaky", {"succeed_on": 3}, attempts=4, **FAST)
    record = svc.wait_status(job, "completed", 15)
    assert record["attempts"] == 3 and record["result"] == {"attempt": 3}


def test_status_is_failed_while_a_retry_waits(svc: Service) -> None:
    job = svc.enqueue("flaky", {"succeed_on": 2}, attempts=2, backoff={"type": "fixed", "delay": 3})
    record = svc.wait_status(job, "failed", 10)
    assert "flaky failure on try 1" in record["error"]
    svc.wait_status(job, "completed", 15)


def test_job_may_ask_for_a_retry_itself(svc: Service) -> None:
    job = svc.enqueue("asks_retry")
    assert svc.wait_status(job, "completed", 10)["result"] == {"attempt": 2}


def test_out_of_tries_goes_to_the_dead_letter_queue_with_traceback(svc: Service) -> None:
    job = svc.enqueue("message", {"message": "boom", "shouldFail": True}, attempts=2, **FAST)
    record = svc.wait_status(job, "dead", 15)
    assert record["attempts"] == 2 and "boom" in record["error"]
    assert "traceback" not in record  # tracebacks only in the DLQ entry and the logs
    item = svc.http.get(f"/dlq/{job}").json()
    assert item["jobName"] == "message" and item["attempts"] == 2
    assert "Traceback" in item["traceback"] and item["failedAt"].endswith("Z")
    listing = svc.http.get("/dlq?limit=50").json()
    assert listing["items"][0]["id"] == job and listing["total"] >= 1


def test_dead_letter_retry_runs_again_with_fresh_tries(svc: Service, tmp_path: Path) -> None:
    job = svc.enqueue("fails_first_run", {"marker": str(tmp_path / "marker")}, attempts=1)
    svc.wait_status(job, "dead", 10)
    r = svc.http.post(f"/dlq/{job}/retry")
    assert r.status_code == 202 and r.json()["jobId"] == job
    record = svc.wait_status(job, "completed", 10)
    assert record["attempts"] == 1 and record["result"] == {"attempt": 1}
    assert svc.http.get(f"/dlq/{job}").status_code == 404


def test_dead_letter_delete(svc: Service) -> None:
    job = svc.enqueue("message", {"message": "x", "shouldFail": True}, attempts=1)
    svc.wait_status(job, "dead", 10)
    assert svc.http.delete(f"/dlq/{job}").status_code == 200
    assert svc.http.get(f"/dlq/{job}").status_code == 404
    assert svc.http.delete(f"/dlq/{job}").status_code == 404


def test_dead_letter_queue_is_bounded_and_counts_what_it_drops(svc: Service) -> None:
    jobs = [
        svc.enqueue("message", {"message": str(i), "shouldFail": True}, attempts=1)
        for i in range(7)
    ]

    def dead_or_dropped(job: str) -> bool:
        r = svc.http.get(f"/jobs/{job}")
        return r.status_code == 404 or r.json()["status"] == "dead"

    for job in jobs:
        wait_for(lambda j=job: dead_or_dropped(j), what="dead-lettered or dropped")
    listing = svc.http.get("/dlq").json()
    assert listing["total"] == 5  # DLQ_MAX
    assert listing["dropped"] >= 2


def test_bad_data_is_dead_lettered_without_retries(svc: Service) -> None:
    job = svc.enqueue("calculation", {"numbers": "not a list"}, attempts=4)
    record = svc.wait_status(job, "dead", 10)
    assert record["attempts"] == 1


# cancellation, progress, timeout


def test_cancel_a_queued_or_delayed_job_means_it_never_runs(svc: Service) -> None:
    job = svc.enqueue("sleeper", {"seconds": 0}, delay=2)
    r = svc.http.delete(f"/jobs/{job}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    wait_for(lambda: svc.http.get("/queue/stats").json()["delayed"] == 0, 5)
    assert svc.job(job)["status"] == "cancelled" and svc.job(job)["startedAt"] is None


def test_cancel_an_active_job_aborts_it(svc: Service) -> None:
    job = svc.enqueue("sleeper", {"seconds": 30})
    svc.wait_status(job, "active", 10)
    r = svc.http.delete(f"/jobs/{job}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    wait_for(lambda: svc.job(job)["completedAt"] is not None, 5, what="the abort")
    wait_for(lambda: svc.http.get("/queue/stats").json()["active"] == 0, 5)
    assert svc.job(job)["status"] == "cancelled"


def test_cancel_a_finished_job_is_409_and_unknown_404(svc: Service) -> None:
    job = svc.enqueue("noop")
    svc.wait_status(job, "completed")
    assert svc.http.delete(f"/jobs/{job}").status_code == 409
    assert svc.http.delete("/jobs/does-not-exist").status_code == 404


def test_progress_shows_while_the_job_runs(svc: Service) -> None:
    job = svc.enqueue("progress_then_wait", {"seconds": 2})
    record = wait_for(lambda: (r := svc.job(job))["progress"] and r, 10)
    assert record["progress"] == {"stage": "half", "percent": 50} and record["status"] == "active"


def test_video_processing_reports_numeric_progress(svc: Service) -> None:
    job = svc.enqueue("videoProcessing", {"videoId": "v1", "duration": 1})
    record = svc.wait_status(job, "completed", 10)
    assert record["progress"] == 100 and record["result"]["videoId"] == "v1"


def test_a_try_past_its_timeout_is_a_failed_try(svc: Service) -> None:
    job = svc.enqueue("sleeper", {"seconds": 5}, timeout=0.3, attempts=1)
    record = svc.wait_status(job, "dead", 10)
    assert "timed out" in record["error"]


def test_each_async_try_times_out_at_its_own_time_whatever_order_they_started_in(
    svc: Service,
) -> None:
    late = svc.enqueue("sleeper", {"seconds": 60}, timeout=6, attempts=1)
    svc.wait_status(late, "active", 10)
    soon = svc.enqueue("sleeper", {"seconds": 60}, timeout=0.3, attempts=1)
    quick = svc.enqueue("sleeper", {"seconds": 0.1}, timeout=4, attempts=1)
    assert "timed out after 0.3 s" in svc.wait_status(soon, "dead", 10)["error"]
    assert svc.wait_status(quick, "completed", 10)["attempts"] == 1
    assert svc.job(late)["status"] == "active"  # the earlier time-out did not end it
    assert "timed out after 6 s" in svc.wait_status(late, "dead", 20)["error"]


def test_sync_job_runs_in_a_thread_and_reports_progress(svc: Service) -> None:
    job = svc.enqueue("syncJob", {"value": 7})
    record = svc.wait_status(job, "completed")
    assert record["result"] == {"thread": True, "value": 7} and record["progress"] == {
        "step": "working"
    }


# the built-in jobs


def test_data_enrichment(svc: Service) -> None:
    job = svc.enqueue("dataEnrichment", {"userId": 7, "email": "Ann@Example.COM"})
    result = svc.wait_status(job, "completed")["result"]
    assert result["emailDomain"] == "example.com" and result["userId"] == 7 and result["emailValid"]


def test_file_processing_reads_inside_its_directory_only(svc: Service) -> None:
    ok = svc.wait_status(svc.enqueue("fileProcessing", {"path": "hello.txt"}), "completed")[
        "result"
    ]
    assert ok["size"] == 8 and ok["lines"] == 2
    content = svc.wait_status(svc.enqueue("fileProcessing", {"content": "a\nb"}), "completed")[
        "result"
    ]
    assert content["lines"] == 2 and len(content["sha256"]) == 64
    for path in ("../secret.txt", "/etc/passwd", "escape", "hello.txt\x00.png", "./../../x"):
        record = svc.wait_status(svc.enqueue("fileProcessing", {"path": path}), "dead", 10)
        assert record["attempts"] == 1 and record["result"] is None, path


# stats


def test_stats_counts_and_workers(svc: Service) -> None:
    stats = svc.http.get("/queue/stats").json()
    for field in (
        "waiting",
        "active",
        "delayed",
        "completed",
        "failed",
        "deadLettered",
        "totalConcurrency",
    ):
        assert isinstance(stats[field], int)
    assert stats["totalConcurrency"] == 8 * 4  # 2 default + worker1 + worker2
    worker = stats["workers"][0]
    assert set(worker) == {
        "id",
        "pool",
        "host",
        "pid",
        "active",
        "queued",
        "concurrency",
        "draining",
        "lastSeen",
    }
    assert stats["completed"] >= 1


# input


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"jobName": "noop",', 400, None),
        ("[]", 422, "body"),
        ('{"data": {}}', 422, "jobName"),
        ('{"jobName": 5}', 422, "jobName"),
        ('{"jobName": "nope"}', 422, "jobName"),
        ('{"jobName": "noop", "data": []}', 422, "data"),
        ('{"jobName": "noop", "options": {"attempts": "3"}}', 422, "options.attempts"),
        ('{"jobName": "noop", "options": {"attempts": 0}}', 422, "options.attempts"),
        ('{"jobName": "noop", "options": {"delay": -1}}', 422, "options.delay"),
        ('{"jobName": "noop", "options": {"queue": "nowhere"}}', 422, "nowhere"),
        (
            '{"jobName": "noop", "options": {"backoff": {"type": "linear"}}}',
            422,
            "options.backoff.type",
        ),
        ('{"jobName": "noop", "options": {"priority": true}}', 422, "options.priority"),
        ('{"jobName": "noop", "options": {"jobId": "a:b"}}', 422, "options.jobId"),
        ('{"jobName": "noop", "surprise": 1}', 422, "surprise"),
    ],
)
def test_bad_input_is_a_clear_4xx(svc: Service, body: str, status: int, field: str | None) -> None:
    r = svc.http.post("/enqueue-task", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"error", "detail"}
    if field:
        assert field in error["detail"]


def test_body_over_the_limit_is_413_also_when_chunked(svc: Service) -> None:
    big = json.dumps({"jobName": "noop", "data": {"x": "y" * (1024 * 1024)}}).encode()
    json_type = {"content-type": "application/json"}
    assert svc.http.post("/enqueue-task", content=big, headers=json_type).status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = svc.http.post("/enqueue-task", content=chunks(), headers=json_type)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_openapi_document_describes_the_api(svc: Service) -> None:
    doc = svc.http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    schema = doc["paths"]["/enqueue-task"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert schema["required"] == ["jobName"] and "options" in schema["properties"]
    for path in ("/jobs/{job_id}", "/queue/stats", "/dlq", "/health", "/ready", "/metrics",
                 "/jobs/{job_id}/logs", "/queue/history", "/events", "/dlq/retry-matching",
                 "/enqueue-tasks"):  # fmt: skip
        assert path in doc["paths"]


# the seeds' routes


def test_seed_004_post_jobs(svc: Service) -> None:
    r = post(svc, "/jobs", {"message": "Hello from queue!", "shouldFail": False})
    assert r.status_code == 202 and r.json()["message"] == "Job added"
    record = svc.wait_status(r.json()["jobId"], "completed")
    assert record["result"]["message"] == "Hello from queue!"


def test_seed_003_api_jobs(svc: Service) -> None:
    r = post(
        svc,
        "/api/jobs",
        {"type": "calculation", "payload": {"operation": "complex", "numbers": [1, 2, 3]}},
    )
    body = r.json()
    assert r.status_code == 202 and body["message"] == "Job submitted successfully"
    assert body["status"] == "pending"
    done = wait_for(
        lambda: (
            (s := svc.http.get(f"/api/jobs/{body['jobId']}").json())["status"] == "completed" and s
        )
    )
    assert set(done) == {"id", "status", "type", "createdAt", "completedAt", "result"}
    assert done["type"] == "calculation" and done["result"]["sum"] == 6
    assert post(svc, "/api/jobs", {"type": "nope"}).status_code == 422


@pytest.mark.parametrize("pool", ["worker1", "worker2"])
def test_seed_000_dedicated_workers(svc: Service, pool: str) -> None:
    r = svc.http.post(f"/api/{pool}")
    assert r.status_code == 202
    body = r.json()
    assert body["assignedWorker"] == f"test-{pool}-1"
    record = svc.wait_status(body["jobId"], "completed", 10)
    assert record["pool"] == pool and record["result"]["processedBy"] == pool


def test_seed_001_template_and_admin(svc: Service) -> None:
    r = svc.http.get("/template")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "Job" in r.text
    admin = svc.http.get("/admin")
    assert admin.status_code == 200 and "/queue/stats" in admin.text


def test_root_health_and_metrics(svc: Service) -> None:
    root = svc.http.get("/").json()
    assert set(root) == {"message", "workerPID"}
    metrics = svc.http.get("/metrics")
    assert metrics.status_code == 200 and "mq_jobs_enqueued_total" in metrics.text


def test_data_dir_is_used(svc: Service, tmp_path: Path) -> None:
    assert (svc.data_dir / "valkey.sock").exists()
