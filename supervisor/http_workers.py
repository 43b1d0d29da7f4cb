"""What the master adds to gunicorn's HTTP workers: their restarts counted and backed off."""

from __future__ import annotations

import logging
import time

from jobs import metrics
from supervisor import metric_files
from supervisor.backoff import Backoff

log = logging.getLogger("supervisor")


class HttpWorkers:
    """One back-off for all of them: gunicorn starts any missing worker each turn."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        # workers the master itself told to stop (HUP, TTOU): not restarts
        self.retired: set[int] = set()
        self.backoff = Backoff()

    def may_spawn(self) -> bool:
        return self.backoff.allows(time.monotonic())

    def spawned(self, pid: int) -> None:
        self.started[pid] = time.monotonic()

    def retiring(self, pid: int) -> None:
        self.retired.add(pid)

    def exited(self, pid: int, stopping: bool) -> None:
        metric_files.process_died(pid)
        retired = pid in self.retired
        self.retired.discard(pid)
        if not stopping and not retired:
            metrics.count_restart("http")
        started = self.started.pop(pid, None)
        if stopping or started is None:
            return
        delay = self.backoff.died(started, time.monotonic())
        if delay:
            log.warning("http workers keep dying at start-up; next one in %.1fs", delay)
