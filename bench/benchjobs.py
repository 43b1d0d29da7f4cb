"""The bench's own job: records how long after its enqueue it started, in a list of its own
(user code with its own client, as an application's job would have)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio

from jobs import JobContext, job

_client: redis.asyncio.Redis | None = None


@job
async def pickup(ctx: JobContext, data: dict[str, Any]) -> None:
    global _client
    started = time.time()
    if _client is None:
        _client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    await _client.rpush("bench:pickup", started - float(data["t"]))


@job
async def hold(ctx: JobContext, data: dict[str, Any]) -> None:
    """Keeps its consumer slot busy (bench/scrape.py: the jobs behind it wait)."""
    await asyncio.sleep(float(data.get("seconds", 600)))
