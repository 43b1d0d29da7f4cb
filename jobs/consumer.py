"""The consumer runtime: an arq Worker that claims from its own queue in one Lua call.

Instead of arq's 0.5 s poll and WATCH/MULTI per job, a consumer blocks on its wake-up list
(pushed by the enqueue script) and claims up to its free slots at once. Running jobs hold
short leases that the heartbeat renews; the supervisor hands a dead consumer's jobs back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs import keys, metrics
from jobs.batch import ScriptBatcher
from jobs.connection import async_client
from jobs.context import JobContext
from jobs.errors import JobInputError
from jobs.heartbeat import Heartbeat
from jobs.queue import Backoff, now_ms
from jobs.registry import JobSpec, registry
from jobs.scripts import Scripts
from jobs.settings import Settings

log = logging.getLogger("jobs.consumer")

IDLE_WAIT = 1.0
FINISH_RETRY_SECONDS = 30.0
MAX_ERROR_CHARS = 2000


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode_data(raw: str | None) -> Any:
    """A job's stored data: JSON only. Anything else (a planted pickle) is refused for good."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise JobInputError("job data is not JSON; refusing to run it") from None


def arq_function(spec: JobSpec) -> Any:
    """arq's registry entry for a job; a plain `def` runs in a thread."""
    if spec.is_async:
        return func(spec.func, name=spec.name)

    async def in_thread(ctx: Any, data: Any) -> Any:
        return await asyncio.to_thread(spec.func, ctx, data)

    return func(in_thread, name=spec.name)


