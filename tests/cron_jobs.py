"""A job with a schedule of its own (JOB_MODULES=cron_jobs): every second, by cron."""

from __future__ import annotations

from typing import Any

from jobs import JobContext, job


@job(cron="* * * * * *", tz="Europe/Paris")
async def every_second(ctx: JobContext, data: dict[str, Any]) -> str:
    return "tick"
