"""The queue layer: enqueue, read, cancel, stats and the dead-letter queue, over one Redis.

The HTTP routes call this; so can an application, without an HTTP hop:

    queue = Queue.from_settings()
    job = await queue.enqueue("calculation", {"numbers": [1, 2]}, attempts=2)
    record = await queue.get(job.id)
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobs import keys
from jobs.batch import ScriptBatcher
from jobs.connection import async_client, eviction_warning
from jobs.errors import Conflict, InvalidJob, NotFound, Unavailable
from jobs.registry import registry
from jobs.scripts import Scripts
from jobs.settings import Settings, get_settings

PRIORITY_LIMIT = 1000
# ready-queue score: FIFO by creation time within a priority, higher priority first
PRIORITY_STEP = 2**42
FINISHED = ("completed", "dead", "cancelled")


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | str | bytes | None) -> str | None:
    """Milliseconds since the epoch as ISO-8601 UTC text with milliseconds."""
    if ms is None or ms == "" or ms == b"":
        return None
    value = int(ms)
    stamp = datetime.fromtimestamp(value / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}Z"


def _json(raw: str | None) -> Any:
    """A stored JSON value; anything else (never written by us) reads as null."""
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What an enqueue did: the job's id, where it went and whether it already existed."""

    id: str
    name: str
    data: Any
    status: str
    worker: str | None
    pool: str
    duplicate: bool = False


@dataclass(frozen=True)
class Backoff:
    kind: str
    delay: float

    @cached_property
    def json(self) -> str:
        return _dumps({"type": self.kind, "delay": self.delay})

    def seconds(self, attempt: int, cap: float) -> float:
        """Delay before the try after `attempt` failed tries."""
        if self.kind == "fixed":
            return min(self.delay, cap)
        return float(min(self.delay * 2 ** max(attempt - 1, 0), cap))


@cache
def _default_backoff(delay: float) -> Backoff:
    return Backoff("exponential", delay)


def parse_backoff(raw: Any, default: float) -> Backoff:
    if raw is None:
        return _default_backoff(default)
    if not isinstance(raw, dict):
        raise InvalidJob("options.backoff", "options.backoff must be an object")
    kind = raw.get("type", "exponential")
    if kind not in ("exponential", "fixed"):
        raise InvalidJob(
            "options.backoff.type", "options.backoff.type must be exponential or fixed"
        )
    delay = raw.get("delay", default)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 86_400:
        raise InvalidJob("options.backoff.delay", "options.backoff.delay must be 0-86400 seconds")
    return Backoff(kind, float(delay))


def record(raw: dict[str, str]) -> dict[str, Any]:
    """A stored job hash in the shape of GET /jobs/{id}."""
    progress = _json(raw.get("progress"))
    return {
        "id": raw["id"],
        "jobName": raw.get("name"),
        "status": raw.get("status"),
        "data": _json(raw.get("data")),
        "result": _json(raw.get("result")),
        "error": raw.get("error") or None,
        "attempts": int(raw.get("attempts") or 0),
        "maxAttempts": int(raw.get("maxAttempts") or 0),
        "assignedWorker": raw.get("worker") or None,
        "pool": raw.get("pool"),
        "priority": int(raw.get("priority") or 0),
        "progress": progress,
        "createdAt": iso(raw.get("createdAt")),
        "startedAt": iso(raw.get("startedAt")),
        "completedAt": iso(raw.get("completedAt")),
    }


def dlq_item(raw: dict[str, str]) -> dict[str, Any]:
    return {
        "id": raw["id"],
        "jobName": raw.get("name"),
        "data": _json(raw.get("data")),
        "pool": raw.get("pool"),
        "attempts": int(raw.get("attempts") or 0),
        "error": raw.get("error") or None,
        "traceback": raw.get("traceback") or None,
        "failedAt": iso(raw.get("failedAt")),
    }


