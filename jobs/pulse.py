"""What a consumer tells its master without Redis and without its GIL: shared memory.

The master maps it before the fork; the consumer writes three CLOCK_MONOTONIC times (one host,
one clock): when its loop last turned, when its heartbeat thread last ran, and the earliest
time by which one of its running tries must end (0 when none runs). The master reads them to
tell a busy consumer (inside a job, within its time-out) from a stuck one.
"""

from __future__ import annotations

import mmap
import struct
import time

_FORMAT = "ddd"
_LOOP, _BEAT, _DEADLINE = 0, 8, 16


class Pulse:
    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, struct.calcsize(_FORMAT))
        self.loop()
        self.beat()

    def _write(self, offset: int, value: float) -> None:
        struct.pack_into("d", self.memory, offset, value)

    def loop(self) -> None:
        self._write(_LOOP, time.monotonic())

    def beat(self) -> None:
        self._write(_BEAT, time.monotonic())

    def deadline(self, when: float) -> None:
        self._write(_DEADLINE, when)

    def read(self) -> tuple[float, float, float]:
        """(loop, beat, deadline) in time.monotonic() seconds."""
        loop, beat, deadline = struct.unpack_from(_FORMAT, self.memory)
        return loop, beat, deadline

    def close(self) -> None:
        self.memory.close()
