"""Job schedulers through the HTTP API and on a fleet: two nodes on one Redis, one killed with
its whole family mid-run, still make exactly one job per due time; pause, resume, delete; a
scheduler from @job(cron=...); bad definitions answer 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import Service, Valkey, kill_tree, running, wait_for

JOBS = {"POOLS": "", "JOB_MODULES": "testjobs", "CONSUMERS": 2}


def made(svc: Service, scheduler_id: str) -> dict[str, dict[str, Any]]:
    """The jobs a scheduler made so far, by id."""
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params = {"q": f"{scheduler_id}@", "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = svc.http.get("/jobs", params=params).json()
        found.update({j["id"]: j for j in page["jobs"] if j["id"].startswith(f"{scheduler_id}@")})
        cursor = page["cursor"]
        if cursor is None:
            return found


def test_two_nodes_one_killed_mid_run_make_exactly_one_job_per_due_time(
    tmp_path: Path, server: Valkey
) -> None:
    a = Service(tmp_path / "a", REDIS_URL=server.url, NODE_NAME="a", **JOBS)
    b = Service(tmp_path / "b", REDIS_URL=server.url, NODE_NAME="b", **JOBS)
    try:
        a.start()
        b.start()
        r = a.http.put("/schedulers/beat", json={"jobName": "noop", "every": 1})
        assert r.status_code == 200, r.text
        assert b.http.get("/schedulers/beat").json()["every"] == 1
        wait_for(lambda: len(made(b, "beat")) >= 4, 20, 0.2, "four due times")
        kill_tree(a.pid)  # the master, its HTTP workers and consumers, at once
        before = len(made(b, "beat"))
        wait_for(lambda: len(made(b, "beat")) >= before + 4, 20, 0.2, "four more, from b")
        assert b.http.delete("/schedulers/beat").status_code == 200
        jobs = made(b, "beat")
        dues = sorted(int(ident.split("@")[1]) for ident in jobs)
        # one job per due time, none missing: every second from the first to the last
        assert dues == list(range(dues[0], dues[-1] + 1, 1000)), dues
        # the jobs a's consumers held when it died are taken back and run, once each
        wait_for(
            lambda: all(j["status"] == "completed" for j in made(b, "beat").values()),
            60,
            0.5,
            "every job made to complete",
        )
        assert b.http.get("/queue/stats").json()["deadLettered"] == 0
    finally:
        b.stop()
        a.stop()


def test_a_scheduler_is_written_read_paused_resumed_and_deleted_through_the_api(
    tmp_path: Path,
) -> None:
    with running(tmp_path / "d", **{**JOBS, "JOB_MODULES": "testjobs,cron_jobs"}) as svc:
        body = {
            "jobName": "noop",
            "data": {"x": 1},
            "cron": "30 2 * * *",
            "tz": "Europe/Paris",
            "options": {"attempts": 2, "priority": 5},
            "missed": "once",
        }
        r = svc.http.put("/schedulers/nightly", json=body)
        assert r.status_code == 200, r.text
        shown = r.json()
        assert (shown["id"], shown["cron"], shown["tz"], shown["paused"]) == (
            "nightly", "30 2 * * *", "Europe/Paris", False
        )  # fmt: skip
        assert len(shown["nextRuns"]) == 5 and shown["nextRuns"] == sorted(shown["nextRuns"])
        assert svc.http.get("/schedulers/nightly").json()["nextRuns"] == shown["nextRuns"]

        paused = svc.http.post("/schedulers/nightly/pause").json()
        assert paused["paused"] is True and paused["nextRuns"] == []
        again = svc.http.put("/schedulers/nightly", json={**body, "data": {"x": 2}}).json()
        assert again["paused"] is True and again["data"] == {"x": 2}  # a pause outlives a PUT
        resumed = svc.http.post("/schedulers/nightly/resume").json()
        assert resumed["paused"] is False and resumed["nextRuns"] == shown["nextRuns"]

        # @job(cron="* * * * * *") in cron_jobs: written by the master, runs every second
        listed = {s["id"]: s for s in svc.http.get("/schedulers").json()["schedulers"]}
        assert set(listed) == {"nightly", "every_second"}
        assert listed["every_second"]["cron"] == "* * * * * *"
        wait_for(
            lambda: any(j["status"] == "completed" for j in made(svc, "every_second").values()),
            15,
            0.2,
            "a job of @job(cron=...) to complete",
        )
        assert svc.http.post("/schedulers/every_second/pause").status_code == 200

        assert svc.http.delete("/schedulers/nightly").json() == {"id": "nightly", "deleted": True}
        for answer in (
            svc.http.get("/schedulers/nightly"),
            svc.http.delete("/schedulers/nightly"),
            svc.http.post("/schedulers/nightly/pause"),
        ):
            assert answer.status_code == 404, answer.text


def test_bad_scheduler_definitions_answer_422_and_name_the_field(tmp_path: Path) -> None:
    with running(tmp_path / "d", **JOBS) as svc:
        ok = {"jobName": "noop", "every": 60}
        cases = [
            ("s", {"jobName": "noop"}, "every"),
            ("s", {**ok, "cron": "* * * * *"}, "every"),
            ("s", {"jobName": "noop", "cron": "61 * * * *"}, "cron"),
            ("s", {"jobName": "noop", "cron": "0 0 31 2 *"}, "cron"),
            ("s", {"jobName": "noop", "cron": "* * * * *", "tz": "Mars/Olympus"}, "tz"),
            ("s", {**ok, "start": "yesterday"}, "start"),
            ("s", {**ok, "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}, "end"),
            ("s", {**ok, "every": 0.5}, "every"),
            ("s", {**ok, "options": {"jobId": "x"}}, "jobId"),
            ("s", {**ok, "jobName": "nope"}, "jobName"),
            ("a:b", ok, "scheduler id"),
            ("x" * 200, ok, "scheduler id"),
        ]
        for ident, body, word in cases:
            r = svc.http.put(f"/schedulers/{ident}", json=body)
            assert r.status_code == 422, (body, r.text)
            assert word in r.json()["detail"], (body, r.text)
        assert svc.http.get("/schedulers").json() == {"schedulers": []}
        assert svc.http.get("/health").status_code == 200
