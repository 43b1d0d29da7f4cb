"""A supervised child that is not an HTTP worker (a consumer slot, the embedded server), and
how the master reaps one."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from jobs import metrics
from supervisor import metric_files
from supervisor.backoff import Backoff

log = logging.getLogger("supervisor")


@dataclass
class Child:
    """One supervised child: its pid while it runs, and its restart back-off."""

    name: str
    pid: int = 0
    started: float = 0.0
    backoff: Backoff = field(default_factory=Backoff)
    meta: dict[str, str] = field(default_factory=dict)
    # a consumer's shared memory (jobs.pulse.Pulse): its loop, heartbeat and deadline times
    pulse: Any = None
    warned: float = 0.0

    def spawned(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()

    def exited(self, clean: bool) -> float:
        """Forget the pid and schedule the restart; returns the back-off in seconds."""
        self.pid = 0
        return self.backoff.died(self.started, time.monotonic(), clean)

    def due(self) -> bool:
        return self.pid == 0 and self.backoff.allows(time.monotonic())

    def signal(self, sig: int) -> None:
        if self.pid:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def poll(self) -> int | None:
        """The wait status if the child has exited (-1 when another reaper took it), else None."""
        if not self.pid:
            return None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        return status if pid else None


def reap(child: Child, kind: str, stopping: bool, asked: bool = False) -> int:
    """The pid of `child` if it has exited (logged, counted, its restart scheduled), else 0.
    A restart is counted unless the master is stopping or `asked` the child to stop."""
    status = child.poll()
    if status is None:
        return 0
    pid = child.pid
    metric_files.process_died(pid)
    if not stopping and not asked:
        metrics.count_restart(kind)
    clean = clean_exit(status)
    delay = child.exited(clean or stopping)
    log.log(
        logging.INFO if stopping or clean else logging.ERROR,
        "%s (pid %s) %s",
        child.name,
        pid,
        describe(status),
    )
    if delay and not stopping:
        log.warning("%s keeps dying at start-up; restart in %.1fs", child.name, delay)
    return pid


def describe(status: int) -> str:
    if status == -1:
        return "exited (status unknown)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def clean_exit(status: int) -> bool:
    return status != -1 and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
