"""Redis Cluster: each pool's keys are one slot, pools live on different primaries, reads that
span pools merge them, and a primary killed under load is replaced by its replica while the
service answers 2xx or a JSON 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cluster import Cluster, clustered
from helpers import Service, wait_for
from test_sentinel_failover import Prober, all_completed, enqueued_and_completed

from jobs import registry
from jobs.connection import async_client, sync_client
from jobs.queue import Queue
from jobs.schedule import tick
from jobs.settings import Settings
from jobs.store import Outcome, SyncStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with clustered(tmp_path_factory.mktemp("cluster")) as found:
        yield found


def other_pool(cluster: Cluster) -> str:
    """A pool whose store lives on another primary than the default pool's."""
    home = cluster.owner("{mq:default}")
    return next(
        pool
        for pool in (f"pool{i}" for i in range(100))
        if cluster.owner(f"{{mq:{pool}}}") is not home
    )


def nodes_holding(cluster: Cluster, tag: str) -> set[int]:
    """The ports of the primaries that hold any key with hash tag `tag`."""
    found = set()
    for server in cluster.primaries:
        with server.client() as client:
            if client.info("replication")["role"] == "master" and any(
                True for _ in client.scan_iter(match=f"{tag}:*", count=1000)
            ):
                found.add(server.port)
    return found


def test_each_pool_is_one_slot_on_its_primary_and_reads_across_pools_merge(
    cluster: Cluster,
) -> None:
    registry.load()
    other = other_pool(cluster)
    settings = Settings.from_env(
        {
            "REDIS_URL": cluster.url,
            "POOLS": f"{other}:1",
            "CONSUMERS": "1",
            "KEEP_RESULT_SECONDS": "600",
        }
    )
    with cluster.client() as client:
        client.flushall()

    async def scenario() -> None:
        queue = Queue(async_client(settings), settings)
        store = queue.store
        try:
            for pool in ("default", other):
                assert (await store.register(f"c-{pool}", pool, "i", "{}", None)).ok
            done = await queue.enqueue("noop", {"n": 1}, job_id="one")
            dead = await queue.enqueue("noop", {"n": 2}, job_id="two", queue=other, attempts=1)
            assert (done.pool, dead.pool) == ("default", other)
            for pool, job_id, outcome in (
                ("default", "one", Outcome.COMPLETED),
                (other, "two", Outcome.DEAD),
            ):
                claimed = await store.claim(f"c-{pool}", pool, "i", 8)
                (job,) = claimed.tries
                assert job.id == job_id
                assert (await store.finish(f"c-{pool}", pool, job, outcome, payload="{}")).recorded
            assert (await queue.get("one") or {})["status"] == "completed"
            assert (await queue.get("two") or {})["status"] == "dead"
            listed = await queue.list_jobs()
            assert [j["id"] for j in listed["jobs"]] == ["two", "one"] and listed["cursor"] is None
            first = await queue.list_jobs(limit=1)
            rest = await queue.list_jobs(limit=1, cursor=first["cursor"])
            assert [j["id"] for j in first["jobs"] + rest["jobs"]] == ["two", "one"]
            stats = await queue.stats()
            assert (stats["completed"], stats["deadLettered"]) == (1, 1)
            assert {w["pool"] for w in stats["workers"]} == {"default", other}
            assert [i["id"] for i in (await queue.dlq())["items"]] == ["two"]
            assert (await queue.dlq_retry("two")).status == "queued"
            # a scheduler (shared keys, in their own slot) fires into a pool's store
            await queue.schedule("every-minute", "noop", every=60, options={"queue": other})
            due = await store.server_ms() + 61_000
        finally:
            await queue.close()
        sync = SyncStore(sync_client(settings), settings)
        try:
            fired = tick(sync, due)
            assert (
                len(fired) == 1 and sync.redis.hget(sync.at(other).job(fired[0]), "pool") == other
            )
            # pool `other` gone from POOLS: its jobs move to default's store, another primary
            moved = sync.move_pool(other, "default", now=due + 60_000)
            assert moved == 2  # the retried one and the scheduler's
            assert sync.redis.hget(sync.at("default").job("two"), "pool") == "default"
            assert not sync.redis.exists(sync.at(other).job("two"))
        finally:
            sync.redis.close()

    asyncio.run(scenario())
    home, away = nodes_holding(cluster, "{mq:default}"), nodes_holding(cluster, f"{{mq:{other}}}")
    assert len(home) == len(away) == 1 and home != away  # one slot each, on two primaries
    assert nodes_holding(cluster, "{mq}") == {cluster.owner("{mq}").port}