class Queue:
    """Enqueue and inspect jobs. All methods are coroutines over one Redis client."""

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        self.redis = redis
        self.settings = settings or get_settings()
        self.prefix = self.settings.prefix
        self.scripts = Scripts(redis)
        self._enqueue = ScriptBatcher(redis, self.scripts.enqueue)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Queue:
        """A queue on its own connection pool, from the settings (REDIS_URL)."""
        settings = settings or get_settings()
        return cls(async_client(settings), settings)

    async def close(self) -> None:
        await self.redis.aclose()

    async def enqueue(
        self,
        name: str,
        data: Any = None,
        *,
        job_id: str | None = None,
        delay: float = 0,
        attempts: int | None = None,
        backoff: dict[str, Any] | None = None,
        timeout: float | None = None,
        priority: int = 0,
        queue: str | None = None,
    ) -> Enqueued:
        """Put a job on the least-loaded live consumer of its pool.

        Raises InvalidJob for an unknown job or pool or a bad option, Unavailable when the
        pool has no live consumer or a full backlog (or Redis is down). A `job_id` that exists
        already returns that job with `duplicate=True` and creates nothing.
        """
        spec = registry.get(name)
        if spec is None:
            raise InvalidJob("jobName", f"unknown jobName {name!r}")
        pool = queue or spec.pool
        if pool not in self.settings.pools:
            raise InvalidJob("options.queue", f"unknown queue (pool) {pool!r}")
        if isinstance(priority, bool) or not -PRIORITY_LIMIT <= priority <= PRIORITY_LIMIT:
            raise InvalidJob("options.priority", f"priority must be within ±{PRIORITY_LIMIT}")
        tries = attempts if attempts is not None else spec.attempts
        tries = tries if tries is not None else self.settings.default_attempts
        if not 1 <= tries <= 1000:
            raise InvalidJob("options.attempts", "options.attempts must be 1-1000")
        limit = timeout if timeout is not None else spec.timeout
        limit = limit if limit is not None else self.settings.default_timeout
        if not 0 < limit <= 86_400:
            raise InvalidJob("options.timeout", "options.timeout must be 0-86400 seconds")
        if not 0 <= delay <= 365 * 86_400:
            raise InvalidJob("options.delay", "options.delay must be 0 to a year in seconds")
        policy = parse_backoff(
            backoff if backoff is not None else spec.backoff, self.settings.default_backoff
        )
        if job_id is None:
            ident = secrets.token_hex(16)
        elif not job_id or len(job_id) > 128 or any(c in "{}:\x7f" or c <= " " for c in job_id):
            raise InvalidJob(
                "options.jobId",
                "jobId must be 1-128 characters, no spaces, control characters, colons or braces",
            )
        else:
            ident = job_id
        created = now_ms()
        score = created - priority * PRIORITY_STEP
        try:
            code, status, worker = await self._enqueue(
                keys=[
                    keys.job(self.prefix, ident),
                    keys.workers(self.prefix, pool),
                    keys.delayed(self.prefix, pool),
                ],
                args=[
                    self.prefix, ident, created, int(delay * 1000), score, self.settings.backlog_limit,
                    name, pool, _dumps(data), tries, limit, policy.json, priority,
                ],
            )  # fmt: skip
        except RedisError as exc:
            raise Unavailable(f"the queue store is unavailable: {type(exc).__name__}") from exc
        if code == -1:
            raise Unavailable(f"pool {pool!r} has no live consumer", retry_after=2)
        if code == -2:
            raise Unavailable(
                f"pool {pool!r} has {self.settings.backlog_limit} jobs waiting", retry_after=5
            )
        if code == 0:
            stored = await self.get(ident)
            return Enqueued(
                ident,
                stored["jobName"] if stored else name,
                stored["data"] if stored else data,
                status,
                worker or None,
                stored["pool"] if stored else pool,
                duplicate=True,
            )
        return Enqueued(ident, name, data, status, worker or None, pool)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's record (the shape of GET /jobs/{id}), or None when unknown or expired."""
        raw = await self.redis.hgetall(keys.job(self.prefix, job_id))
        return record(raw) if raw else None

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued, delayed or active job. NotFound if unknown, Conflict if finished."""
        outcome, previous = await self.scripts.cancel(
            keys=[keys.job(self.prefix, job_id)],
            args=[self.prefix, job_id, now_ms(), self.settings.keep_result_seconds * 1000],
        )
        if outcome == "missing":
            raise NotFound(f"no job {job_id!r}")
        if outcome == "finished":
            raise Conflict(f"job {job_id!r} is already {previous}")
        stored = await self.get(job_id)
        assert stored is not None
        return stored

    async def pools(self) -> list[str]:
        known = set(self.settings.pools) | set(await self.redis.smembers(keys.pools(self.prefix)))
        return sorted(known)

    async def stats(self) -> dict[str, Any]:
        """Counts over every pool and every consumer of the fleet, as GET /queue/stats shows."""
        now = now_ms()
        pools = await self.pools()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.stats(self.prefix))
            for pool in pools:
                pipe.zrange(keys.workers(self.prefix, pool), 0, -1, withscores=True)
                pipe.zcount(keys.delayed(self.prefix, pool), "-inf", now)
                pipe.zcount(keys.delayed(self.prefix, pool), f"({now}", "+inf")
            head = await pipe.execute()
        counters: dict[str, str] = head[0]
        consumers: list[tuple[str, str, bool]] = []
        waiting = delayed = 0
        for i, pool in enumerate(pools):
            members, due, later = head[1 + 3 * i : 4 + 3 * i]
            waiting += due
            delayed += later
            consumers += [(cid, pool, expiry >= now) for cid, expiry in members]
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, _, _ in consumers:
                pipe.zcard(keys.ready(self.prefix, cid))
                pipe.zcard(keys.active(self.prefix, cid))
                pipe.hgetall(keys.worker(self.prefix, cid))
            rows = await pipe.execute()
        active = 0
        workers = []
        for i, (cid, pool, live) in enumerate(consumers):
            queued, running, info = rows[3 * i : 3 * i + 3]
            waiting += queued
            active += running
            if not live:
                continue
            meta = json.loads(info.get("info", "{}"))
            workers.append(
                {
                    "id": cid,
                    "pool": pool,
                    "host": meta.get("host"),
                    "pid": meta.get("pid"),
                    "active": running,
                    "queued": queued,
                    "concurrency": meta.get("concurrency", 0),
                    "lastSeen": iso(info.get("lastSeen")),
                }
            )
        return {
            "waiting": waiting,
            "active": active,
            "delayed": delayed,
            "completed": int(counters.get("completed", 0)),
            "failed": int(counters.get("failed", 0)),
            "deadLettered": int(counters.get("deadLettered", 0)),
            "totalConcurrency": sum(int(w["concurrency"] or 0) for w in workers),
            "workers": workers,
        }

    async def store_warnings(self) -> list[str]:
        """Problems of the Redis server itself that put jobs at risk."""
        try:
            policy = (await self.redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        except ResponseError:  # CONFIG is often disabled on managed servers
            return []
        warning = eviction_warning(policy)
        return [warning] if warning else []

    async def live_consumers(self) -> int:
        """How many consumers of any pool have a fresh heartbeat."""
        now = now_ms()
        pools = await self.pools()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zcount(keys.workers(self.prefix, pool), now, "+inf")
            counts = await pipe.execute()
        return int(sum(counts))

    # dead-letter queue

    async def dlq(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Dead-lettered jobs, newest first."""
        dlq = keys.dlq(self.prefix)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(dlq, offset, offset + limit - 1)
            pipe.zcard(dlq)
            pipe.hget(keys.stats(self.prefix), "dlqDropped")
            ids, total, dropped = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for ident in ids:
                pipe.hgetall(keys.job(self.prefix, ident))
            raws = await pipe.execute()
        items = [dlq_item(raw) for raw in raws if raw]
        return {"items": items, "total": total, "dropped": int(dropped or 0)}

    async def dlq_get(self, job_id: str) -> dict[str, Any]:
        if await self.redis.zscore(keys.dlq(self.prefix), job_id) is None:
            raise NotFound(f"no dead-lettered job {job_id!r}")
        raw = await self.redis.hgetall(keys.job(self.prefix, job_id))
        if not raw:
            raise NotFound(f"no dead-lettered job {job_id!r}")
        return dlq_item(raw)

    async def dlq_delete(self, job_id: str) -> dict[str, Any]:
        item = await self.dlq_get(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.dlq(self.prefix), job_id)
            pipe.delete(keys.job(self.prefix, job_id))
            await pipe.execute()
        return item

    async def dlq_retry(self, job_id: str) -> Enqueued:
        """Run a dead-lettered job again, under the same id, with fresh tries."""
        item = await self.dlq_get(job_id)
        raw = await self.redis.hgetall(keys.job(self.prefix, job_id))
        backoff = _json(raw.get("backoff"))
        failed_at = await self.redis.zscore(keys.dlq(self.prefix), job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.dlq(self.prefix), job_id)
            pipe.delete(keys.job(self.prefix, job_id))
            await pipe.execute()
        try:
            return await self.enqueue(
                item["jobName"],
                item["data"],
                job_id=job_id,
                attempts=int(raw.get("maxAttempts") or self.settings.default_attempts),
                backoff=backoff,
                timeout=float(raw.get("timeout") or self.settings.default_timeout),
                priority=int(raw.get("priority") or 0),
                queue=item["pool"],
            )
        except BaseException:
            # not taken: the entry goes back to the dead-letter queue as it was
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(keys.job(self.prefix, job_id), mapping=raw)
                pipe.zadd(keys.dlq(self.prefix), {job_id: failed_at or now_ms()})
                await pipe.execute()
            raise
