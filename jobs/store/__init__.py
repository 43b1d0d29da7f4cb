"""The job store: the one owner of every Redis key and script of the job path.

The consumer, its heartbeat, the master and the HTTP app call it and never build a key.
Scripts (`lua/*.lua`, one header in `lua/_lib.lua` lists every key and the life cycle) are
the functions of one library (`library`), called through `calls`, one function per script;
`Store` runs them on an asyncio client, `SyncStore` on a blocking one (the heartbeat thread,
the master).

Each pool's keys share a hash tag of their own (`Store.at(pool)`), so that each script touches
one slot and a Redis Cluster may hold pools on different nodes; the keys no pool owns share
another (`Store.keys`). Reads that span pools (a job by id, the listing, counts, the DLQ, the
events) ask every known pool and merge the answers: the same code on one server and on a
Cluster.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from jobs.settings import Settings
from jobs.store import calls, library
from jobs.store.batch import Batcher, Unreplicated
from jobs.store.calls import Call
from jobs.store.keys import Keys, Shared
from jobs.store.types import (
    INDEXED,
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
    "INDEXED",
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
    "Shared",
    "Status",
    "Store",
    "SyncStore",
    "Try",
    "Unreplicated",
    "Written",
    "calls",
    "listing",
    "merge_pages",
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
# how long a process trusts its copy of the pool registry (pools appear rarely; the configured
# ones are always known)
POOLS_SECONDS = 1.0

T = TypeVar("T")


def _stream_id(ident: str) -> tuple[int, int]:
    ms, _, seq = ident.partition("-")
    return int(ms), int(seq or 0)


def _server_ms(reply: tuple[int, int] | list[int]) -> int:
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


class Pools:
    """The keys of each pool, and the pools this process knows: its configured ones and the
    registry's (every pool a consumer has served)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Shared(settings.prefix)
        self._at: dict[str, Keys] = {}
        self._known: tuple[float, list[str]] = (-POOLS_SECONDS, [])

    def at(self, pool: str) -> Keys:
        keys = self._at.get(pool)
        if keys is None:
            keys = self._at[pool] = Keys(self.settings.pool_prefix(pool))
        return keys

    def _fresh(self) -> list[str] | None:
        at, known = self._known
        return known if time.monotonic() - at < POOLS_SECONDS else None

    def _remember(self, registered: set[str]) -> list[str]:
        known = sorted(set(self.settings.pools) | registered)
        self._known = (time.monotonic(), known)
        return known


def _newest(pools: list[str], created: list[Any]) -> str | None:
    """The pool whose record of an id is the newest (an id is unique within its pool)."""
    found = [(int(c), pool) for pool, c in zip(pools, created, strict=True) if c is not None]
    return max(found)[1] if found else None


def listing(
    at: Callable[[str], Keys],
    pools: list[str],
    filters: dict[str, str],
    limit: int,
    cursor: str | None,
) -> list[Call[Page]]:
    """The list calls of one page over `pools` (`at` gives a pool's keys), sharing the budget;
    merge their pages with merge_pages. `filters`: status, pool, name, q."""
    return [
        calls.list_jobs(
            at(pool),
            status=filters.get("status", ""),
            pool=filters.get("pool", ""),
            name=filters.get("name", ""),
            q=filters.get("q", ""),
            limit=limit,
            budget=LIST_BUDGET // len(pools) + 1,
            data_bytes=LIST_DATA_BYTES // len(pools) + 1,
            cursor=cursor,
        )
        for pool in pools
    ]


def merge_pages(pages: list[Page], limit: int) -> Page:
    """One page, newest first, of the pages of several pools walked from one cursor. A pool
    that stopped early (its budget) marks how far the merged page may go: what lies beyond
    is on the next page, from the cursor returned."""

    def at(row: dict[str, Any]) -> tuple[int, str]:
        return int(row["createdAt"] or 0), str(row["id"])

    def mark(cursor: str) -> tuple[int, str]:
        score, _, ident = cursor.partition(":")
        return int(float(score)), ident

    stops = [mark(p.cursor) for p in pages if p.cursor is not None]
    frontier = max(stops) if stops else None
    rows = heapq.merge(*(p.rows for p in pages), key=at, reverse=True)
    kept = [r for r in rows if frontier is None or at(r) >= frontier]
    if len(kept) > limit or (len(kept) == limit and frontier is not None):
        kept = kept[:limit]
        last = at(kept[-1])
        return Page(kept, f"{last[0]}:{last[1]}")
    return Page(kept, None if frontier is None else f"{frontier[0]}:{frontier[1]}")


