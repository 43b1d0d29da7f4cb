"""Jobs the tests run (JOB_MODULES=testjobs)."""

from __future__ import annotations

import asyncio
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
