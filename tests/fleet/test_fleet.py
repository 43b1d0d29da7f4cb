"""A fleet on one Valkey, tested as real hosts on one machine: each `python -m supervisor` in a
network namespace of its own (tests/netns.py), reaching the Valkey over a bridge, so that a
host's link can be cut and restored like a pulled cable."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import Service, Valkey, alive, children, kill_tree, wait_for
from netns import Host, Network, network

from jobs.store import Keys

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2",
    ),
]

HEARTBEAT_TTL = 3.0


@dataclass
class Fleet:
    net: Network
    server: Valkey
    tmp: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def node(self, name: str, **env: object) -> Service:
        """A master on a host of its own: 1 HTTP worker, 2 consumers of 2 slots each."""
        host = self.hosts[name] = self.net.host()
        settings: dict[str, object] = {
            "REDIS_URL": f"redis://{self.net.gateway}:{self.server.port}/0",
            "NODE_NAME": name,
            "POOLS": "",
            "JOB_MODULES": "testjobs",
            "WEB_CONCURRENCY": 1,
            "CONSUMERS": 2,
            "CONSUMER_CONCURRENCY": 2,
            "HEARTBEAT_TTL": HEARTBEAT_TTL,
        }
        service = Service(
            self.tmp / name, host=host.address, wrap=host.exec(), **{**settings, **env}
        )
        self.services.append(service)
        return service

    def start(self, *services: Service) -> None:
        """Start them together (each master takes a few seconds to come up)."""
        for service in services:
            service.start(ready=False)
        for service in services:
            service.wait_ready()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A bridge with a Valkey on it; every master started on it is stopped by pid, every link
    restored first, and every namespace, veth and the bridge removed, whatever happened."""
    with network() as net, contextlib.ExitStack() as stack:
        server = Valkey(tmp_path / "store", also_bind=net.gateway)
        stack.callback(server.stop)
        fleet = Fleet(net, server, tmp_path)

        def stop_all() -> None:
            for host in fleet.hosts.values():
                with contextlib.suppress(RuntimeError):
                    net.restore(host)
            for service in fleet.services:
                service.stop()

        stack.callback(stop_all)
        yield fleet


def workers(service: Service) -> list[str]:
    stats = service.http.get("/queue/stats").json()
    return [w["id"] for w in stats["workers"]]


def records(server: Valkey, ids: list[str]) -> dict[str, dict[str, str]]:
    """Each job's stored record, read straight from the Valkey."""
    with server.client() as client:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall("{mq:default}:job:" + job_id)
        return dict(zip(ids, pipe.execute(), strict=True))


