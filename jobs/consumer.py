"""The consumer runtime: an arq Worker that reads as claim, run, finish.

A consumer waits on its wake-up list (pushed by the store's scripts) and, when full, for a
slot of its own to free; then it claims up to its free slots at once: due jobs of its pool,
its own queue, else the most loaded peer's queue.
Each try holds a lease and a token; the heartbeat thread renews the leases, and everything the
try writes is fenced by its token. The store owns every key; this module never builds one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs import codec, metrics, otel, tracing
from jobs.connection import async_client
from jobs.context import JobContext, RateLimited
from jobs.errors import JobInputError
from jobs.heartbeat import Heartbeat
from jobs.pulse import Pulse
from jobs.queue import Backoff
from jobs.registry import JobSpec, caps, registry
from jobs.settings import Settings
from jobs.store import Outcome, Store, Try, calls

log = logging.getLogger("jobs.consumer")

IDLE_WAIT = 1.0
FINISH_RETRY_SECONDS = 30.0
# after SIGQUIT (the master is gone, and with it an embedded server): give up on Redis soon;
# the leases lapse and a restarted slot takes the jobs back
QUIT_RETRY_SECONDS = 1.0
# ...and exit after this long whatever is left: no master would replace or drain it
QUIT_EXIT_SECONDS = 10.0
MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 8000


def _dumps(value: Any) -> str:
    return codec.dumps(value).decode()


def decode_data(raw: str | None) -> Any:
    """A job's stored data: JSON only. Anything else (a planted pickle) is refused for good."""
    if not raw:
        return None
    try:
        return codec.loads(raw)
    except ValueError:
        raise JobInputError("job data is not JSON; refusing to run it") from None


def arq_function(spec: JobSpec) -> Any:
    """arq's registry entry for a job (arq takes coroutines only; `execute` runs a plain
    `def` in this consumer's threads)."""
    if spec.is_async:
        return func(spec.func, name=spec.name)

    async def in_thread(ctx: Any, data: Any) -> Any:
        return await asyncio.to_thread(spec.func, ctx, data)

    return func(in_thread, name=spec.name)


class ResultError(ValueError):
    """A job returned a value that cannot be stored as JSON."""


def encode_result(value: Any) -> str:
    try:
        text = _dumps(value)
        text.encode()  # a lone surrogate cannot be stored
    except (TypeError, ValueError) as exc:
        raise ResultError(f"the job's result cannot be stored as JSON: {exc}") from None
    return text


