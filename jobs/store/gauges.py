"""What the store holds right now, per pool, for /metrics: two pipelined round trips of
O(pools + consumers) commands, none of which walks a queue (cheap at any backlog)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.store import _server_ms
from jobs.store.keys import Keys

# a ready queue's score is creation ms - priority * 2^42 (enqueue.lua); creation ms is below
# 2^42 until 2109, so the remainder is the creation time whatever the priority
PRIORITY_STEP = 2**42


@dataclass(frozen=True, slots=True)
class PoolGauges:
    waiting: int  # ready to run: in a consumer's queue, or due in the pool's delayed set
    active: int
    delayed: int  # not due yet
    oldest_age: float  # seconds the oldest job at the head of a queue has waited; 0 if none
    live: int  # consumers with a current heartbeat that take new jobs (not draining)


@dataclass(frozen=True, slots=True)
class Gauges:
    pools: dict[str, PoolGauges]
    dlq: int


def _created_ms(score: float) -> int:
    return int(score) % PRIORITY_STEP


async def read(redis: Any, at: Callable[[str], Keys], pools: list[str]) -> Gauges:
    """`at` gives a pool's keys (Store.at)."""
    clock = await redis.time()  # not in the pipeline: a Cluster's takes only keyed commands
    async with redis.pipeline(transaction=False) as pipe:
        for pool in pools:
            keys = at(pool)
            pipe.zcard(keys.dlq)
            pipe.zrange(keys.workers(pool), 0, -1, withscores=True)
            pipe.smembers(keys.draining(pool))
            pipe.zcard(keys.delayed(pool))
            pipe.zrange(keys.delayed(pool), 0, 0, withscores=True)
        head = [clock, *await pipe.execute()]
    now = _server_ms(head[0])
    per_pool = [head[2 + 5 * i : 6 + 5 * i] for i in range(len(pools))]
    dlq = sum(head[1 + 5 * i] for i in range(len(pools)))
    # every registered consumer, lapsed ones too: their queues hold jobs until swept
    members = [(i, cid) for i, row in enumerate(per_pool) for cid, _ in row[0]]
    async with redis.pipeline(transaction=False) as pipe:
        for pool in pools:
            pipe.zcount(at(pool).delayed(pool), "-inf", now)
        for i, cid in members:
            keys = at(pools[i])
            pipe.zcard(keys.ready(cid))
            pipe.zcard(keys.active(cid))
            pipe.zrange(keys.ready(cid), 0, 0, withscores=True)
        rows = await pipe.execute()
    due, rows = rows[: len(pools)], rows[len(pools) :]
    waiting = list(due)
    active = [0] * len(pools)
    oldest = [0.0] * len(pools)
    for i, (_, _, _, first) in enumerate(per_pool):
        if first and first[0][1] <= now:  # the earliest delayed job is due: it waits
            oldest[i] = (now - first[0][1]) / 1000
    for n, (i, _) in enumerate(members):
        queued, running, front = rows[3 * n : 3 * n + 3]
        waiting[i] += queued
        active[i] += running
        if front:
            oldest[i] = max(oldest[i], (now - _created_ms(front[0][1])) / 1000)
    out = {}
    for i, pool in enumerate(pools):
        workers, draining, delayed, _ = per_pool[i]
        out[pool] = PoolGauges(
            waiting=waiting[i],
            active=active[i],
            delayed=delayed - due[i],
            oldest_age=max(oldest[i], 0.0),
            live=sum(1 for cid, expiry in workers if expiry >= now and cid not in draining),
        )
    return Gauges(out, dlq)
