"""On PYTHONPATH of a test node whose wall clock runs CLOCK_OFFSET_SECONDS ahead: every Python
process of the node (master, HTTP workers, consumers) reads `time.time()` that far ahead.

Debian's faketime (libfaketime) would do this below Python, but on this glibc it hangs
`threading.Event.wait` (faked CLOCK_MONOTONIC) or fails `time.sleep` with EINVAL
(FAKETIME_DONT_FAKE_MONOTONIC), so the node could not run at all."""

import os
import time

_offset = float(os.environ.get("CLOCK_OFFSET_SECONDS", "0"))
if _offset:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _offset
    time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
