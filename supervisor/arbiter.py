"""The master: gunicorn's Arbiter, with the consumers and the embedded server in its loop.

gunicorn keeps the HTTP workers (spawn, reap, TTIN/TTOU, HUP, graceful stop). The hooks below
add the other kinds of child, each in its own class: they are spawned in `manage_workers`,
reaped in `reap_workers`, restarted on HUP and stopped in `stop`, the embedded server last.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any

import setproctitle
from gunicorn import util
from gunicorn.arbiter import Arbiter

from jobs.connection import sync_client
from jobs.settings import Settings, set_settings
from jobs.store import SyncStore
from supervisor import startup
from supervisor.consumers import Consumers
from supervisor.embedded_server import EmbeddedServer
from supervisor.http_workers import HttpWorkers
from supervisor.node import NodeClaim, NodeTaken
from supervisor.schedulers import Schedulers

log = logging.getLogger("supervisor")

CONSUMER_STOP_MARGIN = 5.0


def _title(title: str) -> None:
    """gunicorn titles its processes `master [name]` and `worker [name]`; ours name the role."""
    role = title.split(" ", 1)[0]
    setproctitle.setproctitle("supervisor: " + {"worker": "http worker"}.get(role, role))


util._setproctitle = _title


class Master(Arbiter):  # type: ignore[misc]
    """Supervises HTTP workers (gunicorn's), consumers and the embedded server."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.server: EmbeddedServer | None = None
        if settings.embedded:
            self.server = EmbeddedServer(settings)
            settings = self.server.settings
        self.settings = settings
        self.http = HttpWorkers()
        self.consumers = Consumers(settings, leave_master=self.leave_master)
        self.schedulers = Schedulers()
        self.node = NodeClaim(settings)
        self.redis: Any = None
        self.stopping = False
        super().__init__(app)

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
        set_settings(self.settings)
        self.redis = sync_client(self.settings, socket_timeout=5)
        store = SyncStore(self.redis, self.settings)
        startup.prepare(store, self.settings)
        self.consumers.store = self.schedulers.store = store
        try:
            self.node.claim(self.redis)
        except NodeTaken as exc:
            log.error("%s", exc)
            if self.server is not None:
                self.server.stop()
            sys.exit(1)
        super().start()

    # the loop: gunicorn calls manage_workers every turn and after every signal

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.stopping:
            return
        self.node.renew(self.redis)
        self.schedulers.fire()
        if self.server is not None and self.server.due():
            self.server.spawn()
        self.consumers.manage()

    def spawn_workers(self) -> None:
        if self.http.may_spawn():
            super().spawn_workers()

    def spawn_worker(self) -> int:
        pid: int = super().spawn_worker()
        self.http.spawned(pid)
        return pid

    def kill_worker(self, pid: int, sig: int) -> None:
        if sig == signal.SIGTERM:
            self.http.retiring(pid)
        super().kill_worker(pid, sig)

    def leave_master(self) -> None:
        """In a forked consumer: the master's signal handling and sockets are not its own."""
        for sig in (*self.SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for listener in self.LISTENERS:
            listener.close()

    # reaping

    def reap_workers(self) -> None:
        self.reap_children()
        before = set(self.WORKERS)
        super().reap_workers()
        for pid in before - set(self.WORKERS):
            self.http.exited(pid, self.stopping)
        # gunicorn's waitpid(-1) may have taken one of ours: poll() notices
        self.reap_children()

    def reap_children(self) -> None:
        self.consumers.reap(self.stopping)
        if self.server is not None:
            self.server.reap(self.stopping)
        self.consumers.recover()

    # signals

    def handle_int(self) -> None:
        self.handle_term()

    def handle_hup(self) -> None:
        super().handle_hup()
        self.consumers.restart_all()

    # shutdown

    def stop(self, graceful: bool = True) -> None:
        """Stop HTTP workers and consumers together, wait for the drain, then the server."""
        self.stopping = True
        self.consumers.signal(signal.SIGTERM if graceful else signal.SIGQUIT)
        super().stop(graceful)
        limit = (
            time.monotonic()
            + (self.cfg.graceful_timeout if graceful else 2.0)
            + CONSUMER_STOP_MARGIN
        )
        while self.consumers.running() and time.monotonic() < limit:
            self.reap_children()
            time.sleep(0.05)
        self.consumers.kill_the_late()
        while self.consumers.running():
            self.reap_children()
            time.sleep(0.02)
        if self.redis is not None:
            self.node.release(self.redis)
        if self.server is not None:
            self.server.stop()
