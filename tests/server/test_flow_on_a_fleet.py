"""Flow control on a fleet: two nodes on one Redis, pause and resume across a restart, a pool's
rate limit and concurrency cap counted from the jobs' own times, a job name's cap, and a job
that asks for its pool to be rate limited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from helpers import Service, Valkey, running, wait_for

JOBS = {"POOLS": "", "JOB_MODULES": "testjobs", "CONSUMERS": 2}


def node_env(server: Valkey, name: str) -> dict[str, Any]:
    """A node of a fleet on `server`, with its own NODE_NAME."""
    return {"REDIS_URL": server.url, "NODE_NAME": name, **JOBS}


def ms(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def spans(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return sorted((ms(r["startedAt"]), ms(r["completedAt"])) for r in records)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_a_pause_holds_for_every_node_and_across_a_restart_until_resumed(
    tmp_path: Path, server: Valkey
) -> None:
    with running(tmp_path / "a", **node_env(server, "a")) as a:
        b = Service(tmp_path / "b", **node_env(server, "b"))
        try:
            b.start()
            r = a.http.post("/pools/default/pause")
            assert r.status_code == 200 and r.json()["paused"] is True
            jobs = [b.enqueue("noop") for _ in range(4)]  # a paused pool still takes jobs
            for svc in (a, b):
                assert svc.http.get("/queue/stats").json()["pools"]["default"]["paused"] is True
            wait_for(lambda: a.job(jobs[0])["waitingFor"] == "the pool is paused", 5)
            b.stop()  # a restart keeps the pause: it lives in Redis
            b = Service(tmp_path / "b", **node_env(server, "b"))
            b.start()
            assert all(b.job(j)["status"] == "queued" for j in jobs)
            assert b.http.post("/pools/default/resume").json()["paused"] is False
            for j in jobs:
                assert b.wait_status(j, "completed", 10)["waitingFor"] is None
            assert a.http.post("/pools/nope/pause").status_code == 404
        finally:
            b.stop()


def test_limits_hold_across_two_nodes_counted_from_the_jobs_own_times(
    tmp_path: Path, server: Valkey
) -> None:
    with (
        running(tmp_path / "a", **node_env(server, "a")) as a,
        running(tmp_path / "b", **node_env(server, "b")) as b,
    ):
        r = a.http.put("/pools/default/limits", json={"rate": {"max": 4, "period": 1}})
        assert r.status_code == 200 and r.json()["limits"] == {"rate": {"max": 4, "period": 1}}
        jobs = [(a if i % 2 else b).enqueue("noop") for i in range(16)]
        starts = sorted(ms(a.wait_status(j, "completed", 30)["startedAt"]) for j in jobs)
        for t in starts:  # any one second holds at most 4 starts, whichever node ran them
            assert sum(1 for s in starts if t <= s < t + 1) <= 4, starts
        assert starts[-1] - starts[0] >= 2.9  # 16 jobs at 4 per second

        r = b.http.put("/pools/default/limits", json={"concurrency": 2})
        assert r.json()["limits"] == {"concurrency": 2}
        jobs = [(a if i % 2 else b).enqueue("sleeper", {"seconds": 0.3}) for i in range(8)]
        records = [a.wait_status(j, "completed", 30) for j in jobs]
        assert most_at_once(spans(records)) <= 2
        assert b.http.delete("/pools/default/limits").json()["limits"] is None

        # @job(max_concurrency=1): one at a time across both nodes, other jobs unhindered
        capped = [(a if i % 2 else b).enqueue("one_at_a_time", {"seconds": 0.3}) for i in range(4)]
        other = a.enqueue("noop")
        records = [a.wait_status(j, "completed", 30) for j in capped]
        assert most_at_once(spans(records)) == 1
        assert ms(a.wait_status(other, "completed")["completedAt"]) < max(
            ms(r["completedAt"]) for r in records
        )
        for body in (
            {"rate": {"max": 0, "period": 1}},
            {"concurrency": "2"},
            {"groups": {"concurrency": 0}},
        ):
            assert a.http.put("/pools/default/limits", json=body).status_code == 422, body


def test_groups_are_served_in_turn_each_under_its_own_limits_across_two_nodes(
    tmp_path: Path, server: Valkey
) -> None:
    """A busy tenant's 24 jobs and a quiet tenant's 2: each group starts at most 4 per second
    and runs at most 2 at once, counted from the jobs' own times, and the quiet group's jobs
    start within one period of their enqueue, not after the busy group's backlog."""
    with (
        running(tmp_path / "a", **node_env(server, "a")) as a,
        running(tmp_path / "b", **node_env(server, "b")) as b,
    ):
        limits = {"groups": {"rate": {"max": 4, "period": 1}, "concurrency": 2}}
        assert a.http.put("/pools/default/limits", json=limits).json()["limits"] == limits
        busy = [
            (a if i % 2 else b).enqueue("sleeper", {"seconds": 0.2}, group="busy")
            for i in range(24)
        ]
        wait_for(lambda: a.job(busy[-1])["waitingFor"] is not None, 10, what="the busy backlog")
        quiet = [b.enqueue("sleeper", {"seconds": 0.2}, group="quiet") for _ in range(2)]
        assert a.job(quiet[0])["group"] == "quiet"
        records = {g: [a.wait_status(j, "completed", 40) for j in ids]
                   for g, ids in (("busy", busy), ("quiet", quiet))}  # fmt: skip
        for group, done in records.items():
            starts = sorted(ms(r["startedAt"]) for r in done)
            for t in starts:
                assert sum(1 for s in starts if t <= s < t + 1) <= 4, (group, starts)
            assert most_at_once(spans(done)) <= 2, group
        for r in records["quiet"]:
            assert ms(r["startedAt"]) - ms(r["createdAt"]) <= 1.0, r
        last_busy = max(ms(r["startedAt"]) for r in records["busy"])
        assert max(ms(r["startedAt"]) for r in records["quiet"]) < last_busy - 2


def test_a_job_asking_for_a_rate_limit_holds_its_pool_and_is_not_a_failed_try(
    tmp_path: Path, server: Valkey
) -> None:
    with running(tmp_path / "a", **node_env(server, "a")) as a:
        marker = tmp_path / "limited-once"
        job = a.enqueue("rate_limited_once", {"marker": str(marker), "seconds": 1.5})

        def held() -> str | None:
            until: str | None = a.http.get("/pools/default/limits").json()["heldUntil"]
            return until

        until = wait_for(held, 10, what="the pool held")
        behind = a.enqueue("noop")
        done = a.wait_status(job, "completed", 15)
        assert done["attempts"] == 1 and done["result"] == {"attempt": 1}
        assert [t["outcome"] for t in done["tries"]] == ["rate limited", "completed"]
        started = ms(a.wait_status(behind, "completed")["startedAt"])
        assert started >= ms(until) - 0.01  # nothing of the pool started while it was held
