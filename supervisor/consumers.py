"""The consumer slots of this node, `<node>-<pool>-<slot>`: one process each, forked by the master."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from collections.abc import Callable

import setproctitle
from redis.exceptions import RedisError

from jobs import logs, metrics
from jobs.pulse import Pulse
from jobs.settings import Settings
from jobs.store import SyncStore, calls
from supervisor import deathsig
from supervisor.children import Child, reap

log = logging.getLogger("supervisor")

# a try that outlives its time-out by this much gets its consumer killed (counted as timed out)
OVERDUE_GRACE_SECONDS = 5.0
BUSY_WARNING_SECONDS = 10.0


class Consumers:
    """Each slot is started when due, judged every turn (busy is not stuck), reaped with the
    jobs of its dead process handed back before it starts again, and restarted one at a time
    in each pool on SIGHUP."""

    def __init__(self, settings: Settings, leave_master: Callable[[], None]) -> None:
        self.settings = settings
        # run first in a forked consumer: drops the master's signal handling and sockets
        self.leave_master = leave_master
        self.slots = [
            Child(f"{settings.node_name}-{pool}-{slot}", meta={"pool": pool, "slot": str(slot)})
            for pool, count in settings.pools.items()
            for slot in range(1, count + 1)
        ]
        self.store: SyncStore | None = None
        # slots whose dead process's jobs are still to be handed back: cid -> instance
        self.to_recover: dict[str, str] = {}
        # SIGHUP restarts each pool's consumers one at a time: those still to restart, and
        # the one restarting now with its old pid
        self.to_roll: dict[str, list[Child]] = {}
        self.rolling: dict[str, tuple[Child, int]] = {}

    def manage(self) -> None:
        self.recover()
        for child in self.slots:
            # a slot is respawned only once the jobs of its dead process are handed back
            if child.due() and child.name not in self.to_recover:
                self.spawn(child)
        self.judge()
        self.roll()

    def spawn(self, child: Child) -> None:
        pool = child.meta["pool"]
        if child.pulse is not None:
            child.pulse.close()
        child.pulse = Pulse()
        child.meta["instance"] = secrets.token_hex(8)
        master = os.getpid()
        pid = os.fork()
        if pid:
            child.spawned(pid)
            log.info("consumer %s started (pid %s)", child.name, pid)
            return
        status = 0
        try:
            # with the master gone, hand the jobs back at once (SIGQUIT: a quick drain)
            deathsig.die_with_parent(signal.SIGQUIT, master)
            self.leave_master()
            logs.set_role(f"consumer {child.name}")
            setproctitle.setproctitle(f"supervisor: consumer {pool}-{child.meta['slot']}")
            from jobs import consumer, registry

            registry.load(self.settings.job_modules)
            consumer.run(child.name, pool, self.settings, child.meta["instance"], child.pulse)
        except BaseException:
            log.exception("consumer %s failed", child.name)
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def judge(self) -> None:
        """Busy is not stuck. A consumer whose loop has not turned for CONSUMER_TIMEOUT is
        kept while it runs tries within their time-out (a job blocking the loop), and killed
        when it runs none (stuck); one whose try outlived its time-out is killed, and the try
        counts as timed out. While its heartbeat thread is silenced (a job holding the GIL)
        the master keeps its registration and leases alive."""
        now = time.monotonic()
        for child in self.slots:
            if not child.pid or child.pulse is None:
                continue
            loop_at, beat_at, deadline = child.pulse.read()
            if deadline and now > deadline + OVERDUE_GRACE_SECONDS:
                log.critical(
                    "consumer %s (pid %s) runs a job %.0fs past its time-out; killing it",
                    child.name,
                    child.pid,
                    now - deadline,
                )
                child.signal(signal.SIGKILL)
                continue
            stalled = now - loop_at
            limit = self.settings.consumer_timeout
            if limit and stalled > limit:
                if not deadline:
                    log.critical(
                        "consumer %s (pid %s) made no progress for %.0fs; killing it",
                        child.name,
                        child.pid,
                        stalled,
                    )
                    child.signal(signal.SIGKILL)
                    continue
                if now - child.warned > BUSY_WARNING_SECONDS:
                    child.warned = now
                    log.warning(
                        "consumer %s (pid %s): loop blocked %.0fs inside a job; kept "
                        "until the job's time-out",
                        child.name,
                        child.pid,
                        stalled,
                    )
            # a heartbeat thread silent for 1.5 beats: the master beats for it, well within
            # HEARTBEAT_TTL (this loop turns every second)
            if now - beat_at > 1.5 * self.settings.heartbeat_interval:
                self.keep_alive(child)

    def keep_alive(self, child: Child) -> None:
        if self.store is None:
            return
        call = calls.heartbeat(
            self.store.at(child.meta["pool"]),
            self.settings,
            cid=child.name,
            pool=child.meta["pool"],
            instance=child.meta["instance"],
            every_lease=True,
        )
        try:
            self.store.run(call)
        except RedisError as exc:
            log.warning("cannot keep consumer %s alive: %s", child.name, exc)

    def reap(self, stopping: bool) -> None:
        for child in self.slots:
            if reap(child, "consumer", stopping, asked=self.rolled(child, child.pid)):
                self.to_recover[child.name] = child.meta["instance"]

    def rolled(self, child: Child, pid: int) -> bool:
        """Whether `pid` is the process a SIGHUP's rolling restart stopped in this slot."""
        return any(c is child and old == pid for c, old in self.rolling.values())

    def recover(self) -> None:
        """Hand the jobs of consumers that died back to their pool, naming the dead process
        (its instance), as soon as Redis answers."""
        assert self.store is not None
        for cid, instance in list(self.to_recover.items()):
            pool = next(c.meta["pool"] for c in self.slots if c.name == cid)
            try:
                back = self.store.recover_all(cid, pool, instance)
            except RedisError as exc:
                log.warning("cannot hand back the jobs of %s yet: %s", cid, exc)
                return
            del self.to_recover[cid]
            metrics.taken_back(pool, back.ended)
            if back.moved > 0:
                log.warning("handed %d jobs of %s back to pool %s", back.moved, cid, pool)

    def restart_all(self) -> None:
        log.info("restarting consumers, one at a time in each pool")
        self.to_roll = {}
        for child in self.slots:
            self.to_roll.setdefault(child.meta["pool"], []).append(child)

    def roll(self) -> None:
        """Restart the next consumer of a pool once the previous one's replacement is live
        (its loop has turned), so a pool with two or more never loses all of them."""
        for pool, waiting in list(self.to_roll.items()):
            current = self.rolling.get(pool)
            if current is not None:
                child, old_pid = current
                if child.pid in (0, old_pid) or child.pulse.read()[0] <= child.started:
                    continue
                del self.rolling[pool]
            if not waiting:
                del self.to_roll[pool]
                continue
            child = waiting.pop(0)
            self.rolling[pool] = (child, child.pid)
            child.signal(signal.SIGTERM)

    # shutdown: the master signals them, then reaps until none runs

    def signal(self, sig: int) -> None:
        for child in self.slots:
            child.signal(sig)

    def running(self) -> bool:
        return any(child.pid for child in self.slots)

    def kill_the_late(self) -> None:
        for child in self.slots:
            if child.pid:
                log.error("consumer %s did not stop in time; killing it", child.name)
                child.signal(signal.SIGKILL)
