"""A consumer's heartbeat, from a thread of its own.

It marks the consumer live, renews the leases of its running jobs and hands back the jobs of
dead consumers of its pool. Being a thread, it keeps going while a job blocks the event loop,
so such a job does not make its consumer look dead; the supervisor judges a stuck loop by the
loop's own progress instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from jobs import keys
from jobs.connection import sync_client
from jobs.queue import now_ms
from jobs.scripts import Scripts
from jobs.settings import Settings

log = logging.getLogger("jobs.heartbeat")


def hand_back(scripts: Scripts, settings: Settings, pool: str, dead: str = "") -> int:
    """Run recover.lua for a pool (sync client): give back the jobs of dead consumers, `dead`
    among them, to the pool, and the running jobs whose lease lapsed. Returns how many."""
    s = settings
    moved: int = scripts.recover(
        keys=[keys.workers(s.prefix, pool), keys.delayed(s.prefix, pool)],
        args=[s.prefix, pool, now_ms(), s.max_crashes, s.dlq_max, dead],
    )
    return moved


class Heartbeat(threading.Thread):
    def __init__(
        self,
        cid: str,
        pool: str,
        settings: Settings,
        info: str,
        running: Callable[[], tuple[str, ...]],
    ) -> None:
        super().__init__(name=f"heartbeat-{cid}", daemon=True)
        self.cid = cid
        self.pool = pool
        self.settings = settings
        self.info = info
        self.running = running
        self.stopped = threading.Event()
        self.client = sync_client(settings, socket_timeout=max(2.0, settings.heartbeat_ttl / 2))
        self.scripts = Scripts(self.client)
        p = settings.prefix
        self.k_workers = keys.workers(p, pool)
        self.k_info, self.k_active = keys.worker(p, cid), keys.active(p, cid)
        self.failing_since = 0.0

    def beat(self) -> None:
        """Mark this consumer live and renew the leases of the jobs it runs."""
        s = self.settings
        self.scripts.heartbeat(
            keys=[self.k_workers, self.k_info, self.k_active],
            args=[s.prefix, self.cid, now_ms(), int(s.heartbeat_ttl * 1000),
                  int(s.lease_seconds * 1000), self.info, *self.running()],
        )  # fmt: skip

    def sweep(self, dead: str = "") -> int:
        """Hand back the jobs of this pool's dead consumers (and `dead`), and of lapsed leases."""
        moved = hand_back(self.scripts, self.settings, self.pool, dead)
        if moved:
            log.warning(
                "took back %d jobs of dead consumers or lapsed leases in pool %s", moved, self.pool
            )
        return moved

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_interval):
            try:
                self.beat()
                self.sweep()
                if self.failing_since:
                    log.info("heartbeat reaches redis again")
                self.failing_since = 0.0
            except RedisError as exc:
                if not self.failing_since:
                    self.failing_since = time.monotonic()
                    log.warning("heartbeat cannot reach redis: %s", exc)

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=self.settings.heartbeat_interval + 5)

    def release(self) -> None:
        """The consumer is leaving: what is left in its own queue goes back to the pool."""
        try:
            self.sweep(dead=self.cid)
        except RedisError as exc:
            log.warning("could not hand back the queue of %s: %s", self.cid, exc)
        self.client.close()
