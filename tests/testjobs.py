"""Jobs the tests run (JOB_MODULES=testjobs)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from jobs import JobContext, job


@job
async def sleeper(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    await asyncio.sleep(float(data.get("seconds", 1)))
    return {
        "worker": ctx.worker_id,
        "started": started,
        "finished": time.time(),
        "attempt": ctx.attempt,
    }


@job
async def flaky(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Fails until its try number reaches `succeed_on`."""
    if ctx.attempt < int(data.get("succeed_on", 99)):
        raise RuntimeError(f"flaky failure on try {ctx.attempt}")
    return {"attempt": ctx.attempt}


@job
async def asks_retry(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    if ctx.attempt == 1:
        raise ctx.retry(0.2)
    return {"attempt": ctx.attempt}


@job("syncJob")
def sync_job(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    ctx.progress_sync({"step": "working"})
    return {"thread": True, "value": data.get("value")}


@job
async def progress_then_wait(ctx: JobContext, data: dict[str, Any]) -> None:
    await ctx.progress({"stage": "half", "percent": 50})
    await asyncio.sleep(float(data.get("seconds", 5)))


@job(attempts=1)
async def crash_process(ctx: JobContext, data: dict[str, Any]) -> None:
    os._exit(9)


@job
def fails_first_run(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Fails while the marker file does not exist yet, creating it."""
    marker = str(data["marker"])
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("seen")
        raise RuntimeError("first run fails")
    return {"attempt": ctx.attempt}


@job
async def block_loop(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """CPU-bound work done wrong: blocks the consumer's event loop."""
    time.sleep(float(data.get("seconds", 5)))  # noqa: ASYNC251 - blocking on purpose
    return {"attempt": ctx.attempt}


def _log_run(data: dict[str, Any], **fields: Any) -> None:
    """Append one JSON line to the file named by data["log"], when there is one."""
    if data.get("log"):
        with open(str(data["log"]), "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")


@job
async def cpu_bound(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """CPU-bound Python on the event loop for `seconds`, never awaiting."""
    started = time.time()
    end = time.monotonic() + float(data.get("seconds", 35))
    spins = 0
    while time.monotonic() < end:
        spins += 1
    return {"attempt": ctx.attempt, "pid": os.getpid(), "started": started, "spins": spins}


@job
async def raises_cancelled(ctx: JobContext, data: dict[str, Any]) -> None:
    """The job's own code raises CancelledError (nobody cancelled it)."""
    _log_run(data, attempt=ctx.attempt, at=time.time())
    raise asyncio.CancelledError("raised by the job itself")


@job
async def fails_after(ctx: JobContext, data: dict[str, Any]) -> None:
    """Runs for `seconds`, then fails; logs each run."""
    _log_run(data, attempt=ctx.attempt, at=time.time())
    await asyncio.sleep(float(data.get("seconds", 0.5)))
    raise RuntimeError(f"fails after {data.get('seconds', 0.5)} s")


@job
def slow_thread(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """A plain `def` that runs `seconds` in its thread whatever its time-out, reporting progress
    all along; logs when each run started and ended, and how its progress calls were taken."""
    started = time.time()
    _log_run(data, attempt=ctx.attempt, event="start", at=started)
    end = time.monotonic() + float(data.get("seconds", 3))
    accepted = refused = 0
    while time.monotonic() < end:
        if ctx.progress_sync({"attempt": ctx.attempt, "at": time.time()}):
            accepted += 1
        else:
            refused += 1
        time.sleep(0.05)
    _log_run(data, attempt=ctx.attempt, event="end", at=time.time(), accepted=accepted,
             refused=refused, started=started)  # fmt: skip
    return {"attempt": ctx.attempt, "started": started}


@job
async def holds_gil(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """C code that never releases the GIL: the consumer's heartbeat thread cannot run."""
    started = time.monotonic()
    sum(range(int(data.get("n", 6 * 10**8))))
    return {"attempt": ctx.attempt, "held": time.monotonic() - started}


@job
async def bad_result(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """A result JSON cannot carry: a lone surrogate, or a number past the float range."""
    return {"text": "\udfff"} if data.get("kind") == "surrogate" else {"n": float("inf")}


@job(attempts=1)
async def says_why(ctx: JobContext, data: dict[str, Any]) -> None:
    """Writes a log line, then fails naming the reverse of data["reversed"]: the word is in its
    error, not in its data (the dashboard's search finds it by its error)."""
    await ctx.log(f"step 1 of 1: giving up on {data.get('reversed')!r}")
    raise RuntimeError(f"gave up: {str(data.get('reversed', ''))[::-1]}")


@job
async def traced(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Answers the request id and the trace context its try continues; with `failFirst`
    its first try fails."""
    if data.get("failFirst") and ctx.attempt == 1:
        raise RuntimeError("the first try fails")
    return {"requestId": ctx.request_id, "traceparent": ctx.traceparent}


@job
def rate_limited_once(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    """Asks for its pool to be held on its first run (the called service said "too many")."""
    marker = str(data["marker"])
    if not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("seen")
        raise ctx.rate_limited(float(data.get("seconds", 1)))
    return {"attempt": ctx.attempt}


@job(max_concurrency=1)
async def one_at_a_time(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(data.get("seconds", 0.3)))
    return {}