class Store(Pools):
    """The store on an asyncio client."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        super().__init__(settings)
        self.redis = redis
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

    async def known(self) -> list[str]:
        """Every pool: the configured ones and the registry's."""
        return self._fresh() or self._remember(set(await self.redis.smembers(self.keys.pools)))

    async def register(
        self, cid: str, pool: str, instance: str, info: str, caps: dict[str, int] | None
    ) -> Registered:
        """A consumer takes its slot; its pool joins the registry."""
        done = await self.run(
            calls.register(
                self.at(pool),
                self.settings,
                cid=cid,
                pool=pool,
                instance=instance,
                info=info,
                caps=caps,
            )
        )
        if done.ok:
            await self.redis.sadd(self.keys.pools, pool)
        return done

    async def claim(self, cid: str, pool: str, instance: str, n: int) -> Claimed:
        return await self.run(
            calls.claim(self.at(pool), self.settings, cid=cid, pool=pool, instance=instance, n=n)
        )

    async def finish(self, cid: str, pool: str, job: Try, outcome: str, **extra: Any) -> Recorded:
        return await self.run(
            calls.finish(
                self.at(pool),
                self.settings,
                job_id=job.id,
                cid=cid,
                pool=pool,
                token=job.token,
                outcome=outcome,
                **extra,
            )
        )

    async def progress(self, pool: str, job_id: str, token: str, value: str) -> bool:
        return await self.run(
            calls.progress(self.at(pool), job_id=job_id, token=token, value=value)
        )

    async def log(self, pool: str, job_id: str, token: str, text: str) -> bool:
        line = text.encode("utf-8", "replace")[:LOG_LINE_BYTES].decode("utf-8", "ignore")
        return await self.run(
            calls.log(self.at(pool), job_id=job_id, token=token, text=line, lines=LOG_LINES)
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
        """A page of the listing over every pool (or `pool`), newest first."""
        pools = [pool] if pool else await self.known()
        filters = {"status": status, "pool": pool, "name": name, "q": q}
        pages = [await self.run(call) for call in listing(self.at, pools, filters, limit, cursor)]
        return merge_pages(pages, limit)

    async def failed_logins(self, client: str) -> tuple[int, int]:
        """Failed dashboard logins of a client address in the current window, and the
        seconds left of that window."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.logins(client))
            pipe.ttl(self.keys.logins(client))
            count, ttl = await pipe.execute()
        return int(count or 0), max(int(ttl), 1)

    async def count_failed_login(self, client: str, window: int) -> None:
        # the window starts with the first failure (no MULTI: a Cluster pipeline has none)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.logins(client), 0, ex=window, nx=True)
            pipe.incr(self.keys.logins(client))
            await pipe.execute()

    # reads

    async def server_ms(self) -> int:
        return _server_ms(await self.redis.time())

    async def where(self, job_id: str) -> str | None:
        """The pool that holds job `job_id` (the newest record, should two pools hold one)."""
        pools = await self.known()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.hget(self.at(pool).job(job_id), "createdAt")
            created = await pipe.execute()
        return _newest(pools, created)

    async def job(self, job_id: str) -> dict[str, str]:
        pool = await self.where(job_id)
        if pool is None:
            return {}
        raw: dict[str, str] = await self.redis.hgetall(self.at(pool).job(job_id))
        return raw

    async def pools(self, configured: set[str]) -> list[str]:
        return self._remember(set(await self.redis.smembers(self.keys.pools)) | configured)

    async def flow(self, pools: list[str]) -> dict[str, dict[str, Any]]:
        """Each pool's flow control as it stands: its control state, its held tries and its
        starts in the rate period, by the server's clock."""
        clock = (
            await self.redis.time()
        )  # not in the pipeline: a Cluster's takes only keyed commands
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                k = self.at(pool)
                pipe.hmget(k.control(pool), "paused", "limits", "caps", "holdUntil")
                pipe.hget(k.running(pool), "all")
                pipe.zrange(k.starts(pool), 0, -1, withscores=True)
            out = [clock, *await pipe.execute()]
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
            pipe.hget(self.at(pool).running(pool), f"g:{group}")
            pipe.zcount(self.at(pool).gstarts(pool, group), now - period, "+inf")
            running, started = await pipe.execute()
        return int(running or 0), int(started)

    async def consumers(self, pools: list[str]) -> dict[str, Any]:
        """Counts and consumers over `pools`, judged by the server's clock."""
        clock = await self.redis.time()  # as in flow()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                k = self.at(pool)
                pipe.hgetall(k.stats)
                pipe.zrange(k.workers(pool), 0, -1, withscores=True)
                pipe.zcard(k.delayed(pool))
                pipe.smembers(k.draining(pool))
            head = [clock, *await pipe.execute()]
        now = _server_ms(head[0])
        counters: dict[str, int] = {}
        members: list[tuple[str, str, float, bool]] = []
        for i, pool in enumerate(pools):
            stats, workers, _, draining = head[1 + 4 * i : 5 + 4 * i]
            for field, value in stats.items():
                counters[field] = counters.get(field, 0) + int(value)
            members += [(cid, pool, expiry, cid in draining) for cid, expiry in workers]
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zcount(self.at(pool).delayed(pool), "-inf", now)
            for cid, pool, _, _ in members:
                k = self.at(pool)
                pipe.zcard(k.ready(cid))
                pipe.zcard(k.active(cid))
                pipe.hgetall(k.worker(cid))
            rows = await pipe.execute()
        due = sum(rows[: len(pools)])
        delayed_total = sum(head[3 + 4 * i] for i in range(len(pools)))
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
            "counters": counters,
            "waiting": waiting,
            "active": active,
            "delayed": delayed_total - due,
            "workers": workers_out,
        }

    async def unserved(self, configured: set[str]) -> dict[str, int]:
        """Pools that hold jobs but are not configured here (removed from POOLS): their jobs
        wait for ever unless moved. Pool -> jobs waiting in it."""
        registered = set(await self.redis.smembers(self.keys.pools)) - configured
        counts = {
            pool: await self.run(calls.waiting(self.at(pool), pool=pool))
            for pool in sorted(registered)
        }
        return {pool: count for pool, count in counts.items() if count}

    async def accepting(self, pools: list[str]) -> dict[str, int]:
        """Pool -> how many of its consumers are live and take new jobs (not draining), as the
        enqueue script judges them."""
        now = await self.server_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.zrangebyscore(self.at(pool).workers(pool), now, "+inf")
                pipe.smembers(self.at(pool).draining(pool))
            rows = await pipe.execute()
        return {pool: len(set(rows[2 * i]) - set(rows[2 * i + 1])) for i, pool in enumerate(pools)}

    async def dlq_page(self, limit: int, offset: int) -> dict[str, Any]:
        """Dead-lettered records of every pool, newest first, at most `limit` and about
        DLQ_PAGE_BYTES."""
        pools = await self.known()
        async with self.redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                k = self.at(pool)
                pipe.zrevrange(k.dlq, 0, offset + limit - 1, withscores=True)
                pipe.zcard(k.dlq)
                pipe.hget(k.stats, "dlqDropped")
            rows = await pipe.execute()
        entries = heapq.merge(
            *([(at, ident, pool) for ident, at in rows[3 * i]] for i, pool in enumerate(pools)),
            reverse=True,
        )
        page = list(entries)[offset : offset + limit]
        total = sum(rows[3 * i + 1] for i in range(len(pools)))
        dropped = sum(int(rows[3 * i + 2] or 0) for i in range(len(pools)))
        records: list[dict[str, str]] = []
        size = 0
        for _, ident, pool in page:
            # one at a time: a page of large records must not arrive as one huge reply
            raw: dict[str, str] = await self.redis.hgetall(self.at(pool).job(ident))
            if raw:
                size += sum(len(v) for v in raw.values())
                if records and size > DLQ_PAGE_BYTES:
                    break
                records.append(raw)
        return {"records": records, "total": total, "dropped": dropped}

    async def logs(self, pool: str, job_id: str) -> list[dict[str, Any]]:
        """The lines a job wrote with ctx.log, oldest first: {at (server ms), text}."""
        lines: list[dict[str, Any]] = []
        for raw in await self.redis.lrange(self.at(pool).logs(job_id), 0, -1):
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
                    pipe.hmget(self.at(pool).minute(pool, minute), HISTORY_FIELDS)
            rows = await pipe.execute()
        out: dict[str, Any] = {}
        for i, pool in enumerate(pools):
            mine = rows[i * minutes : (i + 1) * minutes]
            out[pool] = {
                field: [int(row[j] or 0) for row in mine] for j, field in enumerate(HISTORY_FIELDS)
            }
        return first * 60_000, out

    async def events(
        self, pool: str, after: str, count: int = 500, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Job state changes of `pool` after stream id `after`, oldest first."""
        key = self.at(pool).events
        reply = await self.redis.xread({key: after}, count=count, block=block_ms)
        return [(ident, fields) for _, entries in reply or [] for ident, fields in entries]

    async def newest_event(self, pool: str) -> str:
        """The id of `pool`'s newest event ('0-0' when there is none)."""
        newest = await self.redis.xrevrange(self.at(pool).events, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def events_after(self, after: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """The first `count` changes of every pool after stream id `after`, oldest first
        (stream ids are the server's milliseconds, so the pools' streams interleave by time)."""
        pools = await self.known()
        found = [await self.events(pool, after, count) for pool in pools]
        merged = heapq.merge(*found, key=lambda entry: _stream_id(entry[0]))
        return list(merged)[:count]

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
        pool = await self.where(job_id)
        if pool is None or await self.redis.zscore(self.at(pool).dlq, job_id) is None:
            return None
        raw: dict[str, str] = await self.redis.hgetall(self.at(pool).job(job_id))
        return raw or None


class SyncStore(Pools):
    """The store on a blocking client, for the heartbeat thread and the master."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        super().__init__(settings)
        self.redis = redis

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
                    self.at(pool), self.settings, cid=cid, pool=pool, instance=instance, now=now
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
            r = self.run(calls.sweep(self.at(pool), self.settings, pool=pool, cid=cid))
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
        clock = self.redis.time()
        first = self.redis.zrange(self.keys.schedule, 0, limit - 1, withscores=True)
        at = _server_ms(clock) if now is None else now
        due = [(ident, int(score)) for ident, score in first if score <= at]
        if not due:
            return at, []
        raws = self.redis.hmget(self.keys.schedulers, [ident for ident, _ in due])
        return at, [(ident, score, raw) for (ident, score), raw in zip(due, raws, strict=True)]

    def unserved(self, configured: set[str]) -> dict[str, int]:
        """As Store.unserved."""
        registered = set(self.redis.smembers(self.keys.pools)) - configured
        counts = {
            pool: self.run(calls.waiting(self.at(pool), pool=pool)) for pool in sorted(registered)
        }
        return {pool: count for pool, count in counts.items() if count}

    def move_pool(self, source: str, target: str, now: int | None = None) -> int:
        """Move every job of pool `source` (no longer served) to `target`; how many moved.
        Raises ValueError while a consumer of `source` is live. Each job is copied to
        `target`'s store, then deleted from `source`'s (two slots: never one script)."""
        moved, adopted = 0, list[str]()
        while True:
            state, jobs = self.run(
                calls.move_pool(
                    self.at(source),
                    self.settings,
                    source=source,
                    target=target,
                    adopted=adopted,
                    now=now,
                )
            )
            if state == "live":
                raise ValueError(f"pool {source!r} still has a live consumer")
            if state == "done":
                self.redis.srem(self.keys.pools, source)
                return moved
            if jobs:
                moved += self.run(calls.adopt(self.at(target), pool=target, jobs=jobs, now=now))
            adopted = [ident for ident, _, _ in jobs]
