"""Every master makes the jobs of due schedulers each tick; Redis lets one of them make each."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from jobs import schedule
from jobs.store import SyncStore

log = logging.getLogger("supervisor")


class Schedulers:
    def __init__(self) -> None:
        self.store: SyncStore | None = None
        self.next_tick = 0.0
        self.failing = False

    def fire(self) -> None:
        now = time.monotonic()
        if now < self.next_tick:
            return
        self.next_tick = now + schedule.TICK_SECONDS
        assert self.store is not None
        try:
            for job_id in schedule.tick(self.store):
                log.info("scheduled job %s made", job_id)
            self.failing = False
        except RedisError as exc:
            if not self.failing:  # once per outage, not every second
                log.warning("cannot fire schedulers: %s", exc)
            self.failing = True