def tries(record: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(record.get("tries") or "[]")
    return found


def completed_events(server: Valkey) -> Counter[str]:
    """How often each job's completion was recorded, from the store's event stream."""
    with server.client() as client:
        events = client.xrange("{mq:default}:events")
    return Counter(f["id"] for _, f in events if f.get("type") == "completed")


CONSUMERS = {"a-default-1", "a-default-2", "b-default-1", "b-default-2"}


def test_two_hosts_on_one_valkey_share_their_consumers_their_jobs_and_their_node_names(
    fleet: Fleet,
) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    fleet.start(a, b)
    # every consumer of both hosts is in each host's stats, and no id is used twice
    for service in (a, b):
        wait_for(lambda s=service: set(workers(s)) == CONSUMERS, 10, what="both hosts' consumers")
        ids = workers(service)
        assert len(ids) == len(set(ids)) == 4
    stats = a.http.get("/queue/stats").json()
    assert stats["totalConcurrency"] == 8
    pids = {w["id"]: w["pid"] for w in stats["workers"]}
    assert {pids[c] for c in CONSUMERS} == {*a.roles()["consumer"], *b.roles()["consumer"]}

    # least-loaded assignment spans both hosts: 8 jobs of 2 s, one per free slot
    jobs = [(a if i % 2 else b).enqueue("sleeper", {"seconds": 2}) for i in range(8)]
    # a job enqueued through one host is read through the other
    assigned = Counter(
        (b if i % 2 else a).job(job_id)["assignedWorker"] for i, job_id in enumerate(jobs)
    )
    print(f"assignment over both hosts: {dict(assigned)}")
    assert assigned == dict.fromkeys(CONSUMERS, 2)
    results = {j: (b if i % 2 else a).wait_status(j, "completed", 20) for i, j in enumerate(jobs)}
    ran_on = Counter(r["result"]["worker"] for r in results.values())
    assert set(ran_on) == CONSUMERS

    # a master on a third host that takes a live host's NODE_NAME refuses to start
    again = fleet.node("a-again", NODE_NAME="a")
    again.start(ready=False)
    assert again.wait_exit(30) == 1
    assert "another live master" in again.tail() and "NODE_NAME=a" in again.tail()
    assert set(workers(a)) == CONSUMERS  # and the running one is left alone


def held(recs: dict[str, dict[str, str]], node: str, status: str) -> list[str]:
    """The jobs in `status` assigned to a consumer of `node`."""
    return [j for j, r in recs.items() if r["status"] == status and r["worker"].startswith(node)]


def fill_every_slot(a: Service, server: Valkey, seconds: float) -> list[str]:
    """12 jobs over 4 consumers of 2 slots: each runs 2 and has 1 waiting."""
    jobs = [a.enqueue("sleeper", {"seconds": seconds}) for _ in range(12)]

    def all_slots_busy() -> bool:
        states = Counter(r["status"] for r in records(server, jobs).values())
        return states["active"] == 8 and states["queued"] == 4

    wait_for(all_slots_busy, 10, what="8 jobs running and 4 waiting")
    return jobs


def take_over(
    a: Service, server: Valkey, jobs: list[str], running_on_b: list[str], lost: float, what: str
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Wait for every job to complete on a after b was lost at `lost` (epoch s); print and check
    when b's running jobs were handed back and started again. Returns (results, records)."""
    results = {j: a.wait_status(j, "completed", 30) for j in jobs}
    done = records(server, jobs)
    handed_back = [
        float(t["endedAt"]) / 1000 - lost
        for j in running_on_b
        for t in tries(done[j])
        if t["outcome"] == "crashed"
    ]
    restarted = [results[j]["result"]["started"] - lost for j in running_on_b]
    print(
        f"{what}: b's 4 running jobs handed back after {min(handed_back):.2f}-"
        f"{max(handed_back):.2f}s, started again on a after {min(restarted):.2f}-"
        f"{max(restarted):.2f}s (HEARTBEAT_TTL {HEARTBEAT_TTL:g}s)"
    )
    assert len(handed_back) == 4 and max(handed_back) < HEARTBEAT_TTL + 2
    return results, done


def test_a_host_cut_off_the_network_loses_its_jobs_to_the_other_host_and_records_nothing_when_it_returns(
    fleet: Fleet,
) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    fleet.start(a, b)
    wait_for(lambda: set(workers(a)) == CONSUMERS, 10, what="both hosts' consumers")
    jobs = fill_every_slot(a, fleet.server, seconds=2)
    before = records(fleet.server, jobs)
    running_on_b, waiting_on_b = held(before, "b", "active"), held(before, "b", "queued")
    assert len(running_on_b) == 4 and len(waiting_on_b) == 2

    cut = time.time()
    fleet.net.cut(fleet.hosts["b"])
    wait_for(lambda: set(workers(a)) == CONSUMERS - {"b-default-1", "b-default-2"}, 15,
             what="host b's consumers to lapse")  # fmt: skip
    lapsed = time.time() - cut
    print(f"link cut: b's consumers gone from stats after {lapsed:.2f}s")
    results, done = take_over(a, fleet.server, jobs, running_on_b, cut, "link cut")
    for job_id in jobs:
        record, its_tries = done[job_id], tries(done[job_id])
        outcomes = [(t["consumer"][0], t["outcome"]) for t in its_tries]
        if job_id in running_on_b:
            # one lost lease: one try of b that crashed (not counted as a try), one of a
            assert outcomes == [("b", "crashed"), ("a", "completed")], outcomes
        else:
            assert outcomes == [("a", "completed")], outcomes
        assert record["attempts"] == "1" and results[job_id]["result"]["attempt"] == 1
    assert a.http.get("/queue/stats").json()["completed"] == 12

    # the link comes back: b's consumers find they lost their slots, and what their old tries
    # send late (finishes of jobs that ended while cut off) is refused by the tokens
    fleet.net.restore(fleet.hosts["b"])
    for cid in ("b-default-1", "b-default-2"):
        wait_for(lambda c=cid: f"consumer {c} lost its slot" in b.tail(400), 30,
                 what=f"{cid} to find it lost its slot")  # fmt: skip
    wait_for(lambda: set(workers(a)) == CONSUMERS, 20, what="b's consumers back, in new processes")
    b.wait_ready()
    late = b.log_path.read_text().count("no longer held its job")
    print(f"link restored: b's consumers restarted; {late} late finishes of b refused")
    assert records(fleet.server, jobs) == done  # nothing of b's old tries was recorded
    assert completed_events(fleet.server) == dict.fromkeys(jobs, 1)
    assert b.http.get("/queue/stats").json()["completed"] == 12
    # the fleet works on: a new job through b runs once
    job_id = b.enqueue("sleeper", {"seconds": 0})
    a.wait_status(job_id, "completed", 10)
    assert [t["outcome"] for t in tries(records(fleet.server, [job_id])[job_id])] == ["completed"]


def test_a_host_killed_whole_has_its_waiting_and_running_jobs_taken_over_within_the_heartbeat_window(
    fleet: Fleet,
) -> None:
    a, b = fleet.node("a"), fleet.node("b")
    fleet.start(a, b)
    wait_for(lambda: set(workers(a)) == CONSUMERS, 10, what="both hosts' consumers")
    jobs = fill_every_slot(a, fleet.server, seconds=2)
    before = records(fleet.server, jobs)
    running_on_b = held(before, "b", "active")
    assert len(running_on_b) == 4
    tree = [b.pid, *children(b.pid)]
    killed = time.time()
    kill_tree(b.pid)  # master, HTTP worker, consumers: kill -9, nobody hands anything back
    wait_for(lambda: not any(alive(pid) for pid in tree), 5, what="host b's processes to die")
    _, done = take_over(a, fleet.server, jobs, running_on_b, killed, "host killed")
    for job_id in jobs:
        outcomes = [(t["consumer"][0], t["outcome"]) for t in tries(done[job_id])]
        expected = [("b", "crashed")] if job_id in running_on_b else []
        assert outcomes == [*expected, ("a", "completed")], outcomes
    assert completed_events(fleet.server) == dict.fromkeys(jobs, 1)
    stats = a.http.get("/queue/stats").json()
    assert stats["completed"] == 12 and stats["waiting"] == stats["active"] == 0
    assert set(workers(a)) == {"a-default-1", "a-default-2"}
    keys = Keys("{mq:default}")
    with fleet.server.client() as client:  # nothing stranded in the dead host's keys
        for cid in ("b-default-1", "b-default-2"):
            assert client.zcard(keys.active(cid)) == client.zcard(keys.ready(cid)) == 0
        assert client.zcard("{mq:default}:delayed:default") == 0
    os.kill(a.pid, signal.SIGTERM)
    assert a.wait_exit(30) == 0
