"""Module-level shortcuts over one default Queue, for application code:

from jobs import api
job = await api.enqueue("calculation", {"numbers": [1, 2]})
"""

from __future__ import annotations

from typing import Any

from jobs.queue import Enqueued, Queue

_default: Queue | None = None


def default_queue() -> Queue:
    """The queue of the settings in the environment, created on first use."""
    global _default
    if _default is None:
        _default = Queue.from_settings()
    return _default


async def enqueue(name: str, data: Any = None, **options: Any) -> Enqueued:
    """Enqueue a job; options as `Queue.enqueue` (job_id, delay, attempts, backoff, ...)."""
    return await default_queue().enqueue(name, data, **options)


async def get(job_id: str) -> dict[str, Any] | None:
    """The job's record, or None."""
    return await default_queue().get(job_id)


async def cancel(job_id: str) -> dict[str, Any]:
    """Cancel a queued, delayed or running job."""
    return await default_queue().cancel(job_id)


async def stats() -> dict[str, Any]:
    """Counts and consumers, as GET /queue/stats."""
    return await default_queue().stats()
