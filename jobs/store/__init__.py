"""The job store: the one owner of every Redis key and script of the job path.

The consumer, its heartbeat, the master and the HTTP app call it and never build a key.
Scripts (`lua/*.lua`, one header in `lua/_lib.lua` lists every key and the life cycle) are
the functions of one library (`library`), called through `calls`, one function per script;
`Store` runs them on an asyncio client, `SyncStore` on a blocking one (the heartbeat thread,
the master).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from jobs.settings import Settings
from jobs.store import calls, library
from jobs.store.batch import Batcher, Unreplicated
from jobs.store.calls import Call
from jobs.store.keys import Keys
from jobs.store.types import (
    TERMINAL,
    Beat,
    Claimed,
    Control,
    Outcome,
    Page,
    Recorded,
    Recovered,
    Registered,
    Status,
    Try,
    Written,
)

__all__ = [
    "TERMINAL",
    "Beat",
    "Call",
    "Claimed",
    "Control",
    "Keys",
    "Outcome",
    "Page",
    "Recorded",
    "Recovered",
    "Registered",
    "Status",
    "Store",
    "SyncStore",
    "Try",
    "Unreplicated",
    "Written",
    "calls",
]

SCRIPTS = tuple(library.scripts())
# scripts whose concurrent calls share one pipeline (the hot path)
# calls that share a pipeline with the calls of their kind made in the same turn: a consumer's
# claim goes out with the finishes of the tries that freed its slots
BATCHED = {"enqueue": "enqueue", "finish": "consumer", "claim": "consumer"}
# the most bytes of job records one DLQ page returns (at least one record is always returned)
DLQ_PAGE_BYTES = 4 * 1024 * 1024
# one listing call examines at most this many index entries and reads this much data for `q`
LIST_BUDGET = 2000
LIST_DATA_BYTES = 8 * 1024 * 1024
# a job's ctx.log keeps its last LOG_LINES lines of at most LOG_LINE_BYTES each (64 KiB in all)
LOG_LINES = 100
LOG_LINE_BYTES = 640
# the counts of a minute of GET /queue/history
HISTORY_FIELDS = ("completed", "failed", "deadLettered")

T = TypeVar("T")


def _server_ms(reply: tuple[int, int] | list[int]) -> int:
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


class Store:
    """The store on an asyncio client."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix)
        # enqueues wait for ACK_REPLICAS replicas (a WAIT at the end of their batch)
        kinds = {
            "enqueue": Batcher(redis, settings.replica_wait),
            "consumer": Batcher(redis),
        }
        self.batched = {script: kinds[kind] for script, kind in BATCHED.items()}

    async def run(self, call: Call[T]) -> T:
        """The call's decoded reply. Unreplicated (its `reply` decoded) when the call's writes
        were not acknowledged by the replicas the settings ask for."""
        batcher = self.batched.get(call.script)
        if batcher is not None:
            try:
                return call.decode(await batcher(call.script, call.keys, call.args))
            except Unreplicated as exc:
                exc.reply = call.decode(exc.reply)
                raise
        command = (library.function(call.script), len(call.keys), *call.keys, *call.args)
        try:
            reply = await self.redis.fcall(*command)
        except ResponseError as exc:
            if not library.missing(exc):
                raise
            await library.load_async(self.redis)
            reply = await self.redis.fcall(*command)
        return call.decode(reply)

    # the scripts the asyncio side calls

    async def claim(self, cid: str, pool: str, instance: str, n: int) -> Claimed:
        return await self.run(
            calls.claim(self.keys, self.settings, cid=cid, pool=pool, instance=instance, n=n)
        )

    async def finish(self, cid: str, pool: str, job: Try, outcome: str, **extra: Any) -> Recorded:
        return await self.run(
            calls.finish(
                self.keys,
                self.settings,
                job_id=job.id,
                cid=cid,
                pool=pool,
                token=job.token,
                outcome=outcome,
                **extra,
            )
        )

    async def progress(self, job_id: str, token: str, value: str) -> bool:
        return await self.run(calls.progress(self.keys, job_id=job_id, token=token, value=value))

    async def log(self, job_id: str, token: str, text: str) -> bool:
        line = text.encode("utf-8", "replace")[:LOG_LINE_BYTES].decode("utf-8", "ignore")
        return await self.run(
            calls.log(self.keys, job_id=job_id, token=token, text=line, lines=LOG_LINES)
        )

    async def list_jobs(
        self,
        *,
        status: str = "",
        pool: str = "",
        name: str = "",
        q: str = "",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        return await self.run(
            calls.list_jobs(
                self.keys,
                status=status,
                pool=pool,
                name=name,
                q=q,
                limit=limit,
                budget=LIST_BUDGET,
                data_bytes=LIST_DATA_BYTES,
                cursor=cursor,
            )
        )

    async def failed_logins(self, client: str) -> tuple[int, int]:
        """Failed dashboard logins of a client address in the current window, and the
        seconds left of that window."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.logins(client))
            pipe.ttl(self.keys.logins(client))
            count, ttl = await pipe.execute()
        return int(count or 0), max(int(ttl), 1)

    async def count_failed_login(self, client: str, window: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(self.keys.logins(client))
            pipe.expire(self.keys.logins(client), window, nx=True)
            await pipe.execute()

    # reads

    async def server_ms(self) -> int:
        return _server_ms(await self.redis.time())

    async def job(self, job_id: str) -> dict[str, str]:
        raw: dict[str, str] = await self.redis.hgetall(self.keys.job(job_id))
        return raw

    async def pools(self, configured: set[str]) -> list[str]:
        return sorted(configured | set(await self.redis.smembers(self.keys.pools)))

    async def flow(self, pools: list[str]) -> dict[str, dict[str, Any]]:
        """Each pool's flow control as it stands: its control state, its held tries and its
        starts in the rate period, by the server's clock."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for pool in pools:
                pipe.hmget(k.control(pool), "paused", "limits", "caps", "holdUntil")
                pipe.hget(k.running(pool), "all")
                pipe.zrange(k.starts(pool), 0, -1, withscores=True)
            out = await pipe.execute()
        seconds, micros = out[0]
        now = int(seconds) * 1000 + int(micros) // 1000
        found: dict[str, dict[str, Any]] = {}
        for i, pool in enumerate(pools):
            control, running, starts = out[1 + 3 * i : 4 + 3 * i]
            state = calls.decode_control([v or "" for v in control])
            period = 0.0
            rate = (state.limits or {}).get("rate")
            if isinstance(rate, dict) and isinstance(rate.get("period"), int | float):
                period = float(rate["period"]) * 1000
            found[pool] = {
                "now": now,
                "control": state,
                "running": int(running or 0),
                "started": sum(1 for _, at in starts if at > now - period),
            }
        return found

    async def group_use(self, pool: str, group: str, rules: dict[str, Any]) -> tuple[int, int]:
        """A group's tries running and starts in its rate period now (limits.groups)."""
        rate = rules.get("rate") or {}
        period = float(rate.get("period") or 0) * 1000
        now = await self.server_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.running(pool), f"g:{group}")
            pipe.zcount(self.keys.gstarts(pool, group), now - period, "+inf")
            running, started = await pipe.execute()
        return int(running or 0), int(started)

    async def consumers(self, pools: list[str]) -> dict[str, Any]:
        """Counts and consumers over `pools`, judged by the server's clock."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.hgetall(k.stats)
            for pool in pools:
                pipe.zrange(k.workers(pool), 0, -1, withscores=True)
                pipe.zcard(k.delayed(pool))
                pipe.smembers(k.draining(pool))
            head = await pipe.execute()
        now = _server_ms(head[0])
        members: list[tuple[str, str, float, bool]] = []
        due_or_later: list[str] = []
        for i, pool in enumerate(pools):
            workers, _, draining = head[2 + 3 * i : 5 + 3 * i]
            members += [(cid, pool, expiry, cid in draining) for cid, expiry in workers]
            due_or_later.append(pool)
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zcount(k.delayed(pool), "-inf", now)
            for cid, _, _, _ in members:
                pipe.zcard(k.ready(cid))
                pipe.zcard(k.active(cid))
                pipe.hgetall(k.worker(cid))
            rows = await pipe.execute()
        due = sum(rows[: len(pools)])
        delayed_total = sum(head[3 + 3 * i] for i in range(len(pools)))
        rows = rows[len(pools) :]
        waiting, active, workers_out = due, 0, []
        for i, (cid, pool, expiry, draining) in enumerate(members):
            queued, running, info = rows[3 * i : 3 * i + 3]
            waiting += queued
            active += running
            if expiry < now:
                continue
            meta = json.loads(info.get("info", "{}"))
            workers_out.append(
                {
                    "id": cid,
                    "pool": pool,
                    "host": meta.get("host"),
                    "pid": meta.get("pid"),
                    "active": running,
                    "queued": queued,
                    "concurrency": meta.get("concurrency", 0),
                    "draining": draining,
                    "lastSeen": int(info["lastSeen"]) if info.get("lastSeen") else None,
                }
            )
        return {
            "now": now,
            "counters": head[1],
            "waiting": waiting,
            "active": active,
            "delayed": delayed_total - due,
            "workers": workers_out,
        }

    async def unserved(self, configured: set[str]) -> dict[str, int]:
        """Pools that hold jobs but are not configured here (removed from POOLS): their jobs
        wait for ever unless moved. Pool -> jobs waiting in it."""
        return await self.run(calls.unserved(self.keys, configured))

    async def accepting(self, pools: list[str]) -> dict[str, int]:
        """Pool -> how many of its consumers are live and take new jobs (not draining), as the
        enqueue script judges them."""
        now = await self.server_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zrangebyscore(self.keys.workers(pool), now, "+inf")
                pipe.smembers(self.keys.draining(pool))
            rows = await pipe.execute()
        return {pool: len(set(rows[2 * i]) - set(rows[2 * i + 1])) for i, pool in enumerate(pools)}

    async def dlq_page(self, limit: int, offset: int) -> dict[str, Any]:
        """Dead-lettered records, newest first, at most `limit` and about DLQ_PAGE_BYTES."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(k.dlq, offset, offset + limit - 1)
            pipe.zcard(k.dlq)
            pipe.hget(k.stats, "dlqDropped")
            ids, total, dropped = await pipe.execute()
        records: list[dict[str, str]] = []
        size = 0
        for ident in ids:
            # one at a time: a page of large records must not arrive as one huge reply
            raw: dict[str, str] = await self.redis.hgetall(k.job(ident))
            if raw:
                size += sum(len(v) for v in raw.values())
                if records and size > DLQ_PAGE_BYTES:
                    break
                records.append(raw)
        return {"records": records, "total": total, "dropped": int(dropped or 0)}

    async def logs(self, job_id: str) -> list[dict[str, Any]]:
        """The lines a job wrote with ctx.log, oldest first: {at (server ms), text}."""
        lines: list[dict[str, Any]] = []
        for raw in await self.redis.lrange(self.keys.logs(job_id), 0, -1):
            try:
                line = json.loads(raw)
                lines.append({"at": int(line["at"]), "text": str(line["text"])})
            except (ValueError, KeyError, TypeError):
                continue
        return lines

    async def history(self, pools: list[str], minutes: int) -> tuple[int, dict[str, Any]]:
        """The last `minutes` whole minutes (the current one last) of finished-try counts:
        (the first minute's start in server ms, pool -> field -> counts, oldest first)."""
        last = await self.server_ms() // 60_000
        first = last - minutes + 1
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                for minute in range(first, last + 1):
                    pipe.hmget(self.keys.minute(pool, minute), HISTORY_FIELDS)
            rows = await pipe.execute()
        out: dict[str, Any] = {}
        for i, pool in enumerate(pools):
            mine = rows[i * minutes : (i + 1) * minutes]
            out[pool] = {
                field: [int(row[j] or 0) for row in mine] for j, field in enumerate(HISTORY_FIELDS)
            }
        return first * 60_000, out

    async def events(
        self, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Job state changes after stream id `after` ('$' for only new ones), oldest first."""
        reply = await self.redis.xread({self.keys.events: after}, count=count, block=block_ms)
        return [(ident, fields) for _, entries in reply or [] for ident, fields in entries]

    async def first_event_id(self) -> str | None:
        """The oldest event still kept, or None when there is none."""
        head = await self.redis.xrange(self.keys.events, count=1)
        return str(head[0][0]) if head else None

    async def schedulers(self) -> dict[str, tuple[str, int | None]]:
        """Every scheduler: id -> (its stored definition, its next due time or None)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.schedulers)
            pipe.zrange(self.keys.schedule, 0, -1, withscores=True)
            defined, due = await pipe.execute()
        when = {ident: int(at) for ident, at in due}
        return {ident: (raw, when.get(ident)) for ident, raw in defined.items()}

    async def scheduler(self, scheduler_id: str) -> tuple[str, int | None] | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.schedulers, scheduler_id)
            pipe.zscore(self.keys.schedule, scheduler_id)
            raw, due = await pipe.execute()
        return None if raw is None else (raw, None if due is None else int(due))

    async def dlq_record(self, job_id: str) -> dict[str, str] | None:
        if await self.redis.zscore(self.keys.dlq, job_id) is None:
            return None
        raw: dict[str, str] = await self.redis.hgetall(self.keys.job(job_id))
        return raw or None


