"""When the master starts a child again after it died: at once, unless it keeps dying at start-up.

One rule for every kind of child (HTTP workers, consumers, the embedded server): nothing after
the first quick death, then 1 s, 2 s, 4 s ... up to 30 s; a death after a longer life, or a
clean exit, starts the count again.
"""

from __future__ import annotations

from dataclasses import dataclass

# a child that dies sooner than this after it started counts as failing at start-up
QUICK_DEATH_SECONDS = 10.0
FIRST_DELAY = 1.0
MAX_DELAY = 30.0


@dataclass
class Backoff:
    failures: int = 0  # quick deaths in a row
    delay: float = 0.0
    not_before: float = 0.0

    def died(self, started: float, now: float, clean: bool = False) -> float:
        """A child started at `started` died at `now`: the seconds to wait before the next start."""
        if clean or now - started >= QUICK_DEATH_SECONDS:
            self.failures = 0
            self.delay = 0.0
            return 0.0
        self.failures += 1
        # one quick death is an accident; a second one starts the back-off
        self.delay = 0.0 if self.failures == 1 else min(max(2 * self.delay, FIRST_DELAY), MAX_DELAY)
        self.not_before = now + self.delay
        return self.delay

    def allows(self, now: float) -> bool:
        return now >= self.not_before
