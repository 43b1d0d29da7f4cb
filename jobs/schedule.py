"""Job schedulers (repeatable jobs): a job plus a cron expression in a time zone, or an
interval, with an optional start and end, and what to do with runs missed while nothing ran.

This module only computes due times (croniter does the cron arithmetic, zoneinfo the time
zones, so daylight-saving changes fall where cron puts them). Which node creates the job of a
due time is decided in Redis (`fire.lua`): the first caller moves the scheduler on, and the
job's id is derived from the scheduler and the due time, so a due time makes one job however
many masters are up and however often a tick is retried.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from jobs import limits, metrics
from jobs.errors import InvalidJob
from jobs.store import SyncStore, calls

log = logging.getLogger("jobs.schedule")

# a due time later than this is missed (nothing ran then): skipped, or run once, by `missed`
MISSED_AFTER_MS = 60_000
SHORTEST_EVERY = 1.0  # seconds: the shortest interval
NEXT_RUNS = 5  # due times GET /schedulers/{id} shows
FIRE_BATCH = 100  # due schedulers one tick handles at most
TICK_SECONDS = 1.0  # how often each master looks for due schedulers


@dataclass(frozen=True)
class Scheduler:
    id: str
    job_name: str
    data: Any = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    start: int | None = None  # ms
    end: int | None = None  # ms
    missed: str = "skip"  # or "once"
    paused: bool = False
    # the job's fields as fire.lua stores them (name pool data attempts timeout backoff
    # priority), resolved when the scheduler is written
    job: dict[str, Any] = field(default_factory=dict, compare=False)

    def check(self) -> Scheduler:
        if not limits.valid_job_id(self.id) or len(self.id) > limits.MAX_SCHEDULER_ID:
            raise InvalidJob("id", limits.SCHEDULER_ID_RULE)
        if (self.every is None) == (self.cron is None):
            raise InvalidJob("every", "a scheduler has either every (seconds) or cron")
        if self.every is not None and not SHORTEST_EVERY <= self.every <= 366 * 86_400:
            raise InvalidJob("every", f"every must be {SHORTEST_EVERY:g} s to a year")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise InvalidJob("cron", f"cron {self.cron!r} is not a valid cron expression")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidJob("tz", f"tz {self.tz!r} is not a known time zone") from None
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise InvalidJob("end", "end must be after start")
        if self.missed not in ("skip", "once"):
            raise InvalidJob("missed", "missed must be skip or once")
        if self.cron is not None and self.after(round(time.time() * 1000)) is None and not self.end:
            raise InvalidJob("cron", f"cron {self.cron!r} names no time that comes")
        return self

    def after(self, ms: int) -> int | None:
        """The first due time strictly after `ms` (server ms), or None past the end."""
        if self.start is not None and ms < self.start:
            ms = self.start - 1
        if self.every is not None:
            step = round(self.every * 1000)
            origin = self.start if self.start is not None else 0
            due = origin + ((ms - origin) // step + 1) * step
        else:
            assert self.cron is not None
            zone = ZoneInfo(self.tz)
            times = croniter(self.cron, datetime.fromtimestamp(ms / 1000, zone))
            every_hour = times.expanded[1] == ["*"]
            while True:
                try:
                    due = round(times.get_next(datetime).timestamp() * 1000)
                except CroniterBadDateError:  # a date that never comes (say, February 31)
                    return None
                # a clock set back repeats an hour: a time named by its hour runs in the
                # first of the two only (as cron does); "every hour" runs in both
                if every_hour or not datetime.fromtimestamp(due / 1000, zone).fold:
                    break
        if self.end is not None and due > self.end:
            return None
        return due

    def next_runs(self, ms: int, count: int = NEXT_RUNS) -> list[int]:
        out: list[int] = []
        due = self.after(ms)
        while due is not None and len(out) < count:
            out.append(due)
            due = self.after(due)
        return out

    def job_id(self, due: int) -> str:
        """The id of the job of due time `due`: the same on every node and every retry."""
        return f"{self.id}@{due}"

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "jobName": self.job_name, "data": self.data}
        out["options"] = self.options
        if self.every is not None:
            out["every"] = self.every
        else:
            out["cron"], out["tz"] = self.cron, self.tz
        out["start"] = iso(self.start)
        out["end"] = iso(self.end)
        out["missed"], out["paused"] = self.missed, self.paused
        return out

    def stored(self) -> str:
        """The definition as P:schedulers keeps it."""
        return json.dumps({**self.json(), "job": self.job}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Scheduler:
        return cls(
            id=raw["id"],
            job_name=raw["jobName"],
            data=raw.get("data", {}),
            options=raw.get("options") or {},
            every=raw.get("every"),
            cron=raw.get("cron"),
            tz=raw.get("tz") or "UTC",
            start=parse_time(raw.get("start"), "start"),
            end=parse_time(raw.get("end"), "end"),
            missed=raw.get("missed") or "skip",
            paused=bool(raw.get("paused")),
            job=raw.get("job") or {},
        )


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_time(value: Any, field_name: str) -> int | None:
    """ISO-8601 text or a datetime (with a time zone offset, or UTC when it names none) as
    ms; None stays."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidJob(field_name, f"{field_name} must be an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def plan(scheduler: Scheduler, due: int, now: int) -> tuple[bool, int | None]:
    """At server time `now`, for the due time `due` that came: whether it makes a job, and the
    next due time (None when the scheduler has ended). A due time late by up to
    MISSED_AFTER_MS (a slow tick, a master restarting) makes its job and the next is the one
    after it, so that a tick catches up; one missed for longer makes a job only when `missed`
    is once, and the next is the first after now."""
    if now - due <= MISSED_AFTER_MS:
        return True, scheduler.after(due)
    return scheduler.missed == "once", scheduler.after(now)


