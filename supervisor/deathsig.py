"""Children die with their master: the kernel signals a child when its parent dies
(`PR_SET_PDEATHSIG`), so a `kill -9` of the master leaves no process of its tree behind."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int) -> None:
    """Ask for `sig` when the parent dies; if `parent` already died (before the call), go now."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


def server_preexec(parent: int) -> None:
    """For the embedded server (Popen's preexec_fn): SIGTERM, so it writes its AOF and exits."""
    os.setsid()  # a Ctrl-C in the terminal reaches the master, not the server
    die_with_parent(signal.SIGTERM, parent)
