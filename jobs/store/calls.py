"""One function per script: it builds the script's KEYS and ARGV and decodes its answer.

A `Call` is run by `Store.run` (asyncio) or `SyncStore.run` (threads, the master). `now` is
None in production (the scripts read the server's clock) and explicit milliseconds in tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from jobs.settings import Settings
from jobs.store.keys import Keys, Shared
from jobs.store.types import (
    INDEXED,
    Beat,
    Claimed,
    Control,
    Page,
    Recorded,
    Recovered,
    Registered,
    Try,
    Written,
)

T = TypeVar("T")

# jobs one recover or sweep call moves at most, so that no call blocks Redis for long
RECOVER_BATCH = 500
# characters of a try's error its record keeps in the job's tries
TRY_ERROR_CHARS = 500
# the fields list.lua answers per job (its LISTED), in order
LISTED = (
    "id",
    "name",
    "status",
    "pool",
    "worker",
    "attempts",
    "maxAttempts",
    "priority",
    "progress",
    "error",
    "createdAt",
    "startedAt",
    "completedAt",
)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    script: str
    keys: list[str]
    args: list[Any]
    decode: Callable[[Any], T]


def _now(now: int | None) -> str:
    return "" if now is None else str(now)


def _opt(ms: int | None) -> str:
    return "" if ms is None else str(ms)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _recover_args(s: Settings, batch: int, pool: str) -> list[Any]:
    # the order recover_options() in _lib.lua reads them
    return [
        s.max_crashes,
        s.dlq_max,
        s.keep_result_seconds * 1000,
        _ms(s.max_backoff),
        batch,
        pool,
        s.history_seconds * 1000,
    ]


def enqueue(
    k: Keys,
    s: Settings,
    *,
    job_id: str,
    name: str,
    pool: str,
    data: str | bytes,
    delay_ms: int,
    priority: int,
    attempts: int,
    timeout: float,
    backoff: str,
    request_id: str | None = None,
    traceparent: str | None = None,
    dedupe: tuple[str, str, int] | None = None,
    group: str | None = None,
    now: int | None = None,
) -> Call[Written]:
    """`dedupe` is (key, mode, ttl ms)."""
    key, mode, ttl = dedupe or ("", "", 0)
    return Call(
        "enqueue",
        [k.job(job_id), k.workers(pool), k.delayed(pool), k.draining(pool)],
        [
            k.prefix,
            _now(now),
            job_id,
            delay_ms,
            priority,
            s.backlog_limit,
            name,
            pool,
            data,
            attempts,
            timeout,
            backoff,
            request_id or "",
            traceparent or "",
            key,
            mode,
            ttl,
            group or "",
        ],
        lambda r: Written(r[0], r[1], r[2] or None, r[3]),
    )


def _tries(rows: list[Any]) -> list[Try]:
    return [
        Try(
            str(r[0]),
            str(r[1]),
            r[2],
            r[3],
            int(r[4]),
            int(r[5] or 1),
            float(r[6] or 0),
            r[7],
            int(r[8]) / 1000,
            r[9] or None,
            r[10] or None,
        )
        for r in rows
    ]


def claim(
    k: Keys,
    s: Settings,
    *,
    cid: str,
    pool: str,
    instance: str,
    n: int,
    now: int | None = None,
) -> Call[Claimed]:
    return Call(
        "claim",
        [
            k.ready(cid),
            k.active(cid),
            k.delayed(pool),
            k.workers(pool),
            k.draining(pool),
            k.worker(cid),
        ],
        [k.prefix, _now(now), cid, pool, n, _ms(s.lease_seconds), instance],
        lambda r: Claimed(r[0], _tries(r[1]), None if int(r[2]) < 0 else int(r[2]) / 1000),
    )


def finish(
    k: Keys,
    s: Settings,
    *,
    job_id: str,
    cid: str,
    pool: str,
    token: str,
    outcome: str,
    payload: str = "",
    traceback: str = "",
    retry_delay: float = 0.0,
    now: int | None = None,
) -> Call[Recorded]:
    return Call(
        "finish",
        [k.job(job_id), k.active(cid), k.delayed(pool)],
        [
            k.prefix,
            _now(now),
            job_id,
            cid,
            token,
            outcome,
            payload,
            traceback,
            _ms(retry_delay),
            s.keep_result_seconds * 1000,
            s.dlq_max,
            pool,
            s.history_seconds * 1000,
            "" if outcome == "completed" else payload[:TRY_ERROR_CHARS],
        ],
        lambda r: Recorded(r[0] == "ok", r[1]),
    )


def progress(k: Keys, *, job_id: str, token: str, value: str, now: int | None = None) -> Call[bool]:
    return Call(
        "progress", [k.job(job_id)], [k.prefix, _now(now), token, value, job_id], lambda r: r == 1
    )


def log(
    k: Keys, *, job_id: str, token: str, text: str, lines: int, now: int | None = None
) -> Call[bool]:
    return Call(
        "log",
        [k.job(job_id), k.logs(job_id)],
        [k.prefix, _now(now), token, text, lines],
        lambda r: r == 1,
    )


def list_jobs(
    k: Keys,
    *,
    status: str = "",
    pool: str = "",
    name: str = "",
    q: str = "",
    limit: int,
    budget: int,
    data_bytes: int,
    cursor: str | None = None,
    now: int | None = None,
) -> Call[Page]:
    """A page of jobs, newest first; `cursor` is where the previous page stopped (its
    `Page.cursor`: the score and id of the last entry examined)."""
    score, _, after = (cursor or "").partition(":")

    def decode(r: Any) -> Page:
        rows = [dict(zip(LISTED, row, strict=True)) for row in r[0]]
        return Page(rows, f"{r[1]}:{r[2]}" if r[1] else None)

    return Call(
        "list",
        [k.index(status if status in INDEXED else None)],
        [
            k.prefix,
            _now(now),
            score,
            after,
            limit,
            budget,
            status,
            pool,
            name,
            q.lower(),
            data_bytes,
        ],
        decode,
    )


def register(
    k: Keys,
    s: Settings,
    *,
    cid: str,
    pool: str,
    instance: str,
    info: str,
    caps: dict[str, int] | None = None,
    now: int | None = None,
) -> Call[Registered]:
    return Call(
        "register",
        [k.workers(pool), k.worker(cid), k.draining(pool), k.wake(cid)],
        [
            k.prefix,
            _now(now),
            cid,
            pool,
            instance,
            _ms(s.heartbeat_ttl),
            info,
            s.keep_result_seconds * 1000,
            json.dumps(caps, sort_keys=True, separators=(",", ":")) if caps else "",
        ],
        lambda r: Registered(r[0] == "ok", r[1] if len(r) > 1 else None),
    )


def control(
    k: Keys, *, pool: str, what: str, limits: dict[str, Any] | None = None, now: int | None = None
) -> Call[Control]:
    """Pause or resume `pool`, set its limits (None removes them), or just read (`what` is
    pause, resume, limits or read)."""
    encoded = json.dumps(limits, separators=(",", ":")) if limits else ""
    return Call(
        "control",
        [k.control(pool), k.workers(pool)],
        [k.prefix, _now(now), pool, what, encoded],
        decode_control,
    )


def decode_control(r: Any) -> Control:
    def load(raw: str) -> Any:
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    return Control(r[0] == "1", load(r[1]), load(r[2]) or {}, int(r[3] or 0))


def heartbeat(
    k: Keys,
    s: Settings,
    *,
    cid: str,
    pool: str,
    instance: str,
    running: Iterable[tuple[str, str]] = (),
    every_lease: bool = False,
    now: int | None = None,
) -> Call[Beat]:
    """Renew the registration and the leases of `running` (id, token) tries; `every_lease`
    renews all of the consumer's leases (the master keeping a busy process alive)."""
    pairs = [part for pair in running for part in pair]
    return Call(
        "heartbeat",
        [k.workers(pool), k.worker(cid), k.active(cid)],
        [
            k.prefix,
            _now(now),
            cid,
            instance,
            _ms(s.heartbeat_ttl),
            _ms(s.lease_seconds),
            s.keep_result_seconds * 1000,
            "*" if every_lease else "",
            *pairs,
        ],
        lambda r: Beat(r[0] == "gone", tuple(r[1])),
    )


