"""GET /events: job state changes as server-sent events.

One reader per pool in each HTTP worker follows that pool's event stream (each pool keeps its
own, in its own slot) and hands each change to the connected clients whose filter it matches;
a client that reconnects with `Last-Event-ID` first gets what it missed, as far back as the
streams keep (event ids are the server's milliseconds: every pool's stream is read from it). A client too slow to keep up is
disconnected (its browser reconnects and resumes). Streams end when the worker shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from jobs.queue import Queue, iso
from jobs.store import Store

log = logging.getLogger("server.events")

KEEPALIVE_SECONDS = 15.0
CLIENT_BUFFER = 1000  # events waiting for one client before it is disconnected
BACKLOG_MAX = 10_000  # events one reconnecting client is sent from the past
READ_BLOCK_MS = 5000

_stopping: asyncio.Event | None = None


def stopping() -> asyncio.Event:
    global _stopping
    if _stopping is None:
        _stopping = asyncio.Event()
    return _stopping


def stop_streams() -> None:
    """The worker shuts down: end every stream, so that its connections can close."""
    stopping().set()


def stream_id(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


def valid_id(ident: str) -> bool:
    ms, sep, seq = ident.partition("-")
    return ms.isdigit() and (not sep or seq.isdigit()) and len(ident) <= 40


def event_data(fields: dict[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": fields.get("type"),
        "id": fields.get("id"),
        "jobName": fields.get("name") or None,
        "pool": fields.get("pool") or None,
        "status": fields.get("status"),
        "at": iso(fields.get("at")),
    }
    if fields.get("worker"):
        data["worker"] = fields["worker"]
    if fields.get("attempt"):
        data["attempt"] = int(fields["attempt"])
    if "progress" in fields:
        with contextlib.suppress(ValueError):
            data["progress"] = json.loads(fields["progress"])
    return data


@dataclass(eq=False)
class Subscriber:
    pool: str | None
    job: str | None
    queue: asyncio.Queue[tuple[str, dict[str, str]] | None] = field(
        default_factory=lambda: asyncio.Queue(CLIENT_BUFFER)
    )

    def wants(self, fields: dict[str, str]) -> bool:
        return (self.pool is None or fields.get("pool") == self.pool) and (
            self.job is None or fields.get("id") == self.job
        )


class Hub:
    """The readers of the pools' event streams in this process, and their subscribers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.subscribers: set[Subscriber] = set()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.starting = asyncio.Lock()

    async def subscribe(self, sub: Subscriber) -> None:
        """From now on `sub` gets every event that matches it."""
        self.subscribers.add(sub)
        async with self.starting:
            for pool in await self.store.known():
                task = self.tasks.get(pool)
                if task is None or task.done():
                    newest = await self.store.newest_event(pool)
                    self.tasks[pool] = asyncio.create_task(self.follow(pool, newest))

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def follow(self, pool: str, last: str) -> None:
        while self.subscribers:
            try:
                entries = await self.store.events(pool, last, count=500, block_ms=READ_BLOCK_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep the clients, try again
                log.warning("event stream unreadable: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for ident, fields in entries:
                last = ident
                for sub in list(self.subscribers):
                    if not sub.wants(fields):
                        continue
                    try:
                        sub.queue.put_nowait((ident, fields))
                    except asyncio.QueueFull:  # too slow: it reconnects and resumes
                        self.subscribers.discard(sub)
                        while not sub.queue.empty():
                            sub.queue.get_nowait()
                        sub.queue.put_nowait(None)


def hub_of(request: Request) -> Hub:
    state = request.app.state
    hub: Hub | None = getattr(state, "hub", None)
    if hub is None:
        queue: Queue = state.queue
        hub = state.hub = Hub(queue.store)
    return hub


def frame(ident: str, fields: dict[str, str]) -> bytes:
    return f"id: {ident}\ndata: {json.dumps(event_data(fields))}\n\n".encode()


async def backlog(store: Store, after: str, sub: Subscriber) -> AsyncIterator[tuple[str, Any]]:
    """What a reconnecting client missed since `after`, oldest first, at most BACKLOG_MAX."""
    sent = 0
    while sent < BACKLOG_MAX:
        entries = await store.events_after(after, count=500)
        if not entries:
            return
        for ident, fields in entries:
            after = ident
            if sub.wants(fields):
                sent += 1
                yield ident, fields


async def events(request: Request) -> StreamingResponse:
    params = request.query_params
    sub = Subscriber(params.get("pool") or None, params.get("job") or None)
    resume = request.headers.get("last-event-id") or params.get("lastEventId") or ""
    hub = hub_of(request)

    async def stream() -> AsyncIterator[bytes]:
        seen: dict[str, tuple[int, int]] = {}  # per pool: the newest sent from the backlog
        try:
            await hub.subscribe(sub)  # first, so nothing falls between the backlog and live ones
            yield b"retry: 2000\n\n"
            if resume and valid_id(resume):
                async for ident, fields in backlog(hub.store, resume, sub):
                    seen[fields.get("pool", "")] = stream_id(ident)
                    yield frame(ident, fields)
            stop = asyncio.ensure_future(stopping().wait())
            try:
                while not stop.done():
                    get = asyncio.ensure_future(sub.queue.get())
                    done, _ = await asyncio.wait(
                        {get, stop}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    if get not in done:
                        get.cancel()
                        if not stop.done():
                            yield b": keep-alive\n\n"
                        continue
                    item = get.result()
                    if item is None:
                        return
                    ident, fields = item
                    if stream_id(ident) > seen.get(fields.get("pool", ""), (0, 0)):
                        yield frame(ident, fields)
            finally:
                stop.cancel()
        finally:
            hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