def test_the_service_on_a_cluster_runs_jobs_of_pools_on_two_primaries(
    cluster: Cluster, tmp_path: Path
) -> None:
    other = other_pool(cluster)
    with cluster.client() as client:
        client.flushall()
    svc = Service(
        tmp_path / "n", REDIS_URL=cluster.url, NODE_NAME="n", POOLS=f"{other}:1", CONSUMERS=1,
        JOB_MODULES="testjobs",
    )  # fmt: skip
    try:
        svc.start()
        here = svc.enqueue("noop", {"i": 1})
        there = svc.enqueue("noop", {"i": 2}, queue=other)
        failing = svc.enqueue(
            "message", {"message": "m", "shouldFail": True}, attempts=1, queue=other
        )
        assert svc.wait_status(here, "completed", 20)["pool"] == "default"
        assert svc.wait_status(there, "completed", 20)["pool"] == other
        svc.wait_status(failing, "dead", 20)
        stats = svc.http.get("/queue/stats").json()
        assert sorted(w["id"] for w in stats["workers"]) == sorted(["n-default-1", f"n-{other}-1"])
        assert (stats["completed"], stats["deadLettered"]) == (2, 1)
        listed = svc.http.get("/jobs").json()["jobs"]  # merged, newest first
        assert sorted(j["id"] for j in listed) == sorted([failing, there, here])
        assert [j["createdAt"] for j in listed] == sorted(
            (j["createdAt"] for j in listed), reverse=True
        )
        assert [i["id"] for i in svc.http.get("/dlq").json()["items"]] == [failing]
        assert svc.http.delete(f"/dlq/{failing}").status_code == 200
        assert svc.http.get("/ready").status_code == 200
        assert "mq_queue_waiting" in svc.http.get("/metrics").text
    finally:
        svc.stop()


def status(client: redis.RedisCluster, job_id: str) -> str | None:
    found: str | None = client.hget("{mq:default}:job:" + job_id, "status")
    return found


def test_a_primary_killed_on_a_cluster_is_replaced_by_its_replica_and_jobs_run_on(
    tmp_path: Path,
) -> None:
    with clustered(tmp_path / "c") as cluster:
        svc = Service(
            tmp_path / "n", REDIS_URL=cluster.url, NODE_NAME="n", POOLS="", CONSUMERS=2,
            JOB_MODULES="testjobs",
        )  # fmt: skip
        try:
            svc.start()
            for i in range(20):
                svc.wait_status(svc.enqueue("noop", {"i": i}), "completed", 20)
            primary = cluster.owner("{mq:default}")
            replica = cluster.replicas[cluster.primaries.index(primary)]
            with Prober(str(svc.http.base_url)) as probe:
                probe.wait_under_load()
                failed = time.monotonic()
                primary.stop()  # SIGKILL, by pid
                probes = iter(range(1_000_000))
                wait_for(
                    lambda: enqueued_and_completed(svc, next(probes)) is not None,
                    45,
                    0.05,
                    "an enqueue and its completion after the failover",
                )
                failover = time.monotonic() - failed
                wait_for(lambda: probe.accepted_after(failed) > 100, 30, what="enqueues after it")
            probe.check("cluster failover (kill -9)", failover)
            assert probe.statuses[503] > 0  # the switch was seen, as JSON 503s
            assert cluster.owner("{mq:default}") is replica
            # every job accepted a second before the kill, and every one after it, completes (one
            # the old primary acknowledged just before it died may be missing: asynchronous
            # replication, as under Sentinel)
            kept = [j for at, j in probe.accepted if at < failed - 1 or at > failed]
            with cluster.client() as client:
                wait_for(
                    lambda: all_completed({j: status(client, j) for j in kept}),
                    30,
                    0.2,
                    f"{len(kept)} jobs to complete",
                )
            svc.wait_ready(10)
        finally:
            svc.stop()