class SyncStore:
    """The store on a blocking client, for the heartbeat thread and the master."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix)

    def run(self, call: Call[T]) -> T:
        command = (library.function(call.script), len(call.keys), *call.keys, *call.args)
        try:
            reply = self.redis.fcall(*command)
        except ResponseError as exc:
            if not library.missing(exc):
                raise
            library.load(self.redis)
            reply = self.redis.fcall(*command)
        return call.decode(reply)

    def recover_all(
        self, cid: str, pool: str, instance: str = "", now: int | None = None
    ) -> Recovered:
        """Hand back every job of consumer `cid` (batch after batch): how many went back and
        the tries that ended. State `other` when a newer instance holds the slot (nothing
        was touched), else `done`."""
        moved, ended = 0, Recovered("", 0).ended
        while True:
            r = self.run(
                calls.recover(
                    self.keys, self.settings, cid=cid, pool=pool, instance=instance, now=now
                )
            )
            moved, ended = moved + r.moved, ended + r.ended
            if r.state != "more":
                return Recovered(r.state, moved, ended)

    def sweep(self, pool: str, cid: str) -> Recovered:
        """Take back the jobs of lapsed consumers and lapsed leases of `pool`, if no other
        consumer sweeps it now: how many went back and the tries that ended."""
        moved, ended = 0, Recovered("", 0).ended
        while True:
            r = self.run(calls.sweep(self.keys, self.settings, pool=pool, cid=cid))
            moved, ended = moved + r.moved, ended + r.ended
            if r.state != "more":
                return Recovered(r.state, moved, ended)

    def server_ms(self) -> int:
        return _server_ms(self.redis.time())

    def scheduler(self, scheduler_id: str) -> str | None:
        """A scheduler's stored definition, or None."""
        raw: str | None = self.redis.hget(self.keys.schedulers, scheduler_id)
        return raw

    def due_schedulers(
        self, now: int | None, limit: int
    ) -> tuple[int, list[tuple[str, int, str | None]]]:
        """The server time (or `now`) and the schedulers due by then, earliest first, at most
        `limit`: (id, due time, definition or None when deleted)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self.keys.schedule, 0, limit - 1, withscores=True)
            clock, first = pipe.execute()
        at = _server_ms(clock) if now is None else now
        due = [(ident, int(score)) for ident, score in first if score <= at]
        if not due:
            return at, []
        raws = self.redis.hmget(self.keys.schedulers, [ident for ident, _ in due])
        return at, [(ident, score, raw) for (ident, score), raw in zip(due, raws, strict=True)]

    def move_pool(self, source: str, target: str) -> int:
        """Move every job of pool `source` (no longer served) to `target`; how many moved.
        Raises ValueError while a consumer of `source` is live."""
        moved = 0
        while True:
            r = self.run(calls.move_pool(self.keys, self.settings, source=source, target=target))
            if r.state == "live":
                raise ValueError(f"pool {source!r} still has a live consumer")
            moved += r.moved
            if r.state == "done":
                return moved