def tick(store: SyncStore, now: int | None = None) -> list[str]:
    """Make the jobs of the schedulers that are due (at server time, or `now` in tests) and
    move each on, at most FIRE_BATCH: the ids of the jobs made. Every master calls this;
    fire.lua lets one caller make each due time's job."""
    made: list[str] = []
    fired = 0
    while fired < FIRE_BATCH:
        server_now, due = store.due_schedulers(now, FIRE_BATCH - fired)
        if not due:
            break
        for scheduler_id, at, raw in due:
            fired += 1
            job = fire(store, scheduler_id, at, raw, server_now, now)
            if job:
                made.append(job)
    return made


def fire(
    store: SyncStore, scheduler_id: str, at: int, raw: str | None, server_now: int, now: int | None
) -> str | None:
    scheduler, job_id, next_due = None, None, None
    try:
        if raw:
            scheduler = Scheduler.from_json(json.loads(raw))
            create, next_due = plan(scheduler, at, server_now)
            job_id = scheduler.job_id(at) if create else None
    except Exception as exc:  # a definition we did not write: it stops, the rest go on
        log.error("scheduler %s cannot run (%s); it stops", scheduler_id, exc)
        scheduler, job_id, next_due = None, None, None
    made = False
    if job_id is not None and scheduler is not None:
        # the job first, in its pool's store (made once: its id is the due time's), then the
        # scheduler moves on in the shared keys; a crash between the two makes it again,
        # finds it made, and moves on
        pool = str(scheduler.job.get("pool", ""))
        made = store.run(
            calls.fire(
                store.at(pool),
                scheduler_id=scheduler_id,
                job_id=job_id,
                job=json.dumps(scheduler.job),
                now=now,
            )
        )
    store.run(
        calls.advance(store.keys, scheduler_id=scheduler_id, due=at, next_due=next_due, now=now)
    )
    if made and scheduler is not None:
        metrics.count_enqueue(scheduler.job.get("pool", ""), scheduler.job_name)
    return job_id if made else None
