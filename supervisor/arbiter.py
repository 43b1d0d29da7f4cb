"""The master: gunicorn's Arbiter plus the consumer pool and the embedded server.

gunicorn keeps the HTTP workers (spawn, reap, TTIN/TTOU, HUP, graceful stop). This class adds
the other children to the same loop: it spawns them in `manage_workers`, reaps them in
`reap_workers`, reloads them on HUP and stops them in `stop`, the embedded server last.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from typing import Any

import setproctitle
from gunicorn import util
from gunicorn.arbiter import Arbiter
from redis.exceptions import RedisError

from jobs import logs, metrics, schedule
from jobs.connection import eviction_warning, sync_client
from jobs.errors import QueueError
from jobs.pulse import Pulse
from jobs.queue import put_decorated, unserved_warning
from jobs.settings import Settings, set_settings
from jobs.store import SyncStore, calls
from supervisor import deathsig, embedded, metric_files
from supervisor.children import Child, clean_exit, describe
from supervisor.node import NodeClaim, NodeTaken

log = logging.getLogger("supervisor")

SERVER_START_SECONDS = 30.0
SERVER_STOP_SECONDS = 10.0
CONSUMER_STOP_MARGIN = 5.0
# a try that outlives its time-out by this much gets its consumer killed (counted as timed out)
OVERDUE_GRACE_SECONDS = 5.0
BUSY_WARNING_SECONDS = 10.0


def _title(title: str) -> None:
    """gunicorn titles its processes `master [name]` and `worker [name]`; ours name the role."""
    role = title.split(" ", 1)[0]
    setproctitle.setproctitle("supervisor: " + {"worker": "http worker"}.get(role, role))


util._setproctitle = _title


class Master(Arbiter):  # type: ignore[misc]
    """Supervises HTTP workers (gunicorn's), consumers and the embedded server."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.settings = settings
        self.server: Child | None = None
        if settings.embedded:
            self.server = Child("valkey")
            # fixed once, so a restarted server is found where the children look for it
            self.server_args, url = embedded.command(settings.data_dir, settings.embedded_maxmemory)
            self.settings = settings = settings.with_redis_url(url)
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.consumers = [
            Child(f"{settings.node_name}-{pool}-{slot}", meta={"pool": pool, "slot": str(slot)})
            for pool, count in settings.pools.items()
            for slot in range(1, count + 1)
        ]
        self.stopping = False
        # consumer slots whose dead process's jobs are still to be handed back: cid -> instance
        self.to_recover: dict[str, str] = {}
        self.http_started: dict[int, float] = {}
        # HTTP workers the master itself told to stop (HUP, TTOU): not restarts
        self.http_retired: set[int] = set()
        self.http_failures = 0
        self.http_not_before = 0.0
        self.redis: Any = None
        self.store: SyncStore | None = None
        # SIGHUP restarts each pool's consumers one at a time: those still to restart, and
        # the one restarting now with its old pid
        self.to_roll: dict[str, list[Child]] = {}
        self.rolling: dict[str, tuple[Child, int]] = {}
        self.node = NodeClaim(settings)
        self.next_tick = 0.0
        self.tick_failing = False
        super().__init__(app)

    # start-up

    def start(self) -> None:
        if self.server is not None:
            self.refuse_if_data_dir_in_use()
            self.spawn_server()
            self.wait_for_server()
        set_settings(self.settings)
        self.redis = sync_client(self.settings, socket_timeout=5)
        self.store = SyncStore(self.redis, self.settings)
        self.warn_about_store()
        self.warn_about_unserved_pools()
        self.set_pool_limits()
        self.put_decorated_schedulers()
        try:
            self.node.claim(self.redis)
        except NodeTaken as exc:
            log.error("%s", exc)
            self.stop_server()
            sys.exit(1)
        super().start()

    def warn_about_store(self) -> None:
        for risk in self.settings.warnings:
            log.warning("%s", risk)
        try:
            policy = self.redis.config_get("maxmemory-policy").get("maxmemory-policy")
        except RedisError:
            return
        warning = eviction_warning(policy)
        if warning:
            log.warning("%s", warning)

    def warn_about_unserved_pools(self) -> None:
        assert self.store is not None
        try:
            unserved = self.store.run(calls.unserved(self.store.keys, self.settings.pools))
        except RedisError:
            return
        for pool, count in unserved.items():
            log.warning("%s", unserved_warning(pool, count))

    def set_pool_limits(self) -> None:
        """POOL_LIMITS: set at each start, for every node (the API may change them later)."""
        assert self.store is not None
        for pool, limits in self.settings.pool_limits.items():
            try:
                self.store.run(
                    calls.control(self.store.keys, pool=pool, what="limits", limits=limits or None)
                )
            except RedisError as exc:
                log.warning("could not set the limits of pool %s: %s", pool, exc)

    def put_decorated_schedulers(self) -> None:
        """@job(cron=...): written at each start, for every node."""
        assert self.store is not None
        try:
            written = put_decorated(self.store, self.settings)
        except (RedisError, QueueError) as exc:
            log.warning("could not write the schedulers of @job(cron=...): %s", exc)
            return
        if written:
            log.info("schedulers of @job(cron=...): %s", ", ".join(written))

    def refuse_if_data_dir_in_use(self) -> None:
        client = sync_client(self.settings, socket_timeout=1, retry=None)
        try:
            client.ping()
        except RedisError:
            return
        finally:
            client.close()
        log.error(
            "DATA_DIR %s is in use by another running server; refusing to start",
            self.settings.data_dir,
        )
        sys.exit(1)

    def spawn_server(self) -> None:
        assert self.server is not None
        sock = self.settings.data_dir / embedded.SOCKET_NAME
        if sock.is_socket():
            sock.unlink()
        self.server_proc = proc = subprocess.Popen(
            self.server_args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            preexec_fn=partial(deathsig.server_preexec, os.getpid()),
        )
        self.server.spawned(proc.pid)
        metrics.embedded_server_up(True)
        threading.Thread(target=self._relay, args=(proc.stdout,), daemon=True).start()
        log.info("embedded server started (pid %s) at %s", proc.pid, self.settings.redis_url)

    @staticmethod
    def _relay(stream: Any) -> None:
        """The server's own output, as JSON lines like everything else."""
        server_log = logging.getLogger("valkey")
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace").rstrip()
            if text:
                server_log.info(text)

    def wait_for_server(self) -> None:
        client = sync_client(self.settings, socket_timeout=1)
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                client.ping()
                break
            except RedisError:
                if time.monotonic() > deadline:
                    log.error("embedded server did not answer within %gs", SERVER_START_SECONDS)
                    sys.exit(1)
                if self.server is not None and self.server.poll() is not None:
                    log.error("embedded server exited at start-up")
                    sys.exit(1)
                time.sleep(0.05)
        # loading a large AOF answers LOADING until done
        while client.info("persistence").get("loading"):
            time.sleep(0.05)
        client.close()

    # the loop: gunicorn calls manage_workers every turn and after every signal

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.stopping:
            return
        self.node.renew(self.redis)
        self.fire_schedulers()
        if self.server is not None and self.server.due():
            self.spawn_server()
        self.recover_pending()
        for child in self.consumers:
            # a slot is respawned only once the jobs of its dead process are handed back
            if child.due() and child.name not in self.to_recover:
                self.spawn_consumer(child)
        self.judge_consumers()
        self.roll_consumers()

    def fire_schedulers(self) -> None:
        """Make the jobs of due schedulers. Every master does it; Redis lets one make each."""
        now = time.monotonic()
        if now < self.next_tick:
            return
        self.next_tick = now + schedule.TICK_SECONDS
        assert self.store is not None
        try:
            for job_id in schedule.tick(self.store):
                log.info("scheduled job %s made", job_id)
            self.tick_failing = False
        except RedisError as exc:
            if not self.tick_failing:  # once per outage, not every second
                log.warning("cannot fire schedulers: %s", exc)
            self.tick_failing = True

    def judge_consumers(self) -> None:
        """Busy is not stuck. A consumer whose loop has not turned for CONSUMER_TIMEOUT is
        kept while it runs tries within their time-out (a job blocking the loop), and killed
        when it runs none (stuck); one whose try outlived its time-out is killed, and the try
        counts as timed out. While its heartbeat thread is silenced (a job holding the GIL)
        the master keeps its registration and leases alive."""
        now = time.monotonic()
        for child in self.consumers:
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
            self.store.keys,
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

    def spawn_workers(self) -> None:
        if time.monotonic() < self.http_not_before:
            return
        super().spawn_workers()

    def spawn_worker(self) -> int:
        pid: int = super().spawn_worker()
        self.http_started[pid] = time.monotonic()
        return pid

    def kill_worker(self, pid: int, sig: int) -> None:
        if sig == signal.SIGTERM:
            self.http_retired.add(pid)
        super().kill_worker(pid, sig)

    def spawn_consumer(self, child: Child) -> None:
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
        # the child: drop the master's signal handling and sockets, then run the consumer
        status = 0
        try:
            # with the master gone, hand the jobs back at once (SIGQUIT: a quick drain)
            deathsig.die_with_parent(signal.SIGQUIT, master)
            for sig in (*self.SIGNALS, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            for listener in self.LISTENERS:
                listener.close()
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

    # reaping

    def reap_workers(self) -> None:
        self.reap_children()
        before = set(self.WORKERS)
        super().reap_workers()
        for pid in before - set(self.WORKERS):
            self.http_exited(pid)
        # gunicorn's waitpid(-1) may have taken one of ours: poll() notices
        self.reap_children()

    def http_exited(self, pid: int) -> None:
        metric_files.process_died(pid)
        retired = pid in self.http_retired
        self.http_retired.discard(pid)
        if not self.stopping and not retired:
            metrics.count_restart("http")
        started = self.http_started.pop(pid, None)
        if self.stopping or started is None:
            return
        if time.monotonic() - started < 10:
            self.http_failures += 1
            delay = (
                0.0 if self.http_failures < 2 else min(0.5 * 2 ** (self.http_failures - 1), 30.0)
            )
            self.http_not_before = time.monotonic() + delay
            if delay:
                log.warning("http workers keep dying at start-up; next one in %.1fs", delay)
        else:
            self.http_failures = 0

    def reap_children(self) -> None:
        for child in [*self.consumers, *([self.server] if self.server else [])]:
            status = child.poll()
            if status is None:
                continue
            pid = child.pid
            metric_files.process_died(pid)
            if child is self.server:
                metrics.embedded_server_up(False)
            if not self.stopping and not self.rolled(child, pid):
                metrics.count_restart("server" if child is self.server else "consumer")
            delay = child.exited(clean_exit(status) or self.stopping)
            level = logging.INFO if self.stopping or clean_exit(status) else logging.ERROR
            log.log(level, "%s (pid %s) %s", child.name, pid, describe(status))
            if child is not self.server:
                self.to_recover[child.name] = child.meta["instance"]
            if delay and not self.stopping:
                log.warning("%s keeps dying at start-up; restart in %.1fs", child.name, delay)
        self.recover_pending()

    def rolled(self, child: Child, pid: int) -> bool:
        """Whether `pid` is the process a SIGHUP's rolling restart stopped in this slot."""
        return any(c is child and old == pid for c, old in self.rolling.values())

    def recover_pending(self) -> None:
        """Hand the jobs of consumers that died back to their pool, naming the dead process
        (its instance), as soon as Redis answers."""
        assert self.store is not None
        for cid, instance in list(self.to_recover.items()):
            pool = next(c.meta["pool"] for c in self.consumers if c.name == cid)
            try:
                back = self.store.recover_all(cid, pool, instance)
            except RedisError as exc:
                log.warning("cannot hand back the jobs of %s yet: %s", cid, exc)
                return
            del self.to_recover[cid]
            metrics.taken_back(pool, back.ended)
            if back.moved > 0:
                log.warning("handed %d jobs of %s back to pool %s", back.moved, cid, pool)

    # signals

    def handle_int(self) -> None:
        self.handle_term()

    def handle_hup(self) -> None:
        super().handle_hup()
        log.info("restarting consumers, one at a time in each pool")
        self.to_roll = {}
        for child in self.consumers:
            self.to_roll.setdefault(child.meta["pool"], []).append(child)

    def roll_consumers(self) -> None:
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

    # shutdown

    def stop(self, graceful: bool = True) -> None:
        """Stop HTTP workers and consumers together, wait for the drain, then the server."""
        self.stopping = True
        for child in self.consumers:
            child.signal(signal.SIGTERM if graceful else signal.SIGQUIT)
        super().stop(graceful)
        limit = (
            time.monotonic()
            + (self.cfg.graceful_timeout if graceful else 2.0)
            + CONSUMER_STOP_MARGIN
        )
        while any(c.pid for c in self.consumers) and time.monotonic() < limit:
            self.reap_children()
            time.sleep(0.05)
        for child in self.consumers:
            if child.pid:
                log.error("consumer %s did not stop in time; killing it", child.name)
                child.signal(signal.SIGKILL)
        while any(c.pid for c in self.consumers):
            self.reap_children()
            time.sleep(0.02)
        if self.redis is not None:
            self.node.release(self.redis)
        self.stop_server()

    def stop_server(self) -> None:
        if self.server is None or not self.server.pid:
            return
        self.server.signal(signal.SIGTERM)  # valkey writes and fsyncs the AOF on SIGTERM
        limit = time.monotonic() + SERVER_STOP_SECONDS
        while self.server.pid and time.monotonic() < limit:
            if self.server.poll() is not None:
                self.server.pid = 0
                break
            time.sleep(0.05)
        if self.server.pid:
            self.server.signal(signal.SIGKILL)
            self.server.poll()
            self.server.pid = 0
        log.info("embedded server stopped")
