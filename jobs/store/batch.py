"""Concurrent calls of one function share a pipeline: one write and one read for many callers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.exceptions import RedisError

from jobs.store import library

# batches on the wire at once; calls made meanwhile wait and go out together
MAX_IN_FLIGHT = int(os.environ.get("MQ_BATCH_IN_FLIGHT", "2"))

Call = tuple[list[str], list[Any], "asyncio.Future[Any]"]


class Batcher:
    """Calls one function of the library like `batcher(keys, args)`, batching concurrent callers.

    Calls made in one turn of the event loop go out in one pipeline; while MAX_IN_FLIGHT
    batches are on the wire, new calls gather for the next one. An idle caller waits one
    round trip; a busy process sends few, large writes.
    """

    def __init__(self, redis: Any, script: str) -> None:
        self.redis = redis
        self.function = library.function(script)
        self.pending: list[Call] = []
        self.in_flight = 0
        self.scheduled = False

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        # what can fail for one call fails here, in its caller, before it joins a batch
        encoded = [a.encode() if isinstance(a, str) else a for a in args]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((keys, encoded, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.pending and not self.scheduled and self.in_flight < MAX_IN_FLIGHT:
            self.scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self.scheduled = False
        batch, self.pending = self.pending, []
        self.in_flight += 1
        task = asyncio.ensure_future(self._send(batch))
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[None]) -> None:
        self.in_flight -= 1
        self._schedule(task.get_loop())

    async def _send(self, batch: list[Call]) -> None:
        try:
            results = await self._execute(batch)
            if any(library.missing(r) for r in results):
                # a new server, or one that lost its data: load once and send the batch again
                await library.load_async(self.redis)
                results = await self._execute(batch)
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        except Exception as exc:  # never leave a caller without an answer
            results = [RedisError(f"the batch failed: {type(exc).__name__}: {exc}")] * len(batch)
        except BaseException:  # cancelled (a shutdown): the callers hear it too
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RedisError("the batch was cancelled"))
            raise
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.fcall(self.function, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results