def recover(
    k: Keys,
    s: Settings,
    *,
    cid: str,
    pool: str,
    instance: str = "",
    batch: int = RECOVER_BATCH,
    now: int | None = None,
) -> Call[Recovered]:
    """Hand back one batch of the jobs of consumer `cid`, if `instance` ('' for any) still
    holds its slot."""
    return Call(
        "recover",
        [k.workers(pool), k.worker(cid), k.active(cid), k.ready(cid), k.delayed(pool)],
        [k.prefix, _now(now), *_recover_args(s, batch, pool), cid, instance],
        _recovered,
    )


def sweep(
    k: Keys,
    s: Settings,
    *,
    pool: str,
    cid: str,
    batch: int = RECOVER_BATCH,
    now: int | None = None,
) -> Call[Recovered]:
    lock_ms = max(_ms(s.heartbeat_interval * 3), 1000)
    return Call(
        "sweep",
        [k.workers(pool), k.sweep(pool)],
        [k.prefix, _now(now), *_recover_args(s, batch, pool), cid, lock_ms],
        _recovered,
    )


def _recovered(r: Any) -> Recovered:
    flat = r[2] if len(r) > 2 else []
    return Recovered(r[0], int(r[1]), tuple(zip(flat[::2], flat[1::2], strict=True)))


