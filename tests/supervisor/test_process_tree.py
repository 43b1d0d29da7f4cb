"""The master's tree: children die with it, SIGHUP keeps every pool served, settings are
checked, the embedded server has a memory limit, metric files of dead processes are folded."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from helpers import ROOT, Load, Service, alive, children, kill_tree, running, wait_for


def ours(pid: int) -> bool:
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"supervisor" in cmdline or b"valkey" in cmdline
    return False


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children(p))
    return found


def test_kill_9_of_the_master_alone_leaves_no_process_and_a_restart_completes_every_job(
    data_dir: Path,
) -> None:
    env = {"JOB_MODULES": "testjobs", "POOLS": ""}
    svc = Service(data_dir, **env)
    family: list[int] = []
    try:
        svc.start()
        jobs = [svc.enqueue("sleeper", {"seconds": 2}) for _ in range(6)]
        wait_for(lambda: any(svc.job(j)["status"] == "active" for j in jobs), 10, what="a job runs")
        family = [p for p in tree(svc.pid) if p != svc.pid]
        assert len(family) >= 4  # server, 2 http workers, 2 consumers
        os.kill(svc.pid, signal.SIGKILL)
        assert svc.proc is not None
        svc.proc.wait(10)
        try:
            wait_for(lambda: not any(alive(p) for p in family), 15, what="the tree to go")
        except AssertionError:
            left = [(p, Path(f"/proc/{p}/cmdline").read_bytes()) for p in family if alive(p)]
            raise AssertionError(f"still alive after 15 s: {left}") from None
    finally:
        # the family too, by pid: it may have outlived the master (and not a reused pid)
        for p in tree(svc.pid) + [p for p in family if alive(p) and ours(p)]:
            kill_tree(p)
        svc.stop()
    with running(data_dir, **env) as again:
        again.wait_all_completed(jobs, 60)


def test_sighup_restarts_consumers_one_at_a_time_so_no_enqueue_answers_503(
    data_dir: Path,
) -> None:
    env = {"CONSUMERS": 2, "POOLS": "", "JOB_MODULES": "testjobs", "GRACEFUL_TIMEOUT": 10}
    with running(data_dir, **env) as svc:
        before = svc.roles()["consumer"]
        with Load(str(svc.http.base_url), clients=3, job="sleeper", data={"seconds": 0.2}) as load:
            wait_for(lambda: load.count() > 20, 20, what="load")
            svc.signal(signal.SIGHUP)
            wait_for(
                lambda: (
                    len(svc.roles()["consumer"]) == 2
                    and not set(before) & set(svc.roles()["consumer"])
                ),
                60,
                what="both consumers replaced",
            )
            seen = load.count()
            wait_for(lambda: load.count() > seen + 20, 20, what="more load after the roll")
        assert set(load.statuses) <= {200, 202}, load.statuses
        svc.wait_all_completed(load.accepted, 90)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HEARTBEAT_TTL": "1", "HEARTBEAT_INTERVAL": "1"}, "HEARTBEAT_TTL"),
        ({"LEASE_SECONDS": "0.5"}, "LEASE_SECONDS"),
        ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
        ({"EMBEDDED_MAXMEMORY": "lots"}, "EMBEDDED_MAXMEMORY"),
    ],
)
def test_settings_that_disagree_stop_the_start_with_exit_2_naming_the_setting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "supervisor"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "d"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert named in done.stderr


def test_the_embedded_server_has_a_memory_limit_and_answers_503_past_it(data_dir: Path) -> None:
    env = {"EMBEDDED_MAXMEMORY": "8mb", "CONSUMERS": 1, "POOLS": "", "JOB_MODULES": "testjobs"}
    with running(data_dir, **env) as svc:
        client = redis.Redis(unix_socket_path=str(data_dir / "valkey.sock"), decode_responses=True)
        try:
            assert client.config_get("maxmemory")["maxmemory"] == str(8 * 1024 * 1024)
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            client.close()
        svc.enqueue("sleeper", {"seconds": 60})  # holds the consumer: nothing finishes
        statuses = set()
        for _ in range(80):
            r = svc.http.post(
                "/enqueue-task", json={"jobName": "noop", "data": {"blob": "x" * 200_000}}
            )
            statuses.add(r.status_code)
            if r.status_code == 503:
                assert r.json()["error"] == "unavailable"
                break
        assert 503 in statuses


def test_metric_files_of_a_dead_consumer_are_folded_into_the_archive(data_dir: Path) -> None:
    env = {"CONSUMERS": 1, "POOLS": "", "JOB_MODULES": "testjobs"}
    with running(data_dir, **env) as svc:
        for job in [svc.enqueue("noop") for _ in range(5)]:
            svc.wait_status(job, "completed")

        def finished() -> float:
            total = 0.0
            for line in svc.http.get("/metrics").text.splitlines():
                if line.startswith("mq_jobs_completed_total{"):
                    total += float(line.rsplit(" ", 1)[1])
            return total

        before = finished()
        assert before >= 5
        (old,) = svc.roles()["consumer"]
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: svc.roles()["consumer"] not in ([], [old]), 20, what="a replacement")
        metrics = data_dir / "metrics"
        wait_for(lambda: not list(metrics.glob(f"*_{old}.db")), 10, what="its files folded")
        assert (metrics / "counter_archive.db").exists()
        assert finished() == before
