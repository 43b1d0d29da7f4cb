"""The bench's own job: records how long after its enqueue it started."""

from __future__ import annotations

import time
from typing import Any

from jobs import JobContext, job


@job
async def pickup(ctx: JobContext, data: dict[str, Any]) -> None:
    await ctx.redis.rpush("bench:pickup", time.time() - float(data["t"]))
