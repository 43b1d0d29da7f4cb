"""Every accepted job runs, and never twice at once (issue 8, end to end): a stopped container,
a clock that runs ahead, a busy loop, long jobs ahead in a queue, concurrent DLQ retries, plain
`def` jobs past their time-out, and job code that raises CancelledError."""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ROOT, Service, Valkey, kill_tree, running, wait_for

pytestmark = pytest.mark.slow

JOBS = {"POOLS": "", "JOB_MODULES": "testjobs"}
TESTS = ROOT / "tests"


def node_env(name: str, server: Valkey, **env: object) -> dict[str, object]:
    """A node of a fleet on `server`: its own NODE_NAME, a heartbeat that lapses in 3 s."""
    return {"REDIS_URL": server.url, "NODE_NAME": name, "HEARTBEAT_TTL": 3, **JOBS, **env}


def server_time(stamp: str) -> float:
    """An ISO-8601 time of a job record (the store's clock) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stats(svc: Service) -> dict[str, Any]:
    body: dict[str, Any] = svc.http.get("/queue/stats").json()
    return body


def test_a_container_stopped_mid_drain_has_every_job_completed_by_the_other_node(
    tmp_path: Path, server: Valkey
) -> None:
    # docker stop: SIGTERM, then SIGKILL of the whole tree 3 s later, inside a 30 s drain
    a = Service(tmp_path / "a", **node_env("a", server, CONSUMERS=1, GRACEFUL_TIMEOUT=30))
    b = Service(tmp_path / "b", **node_env("b", server, CONSUMERS=1, GRACEFUL_TIMEOUT=30))
    try:
        a.start()
        b.start()
        wait_for(lambda: len(stats(b)["workers"]) == 2, 10, what="both nodes registered")
        jobs = [a.enqueue("sleeper", {"seconds": 15}) for _ in range(6)]
        wait_for(lambda: all(a.job(j)["status"] == "active" for j in jobs), 10, what="6 running")
        on_a = [j for j in jobs if a.job(j)["assignedWorker"] == "a-default-1"]
        assert 0 < len(on_a) < len(jobs), "least-loaded assignment spans both nodes"

        a.signal(signal.SIGTERM)
        term = time.monotonic()
        wait_for(
            lambda: [w["id"] for w in stats(b)["workers"] if w["draining"]] == ["a-default-1"],
            3,
            what="a's consumer to drain while it stays registered",
        )
        time.sleep(max(0.0, term + 3 - time.monotonic()))  # the scenario: docker's grace
        killed = time.time()
        kill_tree(a.pid)

        b.wait_all_completed(jobs, 45)  # also fails at once if an accepted job is gone
        records = {j: b.job(j) for j in jobs}
        taken = [records[j]["result"]["started"] - killed for j in on_a]
        done = max(server_time(r["completedAt"]) for r in records.values()) - killed
        print(
            f"\nstopped container: {len(on_a)} of a's running jobs started again on b "
            f"{min(taken):.2f}-{max(taken):.2f}s after the SIGKILL; all 6 done {done:.1f}s after"
        )
        assert {r["result"]["worker"] for r in records.values()} == {"b-default-1"}
        assert all(r["attempts"] == 1 for r in records.values()), "a kill is not a try"
        assert max(taken) < 3 + 2 + 2  # heartbeat TTL, a sweep, a claim, with margin
        wait_for(lambda: stats(b)["active"] == 0, 5, what="active back to 0")
        final = stats(b)
        assert [w["id"] for w in final["workers"]] == ["b-default-1"]
        assert final["completed"] == len(jobs) and final["deadLettered"] == 0
    finally:
        a.stop()
        b.stop()


def test_a_node_whose_clock_runs_10s_ahead_runs_nothing_twice_and_dead_letters_nothing(
    tmp_path: Path, server: Valkey
) -> None:
    env = {"CONSUMERS": 1, "LEASE_SECONDS": 5}
    a = Service(tmp_path / "a", **node_env("a", server, **env))
    ahead = {"CLOCK_OFFSET_SECONDS": 10, "PYTHONPATH": f"{TESTS / 'skewed_clock'}:{TESTS}:{ROOT}"}
    b = Service(tmp_path / "b", **node_env("b", server, **env, **ahead))
    try:
        a.start()
        b.start()
        wait_for(lambda: len(stats(a)["workers"]) == 2, 10, what="both nodes registered")
        # jobs longer than the heartbeat TTL and the lease: a node that judged its peer by
        # its own clock would take the peer's running jobs (b sees a 10 s late)
        jobs = [(a, b)[i % 2].enqueue("sleeper", {"seconds": 5}) for i in range(12)]
        enqueued = time.time()
        delayed = [b.enqueue("sleeper", {"seconds": 0.1}, delay=2) for _ in range(2)]
        everything = jobs + delayed
        a.wait_all_completed(everything, 45)
        records = {j: a.job(j) for j in everything}

        skew = {
            r["result"]["worker"]: round(r["result"]["started"] - server_time(r["startedAt"]), 1)
            for r in records.values()
        }
        print(f"\nclock skew seen by each node's jobs (job clock - store clock): {skew}")
        assert set(skew) == {"a-default-1", "b-default-1"}, "both nodes ran jobs"
        assert 9 < skew["b-default-1"] < 11, "b's Python does see a clock 10 s ahead"
        assert abs(skew["a-default-1"]) < 1
        assert all(r["attempts"] == 1 for r in records.values())
        assert all(r["result"]["attempt"] == 1 for r in records.values())
        waited = [server_time(records[j]["startedAt"]) - enqueued for j in delayed]
        assert all(1.5 < w < 5 for w in waited), f"a 2 s delay ran after {waited}"
        final = stats(a)
        assert final["completed"] == len(everything)
        assert final["failed"] == 0 and final["deadLettered"] == 0
        assert "took back" not in a.tail(400) + b.tail(400)
    finally:
        a.stop()
        b.stop()


def test_a_cpu_bound_async_job_of_35s_completes_once_and_its_consumer_survives(
    data_dir: Path,
) -> None:
    # CONSUMER_TIMEOUT is left at its default, 30 s: the loop is blocked longer than that
    with running(data_dir, CONSUMERS=1, **JOBS) as svc:
        (pid,) = svc.roles()["consumer"]
        job = svc.enqueue("cpu_bound", {"seconds": 35}, timeout=120)
        record = svc.wait_status(job, "completed", 60)
        assert record["attempts"] == 1 and record["result"]["pid"] == pid
        assert svc.roles()["consumer"] == [pid], "the busy consumer was replaced"
        final = stats(svc)
        assert final["completed"] == 1 and final["failed"] == 0
        assert final["deadLettered"] == 0
        logs = svc.tail(1000)
        assert "killing it" not in logs
        print(f"\ncpu-bound 35 s job: {record['result']['spins']} spins in consumer {pid}, kept")


def test_noops_queued_behind_a_20s_job_finish_within_seconds_on_the_idle_consumer(
    data_dir: Path,
) -> None:
    with running(data_dir, CONSUMERS=2, CONSUMER_CONCURRENCY=1, **JOBS) as svc:
        long = svc.enqueue("sleeper", {"seconds": 20})
        short = svc.enqueue("sleeper", {"seconds": 1})
        enqueued = time.monotonic()
        noops = [svc.enqueue("noop") for _ in range(10)]
        svc.wait_all_completed(noops, 8)
        waited = time.monotonic() - enqueued
        holder = svc.job(long)
        assert holder["status"] == "active", "the 20 s job still runs"
        workers = {svc.job(j)["assignedWorker"] for j in noops}
        print(f"\nhead-of-line: 10 noops done {waited:.2f}s after they were enqueued, by {workers}")
        assert waited < 8
        assert holder["assignedWorker"] not in workers, "the busy consumer ran none of them"
        assert svc.wait_status(short, "completed", 5)["attempts"] == 1
        assert svc.http.delete(f"/jobs/{long}").status_code == 200  # no 20 s drain at stop


def test_two_dlq_retries_at_once_run_the_job_exactly_once_more(
    data_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    with running(data_dir, CONSUMERS=2, **JOBS) as svc:
        base = str(svc.http.base_url)
        refusals: set[int] = set()
        for round_ in range(4):
            job = svc.enqueue("fails_after", {"seconds": 0.5, "log": str(runs)}, attempts=1)
            svc.wait_status(job, "dead", 20)
            before, failed = len(read_log(runs)), stats(svc)["failed"]
            answers: list[int] = []
            gate = threading.Barrier(2)

            def retry(
                job_id: str = job, answers: list[int] = answers, gate: threading.Barrier = gate
            ) -> None:
                with httpx.Client(base_url=base, timeout=10) as client:
                    client.get("/health")  # connected before the gate
                    gate.wait(10)
                    answers.append(client.post(f"/dlq/{job_id}/retry").status_code)

            threads = [threading.Thread(target=retry, daemon=True) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert sorted(answers) in ([202, 409], [202, 404]), f"round {round_}: {answers}"
            refusals.add(max(answers))
            record = wait_for(
                lambda job=job: (r := svc.job(job))["status"] == "dead" and r["attempts"] and r,
                20,
                what="the retried job to be dead again",
            )
            assert record["attempts"] == 1
            assert stats(svc)["failed"] == failed + 1, "one retry, one more failed run"
            assert len(read_log(runs)) == before + 1, "the job ran exactly once more"
        dlq = svc.http.get("/dlq").json()
        assert dlq["total"] == 4
        print(f"\nconcurrent DLQ retries: 4 rounds, each one 202 and one {sorted(refusals)}")


def test_a_plain_def_job_past_its_timeout_never_runs_twice_at_once_nor_breaks_its_record(
    data_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    # two consumers: the retry may go to the other one while the first thread still runs
    with running(data_dir, CONSUMERS=2, CONSUMER_CONCURRENCY=1, **JOBS) as svc:
        pids = sorted(svc.roles()["consumer"])
        job = svc.enqueue(
            "slow_thread", {"seconds": 3, "log": str(runs)}, timeout=1, attempts=2,
            backoff={"type": "fixed", "delay": 0},
        )  # fmt: skip
        answers: list[int] = []

        def dead() -> dict[str, Any] | None:
            r = svc.http.get(f"/jobs/{job}")
            answers.append(r.status_code)
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 and body["status"] == "dead" else None

        record = wait_for(dead, 30, 0.05, "both timed-out tries to end")
        assert set(answers) == {200}, f"GET /jobs/{{id}} answered {sorted(set(answers))}"
        assert record["error"].startswith("timed out after 1"), record["error"]
        assert record["attempts"] == 2 and record["id"] == job
        log = read_log(runs)
        starts = [e for e in log if e["event"] == "start"]
        ends = sorted((e for e in log if e["event"] == "end"), key=lambda e: e["started"])
        assert len(starts) == 2 and len(ends) == 2, log
        (first, second) = ends
        assert second["started"] >= first["at"], "the retry started while the first ran"
        gap = second["started"] - first["at"]
        with svc.store() as client:
            key = "{mq:default}:job:" + job
            assert client.hget(key, "id") == job and client.hget(key, "status") == "dead"
        assert sorted(svc.roles()["consumer"]) == pids and "killing it" not in svc.tail(400)
        print(
            f"\nplain def past its time-out: tries ran {first['started']:.2f}-{first['at']:.2f} "
            f"and {second['started']:.2f}-{second['at']:.2f} (gap {gap:.2f}s); progress "
            f"calls accepted/refused per try: "
            f"{[(e['accepted'], e['refused']) for e in ends]}; {len(answers)} GETs all 200"
        )


def test_a_plain_def_job_cancelled_mid_run_cannot_rewrite_its_record_from_its_thread(
    data_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    with running(data_dir, CONSUMERS=1, **JOBS) as svc:
        job = svc.enqueue("slow_thread", {"seconds": 3, "log": str(runs)}, timeout=30)
        wait_for(lambda: (svc.job(job)["progress"] or {}).get("attempt") == 1, 10, what="progress")
        assert svc.http.delete(f"/jobs/{job}").status_code == 200
        cancelled = svc.wait_status(job, "cancelled", 10)
        answers: list[int] = []

        def thread_ended() -> bool:
            r = svc.http.get(f"/jobs/{job}")
            answers.append(r.status_code)
            assert r.status_code != 200 or r.json()["status"] == "cancelled"
            return any(e["event"] == "end" for e in read_log(runs))

        wait_for(thread_ended, 10, 0.05, "the cancelled thread to return")
        after = svc.job(job)
        assert set(answers) == {200} and after["status"] == "cancelled"
        assert after["progress"] == cancelled["progress"], "progress written after the cancel"
        with svc.store() as client:
            key = "{mq:default}:job:" + job
            assert client.hget(key, "id") == job
            assert client.ttl(key) > 0, "the finished record keeps its expiry"
        (end,) = [e for e in read_log(runs) if e["event"] == "end"]
        print(
            f"\ncancelled plain def: progress accepted/refused {end['accepted']}/{end['refused']}"
        )


def test_a_job_raising_cancelled_error_itself_is_a_failed_try_and_is_dead_lettered(
    data_dir: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    with running(data_dir, CONSUMERS=1, **JOBS) as svc:
        job = svc.enqueue(
            "raises_cancelled", {"log": str(runs)}, attempts=2,
            backoff={"type": "fixed", "delay": 0},
        )  # fmt: skip
        record = svc.wait_status(job, "dead", 20)
        assert record["attempts"] == 2
        assert "CancelledError" in record["error"], record["error"]
        # the consumer goes on to later work, and the dead job is not run again
        svc.wait_status(svc.enqueue("sleeper", {"seconds": 1.5}), "completed", 10)
        assert [e["attempt"] for e in read_log(runs)] == [1, 2]
        assert svc.job(job)["status"] == "dead"
        final = stats(svc)
        assert final["failed"] == 2 and final["deadLettered"] == 1
        assert [d["id"] for d in svc.http.get("/dlq").json()["items"]] == [job]


def test_a_job_holding_the_gil_past_the_heartbeat_ttl_keeps_its_lease_and_runs_once(
    data_dir: Path,
) -> None:
    env = {"CONSUMERS": 2, "HEARTBEAT_TTL": 3, "LEASE_SECONDS": 3, **JOBS}
    with running(data_dir, **env) as svc:
        job = svc.enqueue("holds_gil", {"n": 6 * 10**8})
        record = svc.wait_status(job, "completed", 90)
        print(f"\nheld the GIL {record['result']['held']:.1f}s")
        assert record["result"]["held"] > 3  # longer than the TTL and the lease
        assert record["attempts"] == 1 and record["result"]["attempt"] == 1
        assert "took back" not in svc.tail(400)
