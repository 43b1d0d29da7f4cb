"""One command starts the whole service; the master keeps every child alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, alive, children, running, wait_for


def test_help_explains_options_and_environment() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "supervisor", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in (
        "REDIS_URL",
        "WEB_CONCURRENCY",
        "CONSUMERS",
        "GRACEFUL_TIMEOUT",
        "DATA_DIR",
        "API_KEY",
    ):
        assert name in out


def test_master_runs_http_workers_consumers_and_server(data_dir: Path) -> None:
    with running(data_dir, WEB_CONCURRENCY=2, CONSUMERS=2, POOLS="worker1:1") as svc:
        roles = svc.roles()
        assert len(roles["http"]) == 2
        assert len(roles["consumer"]) == 3  # two of the default pool, one of worker1
        assert len(roles["server"]) == 1
        titles = set(children(svc.pid).values())
        assert {"supervisor: consumer default-1", "supervisor: consumer worker1-1"} <= titles
        assert "supervisor: http worker" in titles

        health = svc.http.get("/health").json()
        assert health["status"] == "ok"
        assert isinstance(health["uptime"], int | float)
        assert svc.http.get("/ready").status_code == 200
        job = svc.enqueue("noop")
        done = svc.wait_status(job, "completed", 10)
        assert done["assignedWorker"].startswith("test-default-")
        assert (data_dir / "appendonlydir").is_dir()  # the embedded server persists (AOF)


@pytest.mark.parametrize("role", ["http", "consumer", "server"])
def test_a_child_killed_with_sigkill_is_replaced(data_dir: Path, role: str) -> None:
    with running(data_dir) as svc:
        before = svc.roles()[role]
        victim = before[0]
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = svc.roles()[role]
            return victim not in now and len(now) == len(before)

        wait_for(replaced, 15, what=f"the {role} child to be replaced")
        svc.wait_ready(30)
        assert alive(svc.pid)
        job = svc.enqueue("noop")
        svc.wait_status(job, "completed", 15)
