"""What the store's scripts answer, as named types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A job's status; see the life cycle in `lua/_lib.lua`."""

    QUEUED = "queued"
    DELAYED = "delayed"
    ACTIVE = "active"
    FAILED = "failed"  # a try failed; waiting for the next one
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.COMPLETED, Status.DEAD, Status.CANCELLED})
# the statuses with an index of their own (INDEXED in lua/_lib.lua); queued and active, which
# every job passes through, have none: listing them walks the index of every job
INDEXED = frozenset({Status.DELAYED, Status.FAILED, *TERMINAL})


class Outcome(StrEnum):
    """How a try ended, as the consumer records it."""

    COMPLETED = "completed"
    FAILED = "failed"  # retried after a delay
    DEAD = "dead"
    CANCELLED = "cancelled"
    REQUEUE = "requeue"  # stopped by a shutdown: not a try
    LIMITED = "limited"  # the job asked for its pool to be rate limited: not a try


@dataclass(frozen=True, slots=True)
class Control:
    """A pool's flow control: paused, its limits (as set), the caps its jobs' decorators
    ask for, and until when (server ms) a job asked for it to be rate limited."""

    paused: bool
    limits: dict[str, Any] | None
    caps: dict[str, int]
    hold_until: int


@dataclass(frozen=True, slots=True)
class Written:
    """What enqueue did: created, duplicate, deduplicated, no_consumer or backlog_full; the id
    of the job that stands for it (another job's when deduplicated)."""

    outcome: str
    status: str
    worker: str | None
    job_id: str = ""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr per field, per try
class Try:
    """One claimed try of a job; `token` fences everything it writes."""

    id: str
    token: str
    name: str
    data: str | None
    attempt: int
    max_attempts: int
    timeout: float
    backoff: str | None
    waited: float = 0.0  # seconds from when it was due (or created) to this claim, server time
    request_id: str | None = None  # of the request that enqueued it
    traceparent: str | None = None  # W3C trace context of that request


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the job listing: records (the listed fields) and the cursor of the next page,
    None when the index has no more."""

    rows: list[dict[str, str | None]]
    cursor: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim: `state` is ok, draining or gone (the slot has another instance)."""

    state: str
    tries: list[Try]
    next_due: float | None  # seconds until the pool's next delayed job is due


@dataclass(frozen=True, slots=True)
class Recorded:
    """A finish: `recorded` is False when the try no longer held the job (stale token)."""

    recorded: bool
    status: str


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat: `gone` when this instance lost its slot; `stale` tries it no longer holds."""

    gone: bool
    stale: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Recovered:
    """A hand-back batch: state is done, more, other (a newer instance) or locked; `ended`
    the tries it ended (job name, outcome: failed, dead or crashed), for the metrics."""

    state: str
    moved: int
    ended: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Registered:
    """A registration: `previous` names the instance whose jobs must be handed back first."""

    ok: bool
    previous: str | None = None
