"""The queue layer: enqueue, read, list, cancel, stats, history and the dead-letter queue, over
one Redis.

The HTTP routes call this; so can an application, without an HTTP hop:

    queue = Queue.from_settings()
    job = await queue.enqueue("calculation", {"numbers": [1, 2]}, attempts=2)
    record = await queue.get(job.id)
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from jobs import codec, ids, limits, metrics, otel, tracing
from jobs.connection import async_client, eviction_warning
from jobs.errors import Conflict, InvalidJob, NotFound, NotReplicated, QueueError, Unavailable
from jobs.registry import registry
from jobs.schedule import NEXT_RUNS, Scheduler, parse_time
from jobs.settings import Settings, get_settings
from jobs.store import HISTORY_FIELDS, Status, Store, SyncStore, Unreplicated, Written, calls

T = TypeVar("T")

# a bulk DLQ retry or delete handles at most this many jobs per call
BULK_MAX = 1000
# a listing cursor: the score (createdAt) and the id of the last job examined
CURSOR_PATTERN = "[0-9]+:[^:]+"


def iso(ms: int | str | bytes | None) -> str | None:
    """Milliseconds since the epoch as ISO-8601 UTC text with milliseconds."""
    if ms is None or ms == "" or ms == b"":
        return None
    value = int(ms)
    stamp = datetime.fromtimestamp(value / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}Z"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(raw: str | None) -> Any:
    """A stored JSON value; anything an answer could not carry (never written by us: NaN,
    a lone surrogate, text that is not JSON) reads as null, so no record fails to show."""
    if raw is None or raw == "":
        return None
    try:
        value = codec.loads(raw, parse_constant=_no_constant)
        if "\\ud" in raw or "\\uD" in raw:
            json.dumps(value, ensure_ascii=False).encode()
        return value
    except ValueError:  # UnicodeEncodeError included
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_data(data: Any) -> bytes:
    """A job's data as stored: JSON in UTF-8. InvalidJob for what JSON cannot carry."""
    try:
        return codec.dumps(data)
    except UnicodeEncodeError:
        raise InvalidJob(
            "data", "data holds a lone surrogate (\\ud800-\\udfff), not text"
        ) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidJob("data", f"data cannot be stored as JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Enqueued:
    """What an enqueue did: the job's id, where it went and whether it already existed."""

    id: str
    name: str
    data: Any
    status: str
    worker: str | None
    pool: str
    duplicate: bool = False  # its job_id existed
    deduplicated: bool = False  # the job of its dedupe key stands for it

    @property
    def created(self) -> bool:
        return not (self.duplicate or self.deduplicated)


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
    top = limits.MAX_BACKOFF_DELAY
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= top:
        raise InvalidJob(
            "options.backoff.delay", f"options.backoff.delay must be 0-{top:g} seconds"
        )
    return Backoff(kind, float(delay))


@dataclass(frozen=True, slots=True)
class Resolved:
    """A job as the enqueue script stores it: its options checked, its defaults filled in."""

    job_id: str
    name: str
    pool: str
    data: bytes
    delay_ms: int
    priority: int
    attempts: int
    timeout: float
    backoff: str
    dedupe: tuple[str, str, int] | None = None  # key, mode, ttl ms
    group: str | None = None


DEDUPE_MODES = ("simple", "throttle", "debounce")


def parse_dedupe(raw: Any) -> tuple[str, str, int] | None:
    """options.dedupe: {"key", "ttl" (s), "mode"} as (key, mode, ttl ms)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidJob("options.dedupe", "options.dedupe must be an object")
    key, mode, ttl = raw.get("key"), raw.get("mode", "simple"), raw.get("ttl")
    if not isinstance(key, str) or not 0 < len(key) <= limits.MAX_DEDUPE_KEY:
        raise InvalidJob(
            "options.dedupe.key", f"options.dedupe.key must be 1-{limits.MAX_DEDUPE_KEY} characters"
        )
    if mode not in DEDUPE_MODES:
        raise InvalidJob(
            "options.dedupe.mode", "options.dedupe.mode must be simple, throttle or debounce"
        )
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= limits.MAX_DELAY:
        raise InvalidJob("options.dedupe.ttl", "options.dedupe.ttl must be 0 to a year in seconds")
    return key, mode, max(int(ttl * 1000), 1)


def resolve(
    settings: Settings,
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
    dedupe: Mapping[str, Any] | None = None,
    group: str | None = None,
) -> Resolved:
    """Check a job's options against its registration and the limits, and fill in defaults.
    Raises InvalidJob for an unknown job or pool or a bad option."""
    spec = registry.get(name)
    if spec is None:
        raise InvalidJob("jobName", f"unknown jobName {name!r}")
    pool = queue or spec.pool
    if pool not in settings.pools:
        raise InvalidJob("options.queue", f"unknown queue (pool) {pool!r}")
    if isinstance(priority, bool) or not -limits.PRIORITY <= priority <= limits.PRIORITY:
        raise InvalidJob("options.priority", f"priority must be within ±{limits.PRIORITY}")
    tries = attempts if attempts is not None else spec.attempts
    tries = tries if tries is not None else settings.default_attempts
    if not 1 <= tries <= limits.MAX_ATTEMPTS:
        raise InvalidJob("options.attempts", f"options.attempts must be 1-{limits.MAX_ATTEMPTS}")
    limit = timeout if timeout is not None else spec.timeout
    limit = limit if limit is not None else settings.default_timeout
    if not 0 < limit <= limits.MAX_TIMEOUT:
        raise InvalidJob(
            "options.timeout", f"options.timeout must be 0-{limits.MAX_TIMEOUT:g} seconds"
        )
    if not 0 <= delay <= limits.MAX_DELAY:
        raise InvalidJob("options.delay", "options.delay must be 0 to a year in seconds")
    policy = parse_backoff(
        backoff if backoff is not None else spec.backoff, settings.default_backoff
    )
    if group is not None and (not isinstance(group, str) or not 0 < len(group) <= limits.MAX_GROUP):
        raise InvalidJob("options.group", f"options.group must be 1-{limits.MAX_GROUP} characters")
    if job_id is None:
        ident = ids.token_hex(16)
    elif not limits.valid_job_id(job_id):
        raise InvalidJob("options.jobId", limits.JOB_ID_RULE)
    else:
        ident = job_id
    return Resolved(
        ident,
        name,
        pool,
        encode_data(data),
        int(delay * 1000),
        priority,
        tries,
        limit,
        policy.json,
        parse_dedupe(dedupe),
        group,
    )


def arguments(name: str, data: Any, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`Queue.enqueue`'s arguments from the fields of an enqueue body (`options` in the shape
    of the HTTP API)."""
    options = options or {}
    return {
        "name": name,
        "data": data if data is not None else {},
        "job_id": options.get("jobId"),
        "delay": float(options.get("delay", 0)),
        "attempts": int(options["attempts"]) if "attempts" in options else None,
        "backoff": options.get("backoff"),
        "timeout": float(options["timeout"]) if "timeout" in options else None,
        "priority": int(options.get("priority", 0)),
        "queue": options.get("queue"),
        "dedupe": options.get("dedupe"),
        "group": options.get("group"),
    }


def define_scheduler(
    settings: Settings,
    scheduler_id: str,
    name: str,
    data: Any = None,
    *,
    options: Mapping[str, Any] | None = None,
    every: float | None = None,
    cron: str | None = None,
    tz: str | None = None,
    start: Any = None,
    end: Any = None,
    missed: str | None = None,
    paused: bool = False,
) -> Scheduler:
    """A checked scheduler: its timing, and its job resolved as an enqueue would resolve it
    (`options` in the shape of the HTTP API, without jobId and delay)."""
    options = dict(options or {})
    for fixed in ("jobId", "delay", "dedupe", "group"):
        if fixed in options:
            raise InvalidJob(f"options.{fixed}", f"a scheduler's job cannot have {fixed}")
    job = resolve(settings, **arguments(name, data, options))
    scheduler = Scheduler(
        id=scheduler_id,
        job_name=name,
        data=data if data is not None else {},
        options=options,
        every=every,
        cron=cron,
        tz=tz or "UTC",
        start=parse_time(start, "start"),
        end=parse_time(end, "end"),
        missed=missed or "skip",
        paused=paused,
        job={
            "name": job.name,
            "pool": job.pool,
            "data": job.data.decode(),
            "attempts": job.attempts,
            "timeout": job.timeout,
            "backoff": job.backoff,
            "priority": job.priority,
        },
    )
    return scheduler.check()


def put_decorated(store: SyncStore, settings: Settings) -> list[str]:
    """Write the schedulers of `@job(cron=...)`, named after their jobs, at a master's start
    (a paused one stays paused): their ids."""
    written = []
    for spec in registry.values():
        if spec.cron is None or spec.pool not in settings.pools:
            continue
        stored = store.scheduler(spec.name)
        paused = stored is not None and bool(json.loads(stored).get("paused"))
        scheduler = define_scheduler(
            settings, spec.name, spec.name, {}, cron=spec.cron, tz=spec.tz, paused=paused
        )
        now = store.server_ms()
        store.run(
            calls.put_scheduler(
                store.keys,
                scheduler_id=scheduler.id,
                definition=scheduler.stored(),
                next_due=None if paused else scheduler.after(now),
            )
        )
        written.append(spec.name)
    return written


def scheduler_body(scheduler: Scheduler, due: int | None, now: int) -> dict[str, Any]:
    """A scheduler in the shape of GET /schedulers/{id}: its definition and its next runs (none
    while paused or once ended)."""
    runs: list[int] = []
    if not scheduler.paused and due is not None:
        runs = [due, *scheduler.next_runs(max(due, now), NEXT_RUNS - 1)]
    return {**scheduler.json(), "nextRuns": [iso(at) for at in runs]}


def tries(raw: str | None) -> list[dict[str, Any]]:
    """A record's tries, oldest first, in the shape of GET /jobs/{id}."""
    stored = _json(raw)
    if not isinstance(stored, list):
        return []
    return [
        {
            "attempt": t.get("attempt"),
            "startedAt": iso(t.get("startedAt")),
            "endedAt": iso(t.get("endedAt")),
            "consumer": t.get("consumer") or None,
            "outcome": t.get("outcome"),
            "error": t.get("error") or None,
        }
        for t in stored
        if isinstance(t, dict)
    ]


def summary(raw: dict[str, str | None]) -> dict[str, Any]:
    """A listed job (GET /jobs): the record without its data, result and tries."""
    return {
        "id": raw["id"],
        "jobName": raw.get("name"),
        "status": raw.get("status"),
        "pool": raw.get("pool"),
        "assignedWorker": raw.get("worker") or None,
        "attempts": int(raw.get("attempts") or 0),
        "maxAttempts": int(raw.get("maxAttempts") or 0),
        "priority": int(raw.get("priority") or 0),
        "progress": _json(raw.get("progress")),
        "error": raw.get("error") or None,
        "createdAt": iso(raw.get("createdAt")),
        "startedAt": iso(raw.get("startedAt")),
        "completedAt": iso(raw.get("completedAt")),
    }


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
        "group": raw.get("group") or None,
        "requestId": raw.get("requestId") or None,
        "traceparent": raw.get("traceparent") or None,
        "tries": tries(raw.get("tries")),
        "waitingFor": raw.get("waitingFor") or None,
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


def flow_body(pool: str, state: dict[str, Any]) -> dict[str, Any]:
    control = state["control"]
    return {
        "pool": pool,
        "paused": control.paused,
        "limits": control.limits,
        "caps": control.caps,
        "heldUntil": iso(str(control.hold_until)) if control.hold_until > state["now"] else None,
        "running": state["running"],
        "startedInPeriod": state["started"],
    }


def holding_back(state: dict[str, Any]) -> str | None:
    """What of a pool's flow control holds its queued jobs back now, if any."""
    control = state["control"]
    limits = control.limits or {}
    rate = limits.get("rate") or {}
    if control.paused:
        return "the pool is paused"
    if control.hold_until > state["now"]:
        return "a job asked for the pool to be rate limited"
    if limits.get("concurrency") and state["running"] >= limits["concurrency"]:
        return "the pool's concurrency limit"
    if rate.get("max") and state["started"] >= rate["max"]:
        return "the pool's rate limit"
    return None


def group_holding_back(group: str, rules: dict[str, Any], running: int, started: int) -> str | None:
    """What of a group's limits holds its queued jobs back now, if any."""
    rate = rules.get("rate") or {}
    if rules.get("concurrency") and running >= rules["concurrency"]:
        return f"the concurrency limit of group {group}"
    if rate.get("max") and started >= rate["max"]:
        return f"the rate limit of group {group}"
    return None


def unserved_warning(pool: str, count: int) -> str:
    return (
        f"pool {pool!r} is not in POOLS but holds {count} jobs, which no consumer runs; "
        f"serve it again or move them: python -m supervisor move-jobs {pool} <pool>"
    )


class Queue:
    """Enqueue and inspect jobs. All methods are coroutines over one Redis client."""

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        self.redis = redis
        self.settings = settings or get_settings()
        self.store = Store(redis, self.settings)

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
        dedupe: Mapping[str, Any] | None = None,
        group: str | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> Enqueued:
        """Put a job on the least-loaded live consumer of its pool.

        Raises InvalidJob for an unknown job or pool or a bad option, Unavailable when the
        pool has no live consumer or a full backlog (or Redis is down). A `job_id` that exists
        already in the job's pool returns that job with `duplicate=True` and creates nothing
        (an id is unique within its pool, as in BullMQ's queues). `dedupe`
        (`{"key", "ttl", "mode"}`, as options.dedupe) may answer another job, with
        `deduplicated=True`.
        """
        job = resolve(
            self.settings,
            name,
            data,
            job_id=job_id,
            delay=delay,
            attempts=attempts,
            backoff=backoff,
            timeout=timeout,
            priority=priority,
            queue=queue,
            dedupe=dedupe,
            group=group,
        )
        ident, pool = job.job_id, job.pool
        with otel.sending(pool, name, ident, tracing.valid_traceparent(traceparent)) as carried:
            call = calls.enqueue(
                self.store.at(pool),
                self.settings,
                job_id=ident,
                name=name,
                pool=pool,
                data=job.data,
                delay_ms=job.delay_ms,
                priority=priority,
                attempts=job.attempts,
                timeout=job.timeout,
                backoff=job.backoff,
                request_id=tracing.valid_request_id(request_id),
                traceparent=carried,
                dedupe=job.dedupe,
                group=job.group,
            )
            return await self.write(call, ident, name, data, pool)

    async def enqueue_many(
        self,
        jobs: Iterable[Mapping[str, Any]],
        *,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> list[Enqueued | QueueError]:
        """Enqueue each job: a mapping of `enqueue`'s arguments (`name`, `data`, `job_id`,
        `delay`, ...). Their calls go to Redis together, in one pipeline. The answers come in
        the same order: the job's `Enqueued`, or the `QueueError` that refused it (and it
        alone)."""

        async def one(job: Mapping[str, Any]) -> Enqueued | QueueError:
            try:
                return await self.enqueue(
                    **{"request_id": request_id, "traceparent": traceparent, **job}
                )
            except QueueError as exc:
                return exc

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    async def write(
        self, call: calls.Call[Written], ident: str, name: str, data: Any, pool: str
    ) -> Enqueued:
        """Run an enqueue call and turn its outcome into an answer or an error."""
        unreplicated: Unreplicated | None = None
        try:
            written = await self.store.run(call)
        except Unreplicated as exc:
            written, unreplicated = exc.reply, exc
        except RedisError as exc:
            raise Unavailable(f"the queue store is unavailable: {type(exc).__name__}") from exc
        if written.outcome == "no_consumer":
            raise Unavailable(f"pool {pool!r} has no live consumer", retry_after=2)
        if written.outcome == "backlog_full":
            raise Unavailable(
                f"pool {pool!r} has {self.settings.backlog_limit} jobs waiting", retry_after=5
            )
        if unreplicated is not None:
            raise NotReplicated(
                f"job {written.job_id or ident!r} was written but not replicated in time "
                f"({unreplicated}; ACK_REPLICAS={self.settings.ack_replicas}, "
                f"ACK_REPLICAS_TIMEOUT={self.settings.ack_replicas_timeout:g}s): it may still "
                "exist and run, or be lost if the primary fails; retry with the same jobId "
                "(an idempotent retry)"
            ) from unreplicated
        if written.outcome in ("duplicate", "deduplicated"):
            ident = written.job_id
            stored = await self.get(ident)
            return Enqueued(
                ident,
                stored["jobName"] if stored else name,
                stored["data"] if stored else data,
                written.status,
                written.worker,
                stored["pool"] if stored else pool,
                duplicate=written.outcome == "duplicate",
                deduplicated=written.outcome == "deduplicated",
            )
        return Enqueued(ident, name, data, written.status, written.worker, pool)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's record (the shape of GET /jobs/{id}), or None when unknown or expired.
        A queued job says what holds it back, if its pool's flow control does."""
        raw = await self.store.job(job_id)
        if not raw.get("id"):
            return None
        found = record(raw)
        if found["status"] == Status.QUEUED and not found["waitingFor"]:
            pool, group = found["pool"], found["group"]
            state = (await self.store.flow([pool]))[pool]
            found["waitingFor"] = holding_back(state)
            rules = (state["control"].limits or {}).get("groups") or {}
            if not found["waitingFor"] and group and rules:
                found["waitingFor"] = group_holding_back(
                    group, rules, *await self.store.group_use(pool, group, rules)
                )
        return found

    # job schedulers

    async def schedule(
        self,
        scheduler_id: str,
        name: str,
        data: Any = None,
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        start: Any = None,
        end: Any = None,
        missed: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create or replace scheduler `scheduler_id`: job `name` with `data` and `options`
        (the HTTP API's shape) every `every` seconds, or at each time of the cron expression
        `cron` in time zone `tz`; from `start` to `end` (ISO-8601 or datetime); runs missed
        while nothing ran are skipped, or run once (`missed="once"`). A paused scheduler stays
        paused. Raises InvalidJob for a bad definition."""
        stored = await self.store.scheduler(scheduler_id)
        paused = stored is not None and Scheduler.from_json(json.loads(stored[0])).paused
        scheduler = define_scheduler(
            self.settings,
            scheduler_id,
            name,
            data,
            options=options,
            every=every,
            cron=cron,
            tz=tz,
            start=start,
            end=end,
            missed=missed,
            paused=paused,
        )
        return await self._put_scheduler(scheduler)

    async def _put_scheduler(self, scheduler: Scheduler) -> dict[str, Any]:
        now = await self.store.server_ms()
        due = None if scheduler.paused else scheduler.after(now)
        await self.store.run(
            calls.put_scheduler(
                self.store.keys,
                scheduler_id=scheduler.id,
                definition=scheduler.stored(),
                next_due=due,
            )
        )
        return scheduler_body(scheduler, due, now)

    async def _scheduler(self, scheduler_id: str) -> tuple[Scheduler, int | None]:
        stored = await self.store.scheduler(scheduler_id)
        if stored is None:
            raise NotFound(f"no scheduler {scheduler_id!r}")
        return Scheduler.from_json(json.loads(stored[0])), stored[1]

    async def scheduler(self, scheduler_id: str) -> dict[str, Any]:
        scheduler, due = await self._scheduler(scheduler_id)
        return scheduler_body(scheduler, due, await self.store.server_ms())

    async def schedulers(self) -> list[dict[str, Any]]:
        now = await self.store.server_ms()
        found = await self.store.schedulers()
        return [
            scheduler_body(Scheduler.from_json(json.loads(raw)), due, now)
            for _, (raw, due) in sorted(found.items())
        ]

    async def unschedule(self, scheduler_id: str) -> None:
        """Delete a scheduler (the jobs it made stay). NotFound when there is none."""
        call = calls.delete_scheduler(self.store.keys, scheduler_id=scheduler_id)
        if not await self.store.run(call):
            raise NotFound(f"no scheduler {scheduler_id!r}")

    async def pause_scheduler(self, scheduler_id: str) -> dict[str, Any]:
        """Make no more jobs of the scheduler until `resume_scheduler`."""
        scheduler, _ = await self._scheduler(scheduler_id)
        return await self._put_scheduler(replace(scheduler, paused=True))

    async def resume_scheduler(self, scheduler_id: str) -> dict[str, Any]:
        """Run the scheduler again from its next due time after now (what fell due while it
        was paused is not made)."""
        scheduler, _ = await self._scheduler(scheduler_id)
        return await self._put_scheduler(replace(scheduler, paused=False))

    # flow control: pause, resume, limits

    async def flow(self, pool: str) -> dict[str, Any]:
        """`pool`'s flow control: paused, limits, caps, and what of them is used now."""
        return flow_body(pool, (await self.store.flow([self._known(pool)]))[pool])

    async def pause(self, pool: str) -> dict[str, Any]:
        """Start no job of `pool` on any node until `resume` (running ones finish)."""
        await self.store.run(
            calls.control(self.store.at(pool), pool=self._known(pool), what="pause")
        )
        return await self.flow(pool)

    async def resume(self, pool: str) -> dict[str, Any]:
        await self.store.run(
            calls.control(self.store.at(pool), pool=self._known(pool), what="resume")
        )
        return await self.flow(pool)

    async def set_limits(self, pool: str, limits: dict[str, Any] | None) -> dict[str, Any]:
        """Set `pool`'s limits (the shape of PUT /pools/{pool}/limits), or remove them (None),
        for every consumer of the fleet."""
        await self.store.run(
            calls.control(self.store.at(pool), pool=self._known(pool), what="limits", limits=limits)
        )
        return await self.flow(pool)

    async def flows(self) -> dict[str, dict[str, Any]]:
        pools = await self.pools()
        return {
            pool: flow_body(pool, state) for pool, state in (await self.store.flow(pools)).items()
        }

    def _known(self, pool: str) -> str:
        if pool not in self.settings.pools:
            raise NotFound(f"no pool {pool!r}")
        return pool

    async def list_jobs(
        self,
        *,
        status: str = "",
        pool: str = "",
        name: str = "",
        q: str = "",
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Jobs newest first (the shape of GET /jobs). A page may hold fewer than `limit`
        while `cursor` is not None: each call examines a bounded part of the index."""
        if status and status not in Status.__members__.values():
            raise InvalidJob("status", f"status must be one of {', '.join(Status)}")
        if cursor is not None and not re.fullmatch(CURSOR_PATTERN, cursor):
            raise InvalidJob("cursor", "cursor must be one a previous page returned")
        found: list[dict[str, Any]] = []
        if q and cursor is None and limits.valid_job_id(q):
            raw = await self.store.job(q)  # an exact id comes first, found at any depth
            if raw.get("id") and all(
                not want or raw.get(field) == want
                for field, want in (("status", status), ("pool", pool), ("name", name))
            ):
                found.append(summary(dict(raw)))
        page = await self.store.list_jobs(
            status=status, pool=pool, name=name, q=q, limit=limit, cursor=cursor
        )
        found += [summary(row) for row in page.rows if not found or row["id"] != found[0]["id"]]
        return {"jobs": found[: max(limit, 1)], "cursor": page.cursor}

    async def logs(self, job_id: str) -> dict[str, Any]:
        """The lines a job wrote with ctx.log (GET /jobs/{id}/logs)."""
        pool = await self.store.where(job_id)
        if pool is None:
            raise NotFound(f"no job {job_id!r}")
        lines = [
            {"at": iso(line["at"]), "text": line["text"]}
            for line in await self.store.logs(pool, job_id)
        ]
        return {"id": job_id, "lines": lines}

    async def history(self, minutes: int, pool: str | None = None) -> dict[str, Any]:
        """Finished tries per minute over the last `minutes` (GET /queue/history)."""
        pools = [pool] if pool else await self.pools()
        start, series = await self.store.history(pools, minutes)
        total = {
            field: [sum(col) for col in zip(*(s[field] for s in series.values()), strict=True)]
            if series
            else [0] * minutes
            for field in HISTORY_FIELDS
        }
        return {
            "step": 60,
            "start": iso(start),
            "minutes": minutes,
            "pools": series,
            "total": total,
        }

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued, delayed or active job. NotFound if unknown, Conflict if finished."""
        pool = await self.store.where(job_id)
        if pool is None:
            raise NotFound(f"no job {job_id!r}")
        outcome, previous = await self.store.run(
            calls.cancel(self.store.at(pool), self.settings, job_id=job_id)
        )
        if outcome == "missing":
            raise NotFound(f"no job {job_id!r}")
        if outcome == "finished":
            raise Conflict(f"job {job_id!r} is already {previous}")
        stored = await self.get(job_id)
        assert stored is not None
        if previous != Status.ACTIVE:  # a running try is counted by its consumer as it ends
            metrics.count_cancel(stored["pool"], stored["jobName"])
        return stored

    async def pools(self) -> list[str]:
        return await self.store.pools(set(self.settings.pools))

    async def stats(self) -> dict[str, Any]:
        """Counts over every pool and every consumer of the fleet, as GET /queue/stats shows."""
        seen = await self.store.consumers(await self.pools())
        counters: dict[str, str] = seen["counters"]
        workers = [{**w, "lastSeen": iso(w["lastSeen"])} for w in seen["workers"]]
        return {
            "waiting": seen["waiting"],
            "active": seen["active"],
            "delayed": seen["delayed"],
            "completed": int(counters.get("completed", 0)),
            "failed": int(counters.get("failed", 0)),
            "deadLettered": int(counters.get("deadLettered", 0)),
            "totalConcurrency": sum(
                int(w["concurrency"] or 0) for w in workers if not w["draining"]
            ),
            "workers": workers,
            "pools": await self.flows(),
        }

    async def store_warnings(self) -> list[str]:
        """Problems of the Redis server itself, or of the stored jobs, that put jobs at risk."""
        warnings = []
        try:
            policy = (await self.redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        except ResponseError:  # CONFIG is often disabled on managed servers
            policy = None
        warning = eviction_warning(policy)
        if warning:
            warnings.append(warning)
        for pool, count in (await self.store.unserved(set(self.settings.pools))).items():
            warnings.append(unserved_warning(pool, count))
        return warnings

    async def accepting(self) -> dict[str, int]:
        """Each pool this node serves -> its consumers across the fleet that take new jobs."""
        served = sorted(pool for pool, count in self.settings.pools.items() if count > 0)
        return await self.store.accepting(served)

    # dead-letter queue

    async def dlq(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Dead-lettered jobs, newest first; a page is bounded in count and in bytes."""
        page = await self.store.dlq_page(limit, offset)
        items = [dlq_item(raw) for raw in page["records"]]
        return {"items": items, "total": page["total"], "dropped": page["dropped"]}

    async def dlq_get(self, job_id: str) -> dict[str, Any]:
        raw = await self.store.dlq_record(job_id)
        if raw is None:
            raise NotFound(f"no dead-lettered job {job_id!r}")
        return dlq_item(raw)

    async def dlq_delete(self, job_id: str) -> dict[str, Any]:
        raw = await self._in_dlq(job_id, calls.dlq_delete)
        if raw is None:
            raise NotFound(f"no dead-lettered job {job_id!r}")
        return dlq_item(raw)

    async def _dead_matching(
        self, pool: str, name: str, q: str
    ) -> tuple[list[tuple[str, str]], bool]:
        """(pool, id) of dead-lettered jobs matching the filter, at most BULK_MAX, and whether
        more may match."""
        ids: list[tuple[str, str]] = []
        cursor = None
        while len(ids) < BULK_MAX:
            page = await self.store.list_jobs(
                status=Status.DEAD, pool=pool, name=name, q=q, limit=200, cursor=cursor
            )
            ids += [(str(row["pool"]), str(row["id"])) for row in page.rows][: BULK_MAX - len(ids)]
            if page.cursor is None:
                return ids, False
            cursor = page.cursor
        return ids, True

    async def _in_dlq(self, job_id: str, call: Callable[..., calls.Call[T]]) -> T | None:
        """Run a DLQ script on the pool that holds `job_id`; None when no pool does."""
        pool = await self.store.where(job_id)
        if pool is None:
            return None
        return await self.store.run(call(self.store.at(pool), job_id=job_id))

    async def dlq_retry_matching(
        self, pool: str = "", name: str = "", q: str = ""
    ) -> dict[str, Any]:
        """Retry every dead-lettered job matching the filter (at most BULK_MAX per call)."""
        ids, more = await self._dead_matching(pool, name, q)
        retried = 0
        for pool_of, ident in ids:
            outcome, _ = await self.store.run(calls.dlq_retry(self.store.at(pool_of), job_id=ident))
            retried += outcome == "retried"
        return {"retried": retried, "more": more}

    async def dlq_delete_matching(
        self, pool: str = "", name: str = "", q: str = ""
    ) -> dict[str, Any]:
        """Delete every dead-lettered job matching the filter (at most BULK_MAX per call)."""
        ids, more = await self._dead_matching(pool, name, q)
        deleted = 0
        for pool_of, ident in ids:
            gone = await self.store.run(calls.dlq_delete(self.store.at(pool_of), job_id=ident))
            deleted += gone is not None
        return {"deleted": deleted, "more": more}

    async def dlq_retry(self, job_id: str) -> Enqueued:
        """Run a dead-lettered job again, under the same id, with fresh tries. A second retry of
        the same entry (while the first one's job is not dead again) is a Conflict."""
        outcome, status = await self._in_dlq(job_id, calls.dlq_retry) or ("missing", "")
        if outcome == "missing":
            raise NotFound(f"no dead-lettered job {job_id!r}")
        if outcome == "conflict":
            raise Conflict(
                f"job {job_id!r} is not dead-lettered (it is {status}): retried already?"
            )
        stored = await self.get(job_id)
        assert stored is not None
        return Enqueued(job_id, stored["jobName"], stored["data"], status, None, stored["pool"])
