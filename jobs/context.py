"""What a running job sees: its id, its try number, progress, its own log lines and retry
requests."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from arq.worker import Retry

__all__ = ["JobContext", "Retry"]

MAX_PROGRESS_BYTES = 4096

log = logging.getLogger("jobs.context")


class RateLimited(Exception):
    """Raised by a job (`raise ctx.rate_limited(seconds)`) to hold its pool for `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"rate limited for {seconds:g} s")
        self.seconds = max(0.0, float(seconds))


@dataclass
class JobContext:
    """Passed to every job function as its first argument."""

    job_id: str
    name: str
    attempt: int
    max_attempts: int
    pool: str
    worker_id: str
    # stores progress under this try's token; False when the try no longer holds the job
    write_progress: Callable[[str], Awaitable[bool]] = field(repr=False)
    # appends a line to the job's own log under this try's token
    write_log: Callable[[str], Awaitable[bool]] = field(repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    # set when this try is stopped (time-out, cancel, shutdown): a plain `def` job, which
    # cannot be interrupted, should check it and return
    stopped: threading.Event = field(default_factory=threading.Event, repr=False)
    # the request that enqueued the job, and the W3C trace context that continues its trace
    # in this try (pass it on as the `traceparent` header of the calls the job makes)
    request_id: str | None = None
    traceparent: str | None = None

    async def progress(self, value: float | dict[str, Any]) -> bool:
        """Report progress: a number 0-100 or a small JSON object, shown by GET /jobs/{id}.

        Returns False (and stores nothing) when this try no longer holds the job."""
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            raise TypeError("progress must be a number 0-100 or a JSON object")
        if isinstance(value, int | float) and not 0 <= value <= 100:
            raise ValueError("progress must be between 0 and 100")
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
        if len(text) > MAX_PROGRESS_BYTES:
            raise ValueError(f"progress is larger than {MAX_PROGRESS_BYTES} bytes")
        if self.stopped.is_set():
            return False
        stored = await self.write_progress(text)
        if not stored:
            log.warning(
                "progress of a try that no longer holds its job was refused",
                extra={"jobId": self.job_id},
            )
        return stored

    def progress_sync(self, value: float | dict[str, Any]) -> bool:
        """`progress` for a plain `def` job, which runs in a thread."""
        if self.loop is None:
            raise RuntimeError("no event loop to report progress on")
        if self.stopped.is_set():
            return False
        future = asyncio.run_coroutine_threadsafe(self.progress(value), self.loop)
        return future.result(timeout=10)

    async def log(self, text: str) -> bool:
        """Append a line to this job's own log, shown by GET /jobs/{id}/logs (the last 100
        lines of at most 640 bytes each are kept). False when this try no longer holds the job."""
        line = str(text).encode("utf-8", "replace").decode("utf-8")
        if self.stopped.is_set():
            return False
        return await self.write_log(line)

    def log_sync(self, text: str) -> bool:
        """`log` for a plain `def` job, which runs in a thread."""
        if self.loop is None:
            raise RuntimeError("no event loop to log on")
        if self.stopped.is_set():
            return False
        return asyncio.run_coroutine_threadsafe(self.log(text), self.loop).result(timeout=10)

    def rate_limited(self, seconds: float) -> RateLimited:
        """`raise ctx.rate_limited(30)`: the service this job calls said "too many": the job
        goes back to its pool (not a failed try) and the whole pool starts nothing for
        `seconds`, on every node (like BullMQ's RateLimitError)."""
        return RateLimited(seconds)

    def retry(self, delay: float | None = None) -> Retry:
        """`raise ctx.retry(5)` asks for another try in 5 s (counts as a failed try)."""
        return Retry(defer=delay)