def drain(
    k: Keys,
    *,
    cid: str,
    pool: str,
    instance: str,
    batch: int = RECOVER_BATCH,
    now: int | None = None,
) -> Call[Recovered]:
    return Call(
        "drain",
        [k.draining(pool), k.ready(cid), k.worker(cid)],
        [k.prefix, _now(now), cid, pool, instance, batch],
        lambda r: Recovered(r[0], int(r[1])),
    )


def cancel(k: Keys, s: Settings, *, job_id: str, now: int | None = None) -> Call[tuple[str, str]]:
    return Call(
        "cancel",
        [k.job(job_id)],
        [k.prefix, _now(now), job_id, s.keep_result_seconds * 1000],
        lambda r: (r[0], r[1]),
    )


def dlq_retry(k: Keys, *, job_id: str, now: int | None = None) -> Call[tuple[str, str]]:
    return Call(
        "dlq_retry", [k.job(job_id), k.dlq], [k.prefix, _now(now), job_id], lambda r: (r[0], r[1])
    )


def _pairs(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def dlq_delete(k: Keys, *, job_id: str, now: int | None = None) -> Call[dict[str, str] | None]:
    return Call(
        "dlq_delete",
        [k.job(job_id), k.dlq],
        [k.prefix, _now(now), job_id],
        lambda r: _pairs(r) if r else None,
    )


def move_pool(
    k: Keys,
    s: Settings,
    *,
    source: str,
    target: str,
    adopted: Iterable[str] = (),
    batch: int = RECOVER_BATCH,
    now: int | None = None,
) -> Call[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    """On `source`'s store (`k`): forget the jobs `target` holds now (`adopted`), then answer
    the next batch of jobs to move as (id, due ms, record)."""

    def decode(r: Any) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
        return r[0], [(str(row[0]), str(row[1]), _pairs(row[2])) for row in r[1]]

    return Call(
        "move_pool",
        [k.workers(source), k.delayed(source)],
        [k.prefix, _now(now), *_recover_args(s, batch, source), target, *adopted],
        decode,
    )


def adopt(
    k: Keys, *, pool: str, jobs: list[tuple[str, str, dict[str, str]]], now: int | None = None
) -> Call[int]:
    """On `pool`'s store (`k`): take in the jobs another pool's store answered (move_pool),
    each once however often it comes; how many were new here."""
    return Call(
        "adopt",
        [k.delayed(pool)],
        [k.prefix, _now(now), pool, json.dumps(jobs, separators=(",", ":"))],
        int,
    )


def waiting(k: Keys, *, pool: str, now: int | None = None) -> Call[int]:
    """Jobs held in `pool` (its delayed set and its consumers' queues and tries)."""
    return Call("waiting", [k.workers(pool), k.delayed(pool)], [k.prefix, _now(now)], int)


def put_scheduler(
    k: Shared, *, scheduler_id: str, definition: str, next_due: int | None, now: int | None = None
) -> Call[bool]:
    """Write a scheduler; `next_due` None keeps it without running it (paused, ended)."""
    return Call(
        "scheduler",
        [k.schedulers, k.schedule],
        [k.prefix, _now(now), scheduler_id, "put", definition, _opt(next_due)],
        lambda r: bool(r),
    )


def delete_scheduler(k: Shared, *, scheduler_id: str, now: int | None = None) -> Call[bool]:
    return Call(
        "scheduler",
        [k.schedulers, k.schedule],
        [k.prefix, _now(now), scheduler_id, "delete", "", ""],
        lambda r: bool(r),
    )


def advance(
    k: Shared, *, scheduler_id: str, due: int, next_due: int | None, now: int | None = None
) -> Call[bool]:
    """Move a scheduler from due time `due` to `next_due` (None: it ended), unless it moved,
    changed or was deleted since `due` was read; whether it moved now."""
    return Call(
        "scheduler",
        [k.schedulers, k.schedule],
        [k.prefix, _now(now), scheduler_id, "advance", str(due), _opt(next_due)],
        lambda r: bool(r),
    )


def fire(
    k: Keys,
    *,
    scheduler_id: str,
    job_id: str,
    job: str,
    now: int | None = None,
) -> Call[bool]:
    """On the pool's store (`k`): make job `job_id` of a scheduler's due time from the
    scheduler's stored `job` fields (JSON), unless it exists; whether it was made."""
    return Call(
        "fire",
        [k.job(job_id)],
        [k.prefix, _now(now), scheduler_id, job_id, job],
        lambda r: r == 1,
    )
