"""A consumer's heartbeat, from a thread of its own.

It keeps the consumer registered and the leases of its running tries alive, and sweeps its
pool for consumers whose heartbeat lapsed (one sweeper per pool at a time: the store holds a
short lock). Being a thread, it keeps going while a job blocks the event loop; a job that holds
the GIL silences it too, and then the master keeps the leases alive (supervisor/consumers.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from jobs import metrics
from jobs.connection import sync_client
from jobs.pulse import Pulse
from jobs.settings import Settings
from jobs.store import SyncStore, calls

log = logging.getLogger("jobs.heartbeat")

# how often the heartbeat says which tries hold the event loop up
BLOCKED_WARNING_SECONDS = 10.0


class Heartbeat(threading.Thread):
    def __init__(
        self,
        cid: str,
        pool: str,
        instance: str,
        settings: Settings,
        pulse: Pulse,
        running: Callable[[], list[tuple[str, str]]],
        lost: Callable[[], None],
    ) -> None:
        super().__init__(name=f"heartbeat-{cid}", daemon=True)
        self.cid = cid
        self.pool = pool
        self.instance = instance
        self.settings = settings
        self.pulse = pulse
        self.running = running
        self.lost = lost
        self.stopped = threading.Event()
        client = sync_client(settings, socket_timeout=max(2.0, settings.heartbeat_ttl / 2))
        self.store = SyncStore(client, settings)
        self.failing_since = 0.0
        self.warned = 0.0

    def beat(self) -> None:
        """Mark this consumer live and renew the leases of the tries it holds."""
        done = self.store.run(
            calls.heartbeat(
                self.store.at(self.pool),
                self.settings,
                cid=self.cid,
                pool=self.pool,
                instance=self.instance,
                running=self.running(),
            )
        )
        if done.gone:
            self.lost()
            self.stopped.set()
        elif done.stale:
            log.warning("tries no longer held (their lease lapsed): %s", ", ".join(done.stale))

    def sweep(self) -> None:
        back = self.store.sweep(self.pool, self.cid)
        metrics.taken_back(self.pool, back.ended)
        if back.moved:
            log.warning(
                "took back %d jobs of lapsed consumers or leases in pool %s", back.moved, self.pool
            )

    def watch_loop(self) -> None:
        """Say so, every so often, while the event loop is held up inside a job."""
        loop_at, _, deadline = self.pulse.read()
        now = time.monotonic()
        blocked = now - loop_at
        if deadline and blocked > BLOCKED_WARNING_SECONDS and now - self.warned > 10:
            self.warned = now
            ids = ", ".join(job_id for job_id, _ in self.running())
            log.warning(
                "event loop blocked for %.0f s inside a job (running: %s); the consumer "
                "stays while the job is within its time-out",
                blocked,
                ids,
            )

    def run(self) -> None:
        parent = os.getppid()
        while not self.stopped.wait(self.settings.heartbeat_interval):
            if os.getppid() != parent:  # the master died and its signal was missed
                log.warning("the master (pid %d) is gone: quitting", parent)
                os.kill(os.getpid(), signal.SIGQUIT)
                parent = os.getppid()
            self.pulse.beat()
            try:
                self.beat()
                if not self.stopped.is_set():
                    self.sweep()
                if self.failing_since:
                    log.info("heartbeat reaches redis again")
                self.failing_since = 0.0
            except RedisError as exc:
                if not self.failing_since:
                    self.failing_since = time.monotonic()
                    log.warning("heartbeat cannot reach redis: %s", exc)
            self.watch_loop()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=self.settings.heartbeat_interval + 5)

    def leave(self) -> None:
        """The consumer is leaving: what it still holds goes back to the pool, and it
        unregisters."""
        try:
            back = self.store.recover_all(self.cid, self.pool, self.instance)
            metrics.taken_back(self.pool, back.ended)
        except RedisError as exc:
            log.warning("could not hand back the jobs of %s: %s", self.cid, exc)
        self.store.redis.close()
