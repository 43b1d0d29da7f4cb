"""Supervised children that are not HTTP workers: consumer slots and the embedded server."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

# a child that dies sooner than this after it started counts as failing at start-up
QUICK_DEATH_SECONDS = 10.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


@dataclass
class Child:
    """One supervised child: its pid while it runs, and its restart back-off."""

    name: str
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    not_before: float = 0.0
    meta: dict[str, str] = field(default_factory=dict)
    # a consumer's shared memory (jobs.pulse.Pulse): its loop, heartbeat and deadline times
    pulse: Any = None
    warned: float = 0.0

    def spawned(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()

    def exited(self, clean: bool) -> float:
        """Forget the pid and schedule the restart; returns the back-off in seconds."""
        now = time.monotonic()
        quick = now - self.started < QUICK_DEATH_SECONDS
        self.failures = self.failures + 1 if (quick and not clean) else 0
        delay = (
            0.0 if self.failures == 0 else min(BACKOFF_BASE * 2 ** (self.failures - 1), BACKOFF_MAX)
        )
        if self.failures == 1:
            delay = 0.0  # one quick death is an accident; a second one starts the back-off
        self.pid = 0
        self.not_before = now + delay
        return delay

    def due(self) -> bool:
        return self.pid == 0 and time.monotonic() >= self.not_before

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