class Consumer(Worker):
    """Runs the jobs of one consumer slot, `concurrency` at a time."""

    def __init__(
        self,
        cid: str,
        pool: str,
        settings: Settings,
        redis: Redis,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(
            functions=[arq_function(spec) for spec in registry.values()],
            queue_name=keys.ready(settings.prefix, cid),
            redis_pool=redis,
            handle_signals=False,
            max_jobs=settings.consumer_concurrency,
            job_timeout=settings.default_timeout,
            max_tries=settings.default_attempts,
            poll_delay=IDLE_WAIT,
            job_serializer=lambda v: _dumps(v).encode(),
            job_deserializer=json.loads,
        )
        self.cid = cid
        self.pool_name = pool
        self.settings = settings
        self.redis = redis
        self.prefix = settings.prefix
        self.scripts = Scripts(redis)
        # jobs ending together record their outcomes in one round trip
        self.finish_script = ScriptBatcher(redis, self.scripts.finish)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # jobs whose code has not ended yet: the slots in use (a task recording its outcome
        # no longer holds one)
        self.holding: set[str] = set()
        self.aborted: set[str] = set()
        self.stopping = asyncio.Event()
        self.draining = False
        self.info = _dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "concurrency": self.max_jobs,
                "pool": pool,
            }
        )
        self.k_ready = keys.ready(self.prefix, cid)
        self.k_active = keys.active(self.prefix, cid)
        self.k_delayed = keys.delayed(self.prefix, pool)
        self.k_workers = keys.workers(self.prefix, pool)
        self.k_wake = keys.wake(self.prefix, cid)
        self.heartbeat = Heartbeat(cid, pool, settings, self.info, lambda: tuple(self.tasks))
        self.notify = notify

    # the main loop

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain: finish or hand back every job held."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGQUIT, self._quit)
        await self._until_redis()
        await self.redis.sadd(keys.pools(self.prefix), self.pool_name)
        await asyncio.to_thread(self.heartbeat.beat)
        self.heartbeat.start()
        log.info(
            "consumer %s ready (pool %s, concurrency %d)", self.cid, self.pool_name, self.max_jobs
        )
        self.main_task = asyncio.create_task(self.main())
        await self.stopping.wait()
        self.draining = True
        self.main_task.cancel()
        await asyncio.gather(self.main_task, return_exceptions=True)
        await asyncio.to_thread(self.heartbeat.stop)
        await self.drain()

    async def main(self) -> None:
        """Claim what there is room for, then wait on the wake-up list."""
        # BLPOP holds its connection: it gets a client of its own
        # a connection that hangs (a failover) must not hang the loop: BLPOP waits at most
        # IDLE_WAIT, so a read that takes far longer means the connection is dead
        blocking = async_client(self.settings, socket_timeout=IDLE_WAIT + 5)
        try:
            while True:
                self.notify()  # the supervisor judges this consumer by its loop's progress
                wait = IDLE_WAIT
                try:
                    free = self.max_jobs - len(self.holding)
                    if free > 0:
                        claimed, next_due = await self.scripts.claim(
                            keys=[self.k_ready, self.k_active, self.k_delayed],
                            args=[self.prefix, self.cid, now_ms(), free, self._lease_ms()],
                        )
                        for row in claimed:
                            self._start(row)
                        if next_due is not None:
                            wait = min(wait, max(0.005, (float(next_due) - now_ms()) / 1000))
                    token = await blocking.blpop([self.k_wake], timeout=wait)
                    if token and token[1].startswith("abort:"):
                        self._abort(token[1][6:])
                except RedisError as exc:
                    log.warning("redis unavailable in consumer loop: %s", exc)
                    await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await blocking.aclose(close_connection_pool=True)

    def _lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    def _start(self, row: list[Any]) -> None:
        job_id = row[0]
        task = asyncio.create_task(self.run_job(job_id, row))
        self.tasks[job_id] = task
        self.holding.add(job_id)
        task.add_done_callback(lambda _t: self._done(job_id))

    def _done(self, job_id: str) -> None:
        self.tasks.pop(job_id, None)
        self.holding.discard(job_id)

    def _abort(self, job_id: str) -> None:
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            log.info("aborting job %s", job_id, extra={"jobId": job_id})
            self.aborted.add(job_id)
            task.cancel()

    def _quit(self) -> None:
        self.settings = replace(self.settings, graceful_timeout=0)
        self.stopping.set()

    # running one job

    async def run_job(self, job_id: str, row: list[Any]) -> None:  # type: ignore[override]
        _, name, data_raw, attempt, max_attempts, timeout, backoff_raw = row
        attempt, max_attempts = int(attempt), int(max_attempts or 1)
        extra = {"jobId": job_id, "jobName": name}
        started = time.monotonic()
        outcome, payload, tb, delay = "completed", "null", "", 0.0
        try:
            function: Any = self.functions.get(name)
            if function is None:
                raise JobInputError(f"no job named {name!r} in this consumer")
            data = decode_data(data_raw)
            ctx = JobContext(
                job_id,
                name,
                attempt,
                max_attempts,
                self.pool_name,
                self.cid,
                self.redis,
                keys.job(self.prefix, job_id),
                asyncio.get_running_loop(),
            )
            log.debug("job started", extra=extra)
            result = await asyncio.wait_for(function.coroutine(ctx, data), float(timeout or 300))
            payload = _dumps(result)
            self.jobs_complete += 1
        except asyncio.CancelledError:
            if job_id in self.aborted:
                outcome = "cancelled"
                log.info("job cancelled", extra=extra)
            else:
                outcome = "requeue"
                log.info("job handed back at shutdown", extra=extra)
            await asyncio.shield(self._finish(job_id, outcome, payload, tb, delay, extra))
            raise
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            outcome, payload, tb, delay = self._failure(
                exc, attempt, max_attempts, backoff_raw, timeout, extra
            )
        metrics.observe_job(self.pool_name, name, outcome, time.monotonic() - started)
        await self._finish(job_id, outcome, payload, tb, delay, extra)

    def _failure(
        self,
        exc: BaseException,
        attempt: int,
        max_attempts: int,
        backoff_raw: str | None,
        timeout: str | None,
        extra: dict[str, Any],
    ) -> tuple[str, str, str, float]:
        if isinstance(exc, TimeoutError):
            error = f"timed out after {float(timeout or 0):g} s"
        else:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        tb = "".join(traceback.format_exception(exc))[-8000:]
        permanent = isinstance(exc, JobInputError)
        if permanent or attempt >= max_attempts:
            self.jobs_failed += 1
            log.error(
                "job dead-lettered after %d tries: %s",
                attempt,
                error,
                extra={**extra, "traceback": tb},
            )
            return "dead", error, tb, 0.0
        self.jobs_retried += 1
        if isinstance(exc, Retry) and exc.defer_score is not None:
            delay = exc.defer_score / 1000
        else:
            spec = json.loads(backoff_raw) if backoff_raw else {}
            policy = Backoff(
                spec.get("type", "exponential"),
                float(spec.get("delay", self.settings.default_backoff)),
            )
            delay = policy.seconds(attempt, self.settings.max_backoff)
        log.warning(
            "job failed (try %d of %d), retry in %g s: %s",
            attempt,
            max_attempts,
            delay,
            error,
            extra=extra,
        )
        return "retry", error, tb, delay

    async def _finish(
        self, job_id: str, outcome: str, payload: str, tb: str, delay: float, extra: dict[str, Any]
    ) -> None:
        """Record the outcome; keep trying while Redis is away (the lease covers the job meanwhile)."""
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        # a full consumer waits on its wake-up list: tell it a slot is free
        full = len(self.holding) >= self.max_jobs and not self.draining
        self.holding.discard(job_id)
        while True:
            try:
                await self.finish_script(
                    keys=[
                        keys.job(self.prefix, job_id),
                        self.k_active,
                        self.k_ready,
                        self.k_delayed,
                    ],
                    args=[
                        self.prefix,
                        job_id,
                        self.cid,
                        outcome,
                        now_ms(),
                        payload,
                        tb,
                        int(delay * 1000),
                        self.settings.keep_result_seconds * 1000,
                        self.settings.dlq_max,
                        "1" if full else "0",
                    ],
                )
                log.debug("job %s", outcome, extra=extra)
                return
            except RedisError as exc:
                if time.monotonic() > deadline:
                    log.error("could not record job outcome %s: %s", outcome, exc, extra=extra)
                    return
                await asyncio.sleep(0.2)

    # liveness

    async def _until_redis(self) -> None:
        delay = 0.05
        while True:
            try:
                await self.redis.ping()
                return
            except RedisError as exc:
                log.warning("waiting for redis: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # shutdown

    async def drain(self) -> None:
        """Stop taking jobs, let running ones finish within the grace time, hand back the rest."""
        with contextlib.suppress(RedisError):
            await self.redis.zrem(self.k_workers, self.cid)
        running = list(self.tasks.values())
        grace = max(0.0, self.settings.graceful_timeout - 1.0)
        if running:
            log.info("draining %d running jobs (up to %g s)", len(running), grace)
            deadline = time.monotonic() + grace
            pending = set(running)
            while pending and time.monotonic() < deadline:
                self.notify()  # draining is progress
                _, pending = await asyncio.wait(
                    pending, timeout=min(1.0, deadline - time.monotonic())
                )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.to_thread(self.heartbeat.release)
        log.info(
            "consumer %s stopped: %d completed, %d retried, %d failed",
            self.cid,
            self.jobs_complete,
            self.jobs_retried,
            self.jobs_failed,
        )


def run(cid: str, pool: str, settings: Settings, notify: Callable[[], None] = lambda: None) -> None:
    """Entry point of a consumer process (called in the forked child)."""
    import uvloop

    async def go() -> None:
        redis = async_client(settings)
        consumer = Consumer(cid, pool, settings, redis, notify)
        try:
            await consumer.serve()
        finally:
            await redis.aclose()

    uvloop.run(go())
