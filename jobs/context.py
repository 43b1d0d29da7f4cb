"""What a running job sees: its id, its try number, progress reporting and retry requests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from arq.worker import Retry

__all__ = ["JobContext", "Retry"]

MAX_PROGRESS_BYTES = 4096


@dataclass
class JobContext:
    """Passed to every job function as its first argument."""

    job_id: str
    name: str
    attempt: int
    max_attempts: int
    pool: str
    worker_id: str
    redis: Any = field(repr=False)
    key: str = field(repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    async def progress(self, value: float | dict[str, Any]) -> None:
        """Report progress: a number 0-100 or a small JSON object, shown by GET /jobs/{id}."""
        if isinstance(value, bool) or not isinstance(value, int | float | dict):
            raise TypeError("progress must be a number 0-100 or a JSON object")
        if isinstance(value, int | float) and not 0 <= value <= 100:
            raise ValueError("progress must be between 0 and 100")
        text = json.dumps(value, separators=(",", ":"))
        if len(text) > MAX_PROGRESS_BYTES:
            raise ValueError(f"progress is larger than {MAX_PROGRESS_BYTES} bytes")
        await self.redis.hset(self.key, "progress", text)

    def progress_sync(self, value: float | dict[str, Any]) -> None:
        """`progress` for a plain `def` job, which runs in a thread."""
        if self.loop is None:
            raise RuntimeError("no event loop to report progress on")
        asyncio.run_coroutine_threadsafe(self.progress(value), self.loop).result(timeout=10)

    def retry(self, delay: float | None = None) -> Retry:
        """`raise ctx.retry(5)` asks for another try in 5 s (counts as a failed try)."""
        return Retry(defer=delay)
