"""ACK_REPLICAS=N: an enqueue is answered once N replicas hold it (WAIT on the connection that
wrote it), else not_replicated within ACK_REPLICAS_TIMEOUT; other calls are not held up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import Service, Valkey, wait_for
from replication import Group, replica_of, replicated

from jobs import registry
from jobs.errors import NotReplicated
from jobs.queue import Queue
from jobs.settings import Settings
from jobs.store import Keys, SyncStore, calls

TIMEOUT = 0.5
registry.load()  # the built-in jobs (noop)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    with replicated(tmp_path, replicas=1) as found:
        yield found


def settings(server: Valkey, replicas: int = 1) -> Settings:
    return Settings(
        redis_url=server.url,
        pools={"default": 1},
        ack_replicas=replicas,
        ack_replicas_timeout=TIMEOUT,
    )


def consumer_up(server: Valkey, s: Settings) -> None:
    """A live consumer of pool default, by the server's clock (enqueue needs one)."""
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        done = SyncStore(client, s).run(
            calls.register(
                Keys(s.pool_prefix("default")), s, cid="c", pool="default", instance="i", info="{}"
            )
        )
        assert done.ok


def status(server: Valkey, job_id: str) -> str | None:
    with server.client() as client:
        found: str | None = client.hget("{mq:default}:job:" + job_id, "status")
        return found


def replicas_connected(server: Valkey) -> int:
    with server.client() as client:
        return int(client.info("replication")["connected_slaves"])


def test_with_ack_replicas_an_enqueue_is_answered_once_the_replica_holds_the_job(
    group: Group,
) -> None:
    s = settings(group.primary)
    consumer_up(group.primary, s)
    replica = group.replicas[0]

    async def main() -> None:
        queue = Queue.from_settings(s)
        try:
            one = await queue.enqueue("noop", {"n": 0}, job_id="first")
            assert one.created and status(replica, "first") == "queued"  # no waiting: it is there
            many = await asyncio.gather(
                *(queue.enqueue("noop", {"n": i}, job_id=f"j{i}") for i in range(50))
            )  # one batch (or a few), one WAIT each
            assert all(job.created for job in many)
            assert all(status(replica, f"j{i}") == "queued" for i in range(50))
        finally:
            await queue.close()

    asyncio.run(main())


def test_without_the_replica_an_enqueue_answers_not_replicated_within_the_timeout_and_a_retry_is_idempotent(
    group: Group, tmp_path: Path
) -> None:
    s = settings(group.primary)
    consumer_up(group.primary, s)
    group.replicas[0].stop()  # SIGKILL, by pid
    wait_for(lambda: replicas_connected(group.primary) == 0, 10, what="the replica to be gone")

    async def main() -> None:
        queue = Queue.from_settings(s)
        try:
            await queue.get("warm-up")  # the connection pool is open

            async def timed_enqueue(i: int) -> tuple[float, BaseException | None]:
                began = time.monotonic()
                try:
                    await queue.enqueue("noop", {"n": i}, job_id=f"j{i}")
                except NotReplicated as exc:
                    return time.monotonic() - began, exc
                return time.monotonic() - began, None

            async def reads() -> float:
                slowest = 0.0
                for _ in range(20):
                    began = time.monotonic()
                    await queue.get("j0")
                    slowest = max(slowest, time.monotonic() - began)
                    await asyncio.sleep(0.02)  # spread over the WAIT, not a synchronisation
                return slowest

            answers, slowest_read = await asyncio.gather(
                asyncio.gather(*(timed_enqueue(i) for i in range(40))), reads()
            )
            for took, error in answers:
                assert isinstance(error, NotReplicated) and error.code == "not_replicated"
                assert TIMEOUT * 0.9 <= took < TIMEOUT + 0.5
            assert "retry with the same jobId" in answers[0][1].detail  # type: ignore[union-attr]
            assert slowest_read < 0.2  # a WAIT holds its own connection only
            # the job was written and may run: it exists on the primary
            assert (await queue.get("j0")) is not None

            # a replica again: the retry with the same jobId creates nothing and is answered
            group.replicas.append(replica_of(group.primary, tmp_path / "replica-again"))
            again = await queue.enqueue("noop", {"n": 0}, job_id="j0")
            assert again.duplicate
            assert status(group.replicas[-1], "j0") == "queued"
        finally:
            await queue.close()

    asyncio.run(main())


def test_over_http_ack_replicas_answers_202_then_503_not_replicated_when_the_replica_stops(
    group: Group, tmp_path: Path
) -> None:
    svc = Service(
        tmp_path / "n", REDIS_URL=group.primary.url, POOLS="", CONSUMERS=1,
        ACK_REPLICAS=1, ACK_REPLICAS_TIMEOUT=TIMEOUT,
    )  # fmt: skip
    try:
        svc.start()
        job_id = svc.enqueue("noop")
        assert status(group.replicas[0], job_id) is not None
        svc.wait_status(job_id, "completed", 10)

        group.replicas[0].stop()
        wait_for(lambda: replicas_connected(group.primary) == 0, 10, what="the replica to be gone")
        answers: list[tuple[float, httpx.Response]] = []

        def enqueue() -> None:
            with httpx.Client(base_url=str(svc.http.base_url), timeout=10) as client:
                began = time.monotonic()
                r = client.post("/enqueue-task", json={"jobName": "noop", "data": {}})
                answers.append((time.monotonic() - began, r))

        threads = [threading.Thread(target=enqueue) for _ in range(8)]
        for t in threads:
            t.start()
        reads = []
        for _ in range(10):  # other requests meanwhile
            began = time.monotonic()
            assert svc.http.get(f"/jobs/{job_id}").status_code == 200
            reads.append(time.monotonic() - began)
        for t in threads:
            t.join(10)
        assert len(answers) == 8
        for took, r in answers:
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "not_replicated" and "may still exist" in r.json()["detail"]
            assert r.headers["retry-after"] == "1"
            assert took < TIMEOUT + 0.5
        assert max(reads) < 0.2

        bulk = svc.http.post("/enqueue-tasks", json={"jobs": [{"jobName": "noop"}]})
        assert bulk.status_code == 207
        assert bulk.json()["results"][0]["error"] == "not_replicated"
    finally:
        svc.stop()
