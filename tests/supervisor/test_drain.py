"""SIGTERM drains: running jobs finish or go back to their queue; nothing accepted is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from helpers import Service, running, wait_for


def sigterm(svc: Service, limit: float) -> float:
    """SIGTERM the master; it must exit 0. Returns how long the drain took."""
    started = time.monotonic()
    svc.signal(signal.SIGTERM)
    assert svc.wait_exit(limit) == 0
    return time.monotonic() - started


def test_sigterm_lets_running_jobs_finish_and_exits_0(data_dir: Path) -> None:
    svc = Service(data_dir, GRACEFUL_TIMEOUT=10)
    try:
        svc.start()
        jobs = [svc.enqueue("videoProcessing", {"duration": 2}) for _ in range(6)]
        wait_for(
            lambda: all(svc.job(j)["status"] == "active" for j in jobs), 10, what="jobs running"
        )
        assert sigterm(svc, limit=20) < 10 + 5
    finally:
        svc.stop()
    with running(data_dir) as again:
        for job in jobs:
            record = again.job(job)
            assert record["status"] == "completed", record
            assert record["result"]["status"] == "processed"


def test_jobs_still_running_at_the_deadline_go_back_and_complete_after_restart(
    data_dir: Path,
) -> None:
    env = {"GRACEFUL_TIMEOUT": 2, "CONSUMERS": 1, "CONSUMER_CONCURRENCY": 2}
    svc = Service(data_dir, **env)
    try:
        svc.start()
        jobs = [svc.enqueue("videoProcessing", {"duration": 6}) for _ in range(4)]
        wait_for(
            lambda: sum(svc.job(j)["status"] == "active" for j in jobs) == 2, 10, what="2 running"
        )
        assert sigterm(svc, limit=12) < 2 + 6
    finally:
        svc.stop()
    with running(data_dir, **env) as again:
        # none of them was cut short and recorded as completed
        first = {j: again.job(j) for j in jobs}
        assert all(r["status"] in ("queued", "active") for r in first.values()), first
        for job in jobs:
            record = again.wait_status(job, "completed", 40)
            assert record["attempts"] == 1  # a try stopped by the shutdown is not counted