@dataclass(eq=False, slots=True)
class Running:
    """One try this consumer holds, from its claim until its outcome is recorded."""

    job: Try
    deadline: float  # time.monotonic() by which the try must have ended
    key: tuple[str, str]  # (job id, token)
    task: asyncio.Task[None] | None = None
    ctx: JobContext | None = None
    # why the consumer stops the try: 'abort' (cancelled), 'shutdown', or 'abandon' (this
    # process lost its slot); None while it runs
    stop: str | None = None
    thread: asyncio.Future[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # how long the job's code ran, once it ended
    # an async job's code: time.monotonic() by which it must return, while it runs (else
    # None), and whether the time-out timer cancelled it
    code_deadline: float | None = None
    timed_out: bool = False
    span: otel.Processing = field(default_factory=lambda: otel.Processing(None, None))


@dataclass(frozen=True, slots=True)
class Ending:
    outcome: Outcome
    payload: str = ""
    traceback: str = ""
    delay: float = 0.0


class Consumer(Worker):
    """Runs the jobs of one consumer slot, `concurrency` at a time."""

    def __init__(
        self,
        cid: str,
        pool: str,
        settings: Settings,
        redis: Redis,
        instance: str,
        pulse: Pulse | None = None,
    ) -> None:
        specs = list(registry.values())
        super().__init__(
            functions=[arq_function(spec) for spec in specs],
            queue_name=f"arq:unused:{cid}",
            redis_pool=redis,
            handle_signals=False,
            max_jobs=settings.consumer_concurrency,
            job_timeout=settings.default_timeout,
            max_tries=settings.default_attempts,
            poll_delay=IDLE_WAIT,
        )
        self.cid = cid
        self.pool_name = pool
        self.instance = instance
        self.settings = settings
        self.redis = redis
        self.store = Store(redis, settings)
        self.specs: dict[str, JobSpec] = {spec.name: spec for spec in specs}
        # plain `def` jobs: one thread per slot, so a slot always has its thread
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_jobs, thread_name_prefix=f"job-{cid}"
        )
        # tries by (job id, token), until their outcome is recorded (the heartbeat renews
        # these); a token fences one job's tries, so it is unique only with its job's id
        self.running: dict[tuple[str, str], Running] = {}
        # the tries whose code has not ended (the slots in use), with their deadlines
        self.busy: dict[tuple[str, str], float] = {}
        self.stopping = asyncio.Event()
        # a slot of a full consumer freed since the last claim
        self.room = False
        # what the main loop waits on: done when a slot of a full consumer frees, a wake-up
        # comes or the wait ends. It wakes the loop in the next turn, so the claim joins the
        # pipeline of the finishes of the tries that freed the slots.
        self.woken: asyncio.Future[None] | None = None
        # one timer for the time-outs of every async try, due at the earliest (a timer per try
        # costs more than a noop job's code)
        self.timeouts: asyncio.TimerHandle | None = None
        self.timeouts_at = 0.0
        self.draining = False
        self.gone = False
        self.quit_at: float | None = None
        self.pulse = pulse or Pulse()
        self.info = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "concurrency": self.max_jobs,
                "pool": pool,
                "instance": instance,
            }
        )
        self.heartbeat = Heartbeat(
            cid, pool, instance, settings, self.pulse, self.holding, self.lost_from_thread
        )
        self.main_loop: asyncio.AbstractEventLoop | None = None

    def holding(self) -> list[tuple[str, str]]:
        """(id, token) of the tries to keep leases for; called from the heartbeat thread."""
        return [(r.job.id, r.job.token) for r in list(self.running.values())]

    # the main loop

    async def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain: finish or hand back every job held."""
        self.main_loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGQUIT, self._quit)
        await self.register()
        self.heartbeat.start()
        log.info(
            "consumer %s ready (pool %s, concurrency %d)", self.cid, self.pool_name, self.max_jobs
        )
        main = asyncio.create_task(self.main())
        await self.stopping.wait()
        self.draining = True
        while not main.done():  # again if a library swallowed the cancel (seen once)
            main.cancel()
            await asyncio.wait({main}, timeout=1.0)
        await asyncio.gather(main, return_exceptions=True)
        if self.gone:
            await self.abandon()
        else:
            await self.drain()
        self.threads.shutdown(wait=False, cancel_futures=True)

    async def register(self) -> None:
        """Take the slot; jobs a previous process left in it go back to the pool first."""
        while True:
            try:
                done = await self.store.register(
                    self.cid, self.pool_name, self.instance, self.info, caps(self.pool_name)
                )
                if done.ok:
                    return
                assert done.previous is not None
                back = await asyncio.to_thread(
                    self.heartbeat.store.recover_all, self.cid, self.pool_name, done.previous
                )
                metrics.taken_back(self.pool_name, back.ended)
                log.warning(
                    "took over slot %s: %d jobs of its previous process handed back",
                    self.cid,
                    back.moved,
                )
            except RedisError as exc:
                await self.wait_for_redis(exc)

    async def wait_for_redis(self, exc: Exception) -> None:
        log.warning("waiting for redis: %s", exc)
        self.pulse.loop()  # waiting for the store is progress, not a stuck loop
        await asyncio.sleep(0.5)

    async def main(self) -> None:
        """Claim what there is room for, then wait on the wake-up list or for a slot to free."""
        # BLPOP holds its connection: it gets a client of its own. A read that takes far
        # longer than IDLE_WAIT means a dead connection, and fails.
        blocking = async_client(self.settings, socket_timeout=IDLE_WAIT + 5)
        wake_key = self.store.at(self.pool_name).wake(self.cid)
        loop = asyncio.get_running_loop()
        # a BLPOP is never cancelled (that would lose what it read): it stays pending across
        # turns that a freed slot starts
        listening: asyncio.Task[Any] | None = None
        try:
            while True:
                self.pulse.loop()
                wait = IDLE_WAIT
                try:
                    free = self.max_jobs - len(self.busy)
                    if free > 0:
                        self.room = False
                        claimed = await self.store.claim(
                            self.cid, self.pool_name, self.instance, free
                        )
                        if claimed.state == "gone":
                            self.lost_slot()
                            return
                        for job in claimed.tries:
                            self.start(job)
                        if claimed.next_due is not None:
                            wait = min(wait, max(0.005, claimed.next_due))
                    if listening is None:
                        listening = asyncio.ensure_future(
                            blocking.blpop([wake_key], timeout=IDLE_WAIT)
                        )
                        listening.add_done_callback(self.wake)
                    if not self.room and not listening.done():
                        self.woken = loop.create_future()
                        timer = loop.call_later(wait, self.wake)
                        try:
                            await self.woken
                        finally:
                            timer.cancel()
                            self.woken = None
                    if listening.done():
                        message, listening = listening.result(), None
                        if message and message[1].startswith("abort:"):
                            self.abort(message[1])
                except RedisError as exc:
                    listening = None
                    await self.wait_for_redis(exc)
        finally:
            if listening is not None:
                listening.cancel()
            with contextlib.suppress(Exception):
                await blocking.aclose(close_connection_pool=True)

    def start(self, job: Try) -> None:
        extra = {"jobId": job.id, "jobName": job.name, "consumerId": self.cid}
        if job.request_id:
            extra["requestId"] = job.request_id
        if job.traceparent:
            extra["traceId"] = str(tracing.trace_id(job.traceparent))
        span = otel.processing(
            self.pool_name, job.name, job.id, job.attempt, self.cid, job.traceparent
        )
        run = Running(
            job, time.monotonic() + job.timeout, (job.id, job.token), extra=extra, span=span
        )
        self.running[run.key] = run
        self.busy[run.key] = run.deadline
        metrics.try_started(self.pool_name, job.name, job.waited)
        self.update_deadline()
        run.task = asyncio.create_task(self.run_try(run))

    def update_deadline(self) -> None:
        self.pulse.deadline(min(self.busy.values()) if self.busy else 0.0)

    def code_ended(self, run: Running) -> None:
        if run.key in self.busy and len(self.busy) == self.max_jobs:
            # the last claim filled every slot, so the queue may hold more: claim again now
            # (a consumer with room hears of new jobs on its wake-up list)
            self.room = True
            self.wake()
        self.busy.pop(run.key, None)
        self.update_deadline()

    def wake(self, *_: Any) -> None:
        if self.woken is not None and not self.woken.done():
            self.woken.set_result(None)

    def abort(self, message: str) -> None:
        _, job_id, token = message.split(":", 2)
        run = self.running.get((job_id, token))
        if run is None or run.task is None or run.stop is not None:
            return
        log.info("aborting job %s", job_id, extra=run.extra)
        run.stop = "abort"
        run.task.cancel()

    def _quit(self) -> None:
        if self.quit_at is not None:
            return
        self.quit_at = time.monotonic()
        self.settings = replace(self.settings, graceful_timeout=0)
        self.stopping.set()
        # a hand-back that cannot finish must not keep an orphan alive: its leases lapse
        exit_later = threading.Timer(QUIT_EXIT_SECONDS, os._exit, (1,))
        exit_later.daemon = True
        exit_later.start()

    def lost_from_thread(self) -> None:
        if self.main_loop is not None:
            self.main_loop.call_soon_threadsafe(self.lost_slot)

    def lost_slot(self) -> None:
        """The store says another instance holds this slot: this process was declared dead
        and its jobs were handed back. Its tries are void; stop at once."""
        if not self.gone:
            log.error("consumer %s lost its slot (declared dead); stopping", self.cid)
        self.gone = True
        self.stopping.set()

    # running one try

    async def run_try(self, run: Running) -> None:
        try:
            ending = await self.execute(run)
        except asyncio.CancelledError:
            if run.stop is None or self.gone:
                raise
            outcome = Outcome.CANCELLED if run.stop == "abort" else Outcome.REQUEUE
            log.info(
                "job %s",
                "cancelled" if run.stop == "abort" else "handed back at shutdown",
                extra=run.extra,
            )
            await asyncio.shield(self.record(run, Ending(outcome)))
            raise
        await self.record(run, ending)

    async def execute(self, run: Running) -> Ending:
        """Run the job's code; returns how the try ended. Holds a slot until the code ended."""
        job = run.job
        started = time.monotonic()
        thread_started = False
        try:
            spec = self.specs.get(job.name)
            if spec is None:
                raise JobInputError(f"no job named {job.name!r} in this consumer")
            data = decode_data(job.data)
            run.ctx = ctx = JobContext(
                job.id,
                job.name,
                job.attempt,
                job.max_attempts,
                self.pool_name,
                self.cid,
                partial(self.store.progress, self.pool_name, job.id, job.token),
                partial(self.store.log, self.pool_name, job.id, job.token),
                asyncio.get_running_loop(),
                request_id=job.request_id,
                traceparent=run.span.traceparent,
            )
            log.debug("job started", extra=run.extra)
            with otel.current(run.span):
                if spec.is_async:
                    # in this task (wait_for would start another one for each try); the
                    # time-out timer cancels it if it runs past its time
                    run.code_deadline = started + job.timeout
                    self.time_out_by(run.code_deadline)
                    try:
                        result = await spec.func(ctx, data)
                    finally:
                        run.code_deadline = None
                        if run.timed_out:  # the timer's cancel was delivered, or swallowed
                            asyncio.current_task().uncancel()  # type: ignore[union-attr]
                else:
                    thread_started = True
                    result = await self.in_thread(run, spec, ctx, data)
            ending = Ending(Outcome.COMPLETED, encode_result(result))
            self.jobs_complete += 1
        except asyncio.CancelledError as exc:
            if run.stop is not None:
                raise
            if run.timed_out:
                try:
                    raise TimeoutError from exc  # the job's stack, as the traceback's cause
                except TimeoutError as timeout:
                    ending = self.failure(run, timeout)
            else:
                # raised by the job's own code: a failed try like any other error
                ending = self.failure(run, exc)
        except RateLimited as exc:
            log.info("job asked for its pool to be held %g s", exc.seconds, extra=run.extra)
            ending = Ending(Outcome.LIMITED, "", "", exc.seconds)
        except Exception as exc:
            ending = self.failure(run, exc)
        finally:
            run.seconds = time.monotonic() - started
            if run.ctx is not None:
                run.ctx.stopped.set()
            if not thread_started or run.thread is None or run.thread.done():
                self.code_ended(run)
        return ending

    def time_out_by(self, deadline: float) -> None:
        """Have the time-out timer due by `deadline` (time.monotonic())."""
        if self.timeouts is not None and self.timeouts_at <= deadline:
            return
        if self.timeouts is not None:
            self.timeouts.cancel()
        loop = asyncio.get_running_loop()
        self.timeouts_at = deadline
        self.timeouts = loop.call_later(max(0.0, deadline - time.monotonic()), self.time_out)

    def time_out(self) -> None:
        """Cancel the async tries whose code runs past its deadline; due again at the next."""
        self.timeouts = None
        now, due = time.monotonic(), None
        for run in self.running.values():
            deadline = run.code_deadline
            if deadline is None or run.timed_out or run.stop is not None or run.task is None:
                continue
            if deadline <= now:
                run.timed_out = True
                run.task.cancel()
            elif due is None or deadline < due:
                due = deadline
        if due is not None:
            self.time_out_by(due)

    async def in_thread(self, run: Running, spec: JobSpec, ctx: JobContext, data: Any) -> Any:
        """A plain `def` job in this consumer's threads. A thread cannot be stopped: after a
        time-out it keeps its slot and the job its lease until it returns, so the job never
        runs twice at once; the time-out is recorded then. A cancel or a shutdown records at
        once (nothing runs the job again before this process exits) while the thread ends."""
        loop = asyncio.get_running_loop()
        # the thread runs in this task's context, so the try's span is current there too
        call = contextvars.copy_context().run
        run.thread = thread = loop.run_in_executor(self.threads, call, spec.func, ctx, data)
        thread.add_done_callback(lambda _f: self.code_ended(run))
        try:
            return await asyncio.wait_for(asyncio.shield(thread), run.job.timeout)
        except TimeoutError:
            ctx.stopped.set()
            log.warning(
                "plain def job passed its time-out; waiting for its thread to return",
                extra=run.extra,
            )
            await asyncio.wait([thread])
            raise
        finally:
            ctx.stopped.set()

    def failure(self, run: Running, exc: BaseException) -> Ending:
        job = run.job
        if isinstance(exc, TimeoutError):
            error = f"timed out after {job.timeout:g} s"
        elif isinstance(exc, asyncio.CancelledError):
            error = "CancelledError raised by the job's code"
        else:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        tb = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
        if isinstance(exc, JobInputError) or job.attempt >= job.max_attempts:
            self.jobs_failed += 1
            log.error(
                "job dead-lettered after %d tries: %s",
                job.attempt,
                error,
                extra={**run.extra, "traceback": tb},
            )
            return Ending(Outcome.DEAD, error, tb)
        self.jobs_retried += 1
        if isinstance(exc, Retry) and exc.defer_score is not None:
            delay = exc.defer_score / 1000
        else:
            spec = json.loads(job.backoff) if job.backoff else {}
            policy = Backoff(
                spec.get("type", "exponential"),
                float(spec.get("delay", self.settings.default_backoff)),
            )
            delay = policy.seconds(job.attempt, self.settings.max_backoff)
        log.warning(
            "job failed (try %d of %d), retry in %g s: %s",
            job.attempt,
            job.max_attempts,
            delay,
            error,
            extra=run.extra,
        )
        return Ending(Outcome.FAILED, error, tb, delay)

    async def record(self, run: Running, ending: Ending) -> None:
        """Record the outcome under the try's token; keep trying while Redis is away (the
        lease, renewed meanwhile, covers the job)."""
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        try:
            while True:
                try:
                    done = await self.store.finish(
                        self.cid,
                        self.pool_name,
                        run.job,
                        ending.outcome,
                        payload=ending.payload,
                        traceback=ending.traceback,
                        retry_delay=ending.delay,
                    )
                    if done.recorded:
                        log.debug("job %s", done.status, extra=run.extra)
                        metrics.try_ended(self.pool_name, run.job.name, done.status, run.seconds)
                    else:
                        log.warning(
                            "try of job %s no longer held its job (now %s): its "
                            "outcome %s was not recorded",
                            run.job.id,
                            done.status or "gone",
                            ending.outcome,
                            extra=run.extra,
                        )
                    return
                except RedisError as exc:
                    if self.quit_at is not None:
                        deadline = min(deadline, self.quit_at + QUIT_RETRY_SECONDS)
                    if time.monotonic() > deadline:
                        log.error(
                            "could not record job outcome %s: %s",
                            ending.outcome,
                            exc,
                            extra=run.extra,
                        )
                        return
                    self.pulse.loop()
                    await asyncio.sleep(0.2)
        finally:
            self.running.pop(run.key, None)
            failed = ending.outcome in (Outcome.FAILED, Outcome.DEAD)
            run.span.end(ending.outcome, ending.payload if failed else None)

    # shutdown

    async def drain(self) -> None:
        """Stay registered (draining, skipped by enqueue) and heart-beating: hand the queue
        back, let running tries finish within the grace time, hand back the rest, then leave."""
        keys = self.store.at(self.pool_name)
        with contextlib.suppress(RedisError):
            while (
                await self.store.run(
                    calls.drain(keys, cid=self.cid, pool=self.pool_name, instance=self.instance)
                )
            ).state == "more":
                pass
        grace = max(0.0, self.settings.graceful_timeout - 1.0)
        pending = {r.task for r in self.running.values() if r.task is not None}
        if pending:
            log.info("draining %d running jobs (up to %g s)", len(pending), grace)
            deadline = time.monotonic() + grace
            while pending and time.monotonic() < deadline:
                self.pulse.loop()  # draining is progress
                _, pending = await asyncio.wait(
                    pending, timeout=min(1.0, deadline - time.monotonic())
                )
            for run in list(self.running.values()):
                if run.task in pending and run.stop is None:
                    run.stop = "shutdown"
                    run.task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.to_thread(self.heartbeat.stop)
        await asyncio.to_thread(self.heartbeat.leave)
        log.info(
            "consumer %s stopped: %d completed, %d retried, %d failed",
            self.cid,
            self.jobs_complete,
            self.jobs_retried,
            self.jobs_failed,
        )

    async def abandon(self) -> None:
        """This process lost its slot: stop every try without recording anything."""
        tasks = []
        for run in self.running.values():
            if run.task is not None:
                run.stop = "abandon"
                run.task.cancel()
                tasks.append(run.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.heartbeat.stop)


def run(
    cid: str,
    pool: str,
    settings: Settings,
    instance: str,
    pulse: Pulse | None = None,
) -> None:
    """Entry point of a consumer process (called in the forked child)."""
    import uvloop

    async def go() -> None:
        redis = async_client(settings)
        consumer = Consumer(cid, pool, settings, redis, instance, pulse)
        try:
            await consumer.serve()
        finally:
            await redis.aclose()

    otel.configure(f"consumer {cid}")
    try:
        uvloop.run(go())
    finally:
        otel.shutdown()
