"""An external Redis shared by several nodes: hosts that vanish, a store that restarts or fills."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Load, Service, Valkey, kill_tree, running, wait_for

pytestmark = pytest.mark.slow

# How much an AOF `everysec` server killed with -9 may lose: the last second, or two when its
# disk is slow (a write waits up to 2 s for the fsync before it, aof.c flushAppendOnlyFile).
AOF_WINDOW = 2.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[list[Valkey]]:
    """A Valkey of the test's own (a list: a test that restarts it puts the new one in)."""
    servers = [Valkey(tmp_path / "store")]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def node(tmp: Path, name: str, server: Valkey, **env: object) -> Service:
    return Service(
        tmp / name, REDIS_URL=server.url, NODE_NAME=name, POOLS="", JOB_MODULES="testjobs", **env
    )


def test_a_vanished_host_has_its_jobs_taken_over_by_another_node(
    tmp_path: Path, store: list[Valkey]
) -> None:
    server = store[0]
    a = node(tmp_path, "a", server, CONSUMERS=1, HEARTBEAT_TTL=3)
    b = node(tmp_path, "b", server, CONSUMERS=1, HEARTBEAT_TTL=3)
    try:
        a.start()
        b.start()
        wait_for(
            lambda: len(a.http.get("/queue/stats").json()["workers"]) == 2, 10, what="both nodes"
        )
        jobs = [a.enqueue("sleeper", {"seconds": 2}) for _ in range(8)]
        on_a = [j for j in jobs if a.job(j)["assignedWorker"] == "a-default-1"]
        assert on_a and len(on_a) < len(jobs)  # least-loaded spans both nodes
        wait_for(lambda: all(a.job(j)["status"] == "active" for j in on_a), 10)
        vanished = time.time()
        kill_tree(a.pid)  # the whole host: master, workers, consumers
        results = {j: b.wait_status(j, "completed", 30)["result"] for j in jobs}
        taken = [results[j]["started"] - vanished for j in on_a]
        print(
            f"host vanished: {len(on_a)} jobs taken over by node b after {min(taken):.2f}-{max(taken):.2f}s"
        )
        assert all(results[j]["worker"] == "b-default-1" for j in on_a)
        assert max(taken) < 3 + 2 + 2  # heartbeat TTL, one sweep, and the two-second jobs ahead
        stats = b.http.get("/queue/stats").json()
        assert [w["id"] for w in stats["workers"]] == ["b-default-1"]
    finally:
        a.stop()
        b.stop()


def test_a_second_master_with_the_same_node_name_refuses_to_start(
    tmp_path: Path, store: list[Valkey]
) -> None:
    server = store[0]
    first = node(tmp_path, "same", server)
    second = node(tmp_path, "same", server)
    try:
        first.start()
        second.start(ready=False)
        assert second.wait_exit(30) == 1
        assert "another live master" in second.tail()
        # a stale claim left by a master that crashed does not block its restart
        kill_tree(first.pid)
        again = node(tmp_path, "same", server)
        try:
            again.start()
        finally:
            again.stop()
    finally:
        first.stop()
        second.stop()


def test_external_redis_restart_keeps_the_jobs_and_the_service_recovers(tmp_path: Path) -> None:
    store = tmp_path / "aof-store"
    servers = [Valkey(store, appendonly=True)]
    server = servers[0]
    svc = node(tmp_path, "n", server, CONSUMERS=2)
    try:
        svc.start()
        with Load(str(svc.http.base_url), clients=2) as load:
            wait_for(lambda: load.count() > 200, 20, what="load")
            safe = list(load.accepted)
            time.sleep(AOF_WINDOW + 0.5)  # the load goes on: what `safe` holds ages past it
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            down = time.monotonic()
            wait_for(lambda: load.statuses.get(503, 0) > 0, 10, what="503s while it is down")
            server = Valkey(store, port=server.port, appendonly=True)
            servers.append(server)
            svc.wait_ready(30)
            before = load.count()
            wait_for(lambda: load.count() > before + 100, 30, what="enqueues after the restart")
            back = time.monotonic() - down
        print(f"external redis restart: service ready {back:.2f}s after the kill; {load.statuses}")
        assert 500 not in load.statuses
        try:
            svc.wait_all_completed(safe, 60)
        except AssertionError as exc:
            log = (store / "valkey.log").read_text()
            late = [line for line in log.splitlines() if "fsync is taking too long" in line]
            raise AssertionError(f"{exc}; the server's late AOF writes: {late}") from None
    finally:
        svc.stop()
        for each in servers:
            each.stop()


def test_out_of_memory_answers_503_and_keeps_what_was_queued(
    tmp_path: Path, store: list[Valkey]
) -> None:
    server = store[0]
    with server.client() as c:
        c.config_set("maxmemory", 4 * 1024 * 1024)
        c.config_set("maxmemory-policy", "noeviction")
    with running(
        tmp_path / "d", REDIS_URL=server.url, CONSUMERS=1, POOLS="", JOB_MODULES="testjobs"
    ) as svc:
        blocker = svc.enqueue("sleeper", {"seconds": 30})
        accepted, refused = [], Counter[int]()
        payload = {"blob": "x" * 200_000}
        for _ in range(60):
            r = svc.http.post("/enqueue-task", json={"jobName": "noop", "data": payload})
            if r.status_code == 202:
                accepted.append(r.json()["jobId"])
            else:
                refused[r.status_code] += 1
                assert r.json()["error"] == "unavailable"
        assert refused[503] > 0 and set(refused) == {503}
        states = svc.statuses([blocker, *accepted])
        assert all(s is not None for s in states.values())


def test_an_evicting_redis_is_reported_at_start_and_by_ready(
    tmp_path: Path, store: list[Valkey]
) -> None:
    server = store[0]
    with server.client() as c:
        c.config_set("maxmemory-policy", "allkeys-lru")
    with running(tmp_path / "d", REDIS_URL=server.url) as svc:
        warnings = svc.http.get("/ready").json()["warnings"]
        assert warnings and "allkeys-lru" in warnings[0]
        assert "maxmemory-policy is allkeys-lru" in svc.log_path.read_text()
