"""Concurrent calls share a pipeline: one write and one read for many callers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from redis.exceptions import RedisError

from jobs.store import library

# batches on the wire at once; calls made meanwhile wait and go out together
MAX_IN_FLIGHT = int(os.environ.get("MQ_BATCH_IN_FLIGHT", "2"))
# the same for batches that end with a WAIT for replicas: each may hold its connection for the
# whole WAIT time-out while a replica is missing, so more go out at once, and a caller waits
# about one time-out for its answer, not one per batch queued ahead of it
MAX_WAITING_IN_FLIGHT = 32


class Unreplicated(RedisError):  # type: ignore[misc]
    """The calls of a batch ran, but fewer replicas than asked acknowledged the writes in
    time: `reply` is this call's own reply (what it did, on the primary)."""

    def __init__(self, reply: Any, acked: int | BaseException, wanted: int) -> None:
        heard = f"{acked} of {wanted}" if isinstance(acked, int) else f"none of {wanted} ({acked})"
        super().__init__(f"{heard} replicas acknowledged the write")
        self.reply = reply


Call = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


class Batcher:
    """Calls functions of the library like `batcher(script, keys, args)`, batching concurrent
    callers.

    Calls made in one turn of the event loop go out in one pipeline, in the order made; while
    MAX_IN_FLIGHT batches are on the wire, new calls gather for the next one. An idle caller
    waits one round trip; a busy process sends few, large writes.

    With `wait` (replicas, timeout ms), each batch ends with `WAIT replicas timeout` on the same
    connection (the pipeline's), so its callers hear only once that many replicas hold what the
    batch wrote, or else get `Unreplicated` (carrying their reply) after the time-out.
    """

    def __init__(self, redis: Any, wait: tuple[int, int] | None = None) -> None:
        self.redis = redis
        self.wait = wait
        self.max_in_flight = MAX_IN_FLIGHT if wait is None else MAX_WAITING_IN_FLIGHT
        self.pending: list[Call] = []
        self.in_flight = 0
        self.scheduled = False

    async def __call__(self, script: str, keys: list[str], args: list[Any]) -> Any:
        # what can fail for one call fails here, in its caller, before it joins a batch
        encoded = [a.encode() if isinstance(a, str) else a for a in args]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((library.function(script), keys, encoded, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.pending and not self.scheduled and self.in_flight < self.max_in_flight:
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
            for *_, future in batch:
                if not future.done():
                    future.set_exception(RedisError("the batch was cancelled"))
            raise
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for function, keys, args, _ in batch:
                pipe.fcall(function, len(keys), *keys, *args)
            if self.wait is not None:
                pipe.execute_command("WAIT", *self.wait)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if self.wait is None:
            return results
        acked, wanted = results.pop(), self.wait[0]
        if isinstance(acked, int) and acked >= wanted:
            return results
        # a call that failed on its own keeps its error
        return [
            r if isinstance(r, BaseException) else Unreplicated(r, acked, wanted) for r in results
        ]
