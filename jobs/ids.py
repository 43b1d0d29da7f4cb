"""Random ids (job ids, request ids): hex of bytes from the OS's CSPRNG, as `secrets` makes,
read 4 KiB at a time instead of one system call per id."""

from __future__ import annotations

import os
import threading

CHUNK = 4096

_lock = threading.Lock()
_buffer = b""
_at = 0


def _forget() -> None:
    # a forked child must never hand out the bytes its parent has
    global _buffer, _at
    _buffer, _at = b"", 0


os.register_at_fork(after_in_child=_forget)


def token_hex(nbytes: int = 16) -> str:
    global _buffer, _at
    with _lock:
        if _at + nbytes > len(_buffer):
            _buffer, _at = os.urandom(CHUNK), 0
        start, _at = _at, _at + nbytes
        return _buffer[start:_at].hex()
