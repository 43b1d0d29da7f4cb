"""Open a file for reading below a directory, never leaving it, never blocking on a FIFO.

`open_beneath(root, relative)` is the only entry point. On Linux 5.6+ it is one `openat2(2)`
call with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: the kernel refuses
any symlink, `..` or absolute jump on the whole path, atomically. Where the kernel lacks it (or a
seccomp filter answers EPERM), it walks from a descriptor of `root`, one component at a time,
each opened with `O_NOFOLLOW` relative to its parent's descriptor, so a directory swapped for a
symlink mid-walk is refused, never followed. Both open with `O_NONBLOCK` (a FIFO does not wait
for a writer) and keep only regular files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections import Counter
from pathlib import Path

__all__ = ["OpenBeneathError", "open_beneath", "openat2_available", "opened_with"]

SYS_OPENAT2 = 437  # the same number on every Linux architecture (the unified syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC

# how many opens tried each path ("openat2" or "walk"): tests check the kernel's path is used
opened_with: Counter[str] = Counter()


class OpenBeneathError(Exception):
    """The path cannot be opened as a regular file below the root; `str()` names the path."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot open {path!r}: {reason}")
        self.path = path
        self.reason = reason


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc: ctypes.CDLL | None = None
_available: bool | None = None  # None: not probed yet


def _openat2(dirfd: int, path: bytes, flags: int) -> int:
    """The raw syscall: a descriptor, or OSError with the kernel's errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    how = _OpenHow(flags=flags, mode=0, resolve=_RESOLVE)
    while True:
        fd: int = _libc.syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(path),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        # EAGAIN: the kernel saw a rename race it could not rule out and asks for a retry
        if err not in (errno.EINTR, errno.EAGAIN):
            raise OSError(err, os.strerror(err))


def _probe(dirfd: int) -> bool:
    """Whether openat2 works here: a harmless open of `dirfd` itself, done once."""
    global _available
    if _available is None:
        if not sys.platform.startswith("linux"):
            _available = False
        else:
            try:
                os.close(_openat2(dirfd, b".", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC))
                _available = True
            except OSError:  # ENOSYS (old kernel), EPERM (seccomp), EINVAL (unknown flags)
                _available = False
    return _available


def openat2_available() -> bool:
    """Whether this kernel (and its seccomp filter) lets `open_beneath` use openat2."""
    if _available is not None:
        return _available
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        return _probe(fd)
    finally:
        os.close(fd)


def _parts(relative: str) -> list[str]:
    """The components of `relative`, refused before the disk is touched if any could escape."""
    if "\x00" in relative:
        raise OpenBeneathError(relative, "path must not contain NUL")
    if not relative or relative.startswith("/") or os.path.isabs(relative):
        raise OpenBeneathError(relative, "path must be relative to the files directory")
    parts = relative.split("/")
    if any(part == ".." for part in parts):
        raise OpenBeneathError(relative, "path must not contain '..'")
    if any(part == "" for part in parts):
        raise OpenBeneathError(relative, "path must not contain empty components")
    parts = [part for part in parts if part != "."]
    if not parts:
        raise OpenBeneathError(relative, "path must name a file")
    return parts


def _is_symlink(part: str, dirfd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(part, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _walk(rootfd: int, parts: list[str]) -> int:
    """Open `parts` below `rootfd` one component at a time, following no symlink."""
    fd = rootfd
    try:
        for part in parts[:-1]:
            try:
                parent, fd = fd, os.open(part, _DIR_FLAGS, dir_fd=fd)
            except NotADirectoryError:
                # Linux answers ENOTDIR, not ELOOP, for a symlink under O_DIRECTORY|O_NOFOLLOW:
                # tell which it was (the message only; the open already refused it)
                if _is_symlink(part, fd):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                raise
            if parent != rootfd:
                os.close(parent)
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        if fd != rootfd:
            os.close(fd)


def _kind(mode: int) -> str | None:
    """None for a regular file, else what the descriptor is."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "something else"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink is in the path"
    if exc.errno == errno.EXDEV:
        return "path leads outside the files directory"
    return exc.strerror or str(exc)


def open_beneath(root: Path, relative: str, *, use_openat2: bool | None = None) -> int:
    """A descriptor open for reading on the regular file `relative` below `root`.

    `use_openat2`: None picks openat2 where the kernel has it, else the walk; True insists on
    openat2 (OSError ENOSYS without it); False forces the walk. The caller closes the
    descriptor. Raises `OpenBeneathError` for anything that is not a regular file reached
    without symlinks or `..` (including a missing file or a missing `root`).
    """
    parts = _parts(relative)
    try:
        rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as exc:
        raise OpenBeneathError(relative, f"files directory: {_reason(exc)}") from None
    try:
        kernel = _probe(rootfd) if use_openat2 is None else use_openat2
        if kernel and not _probe(rootfd):
            raise OSError(errno.ENOSYS, "openat2 is not available on this kernel")
        opened_with["openat2" if kernel else "walk"] += 1
        try:
            if kernel:
                fd = _openat2(rootfd, os.fsencode("/".join(parts)), _FILE_FLAGS)
            else:
                fd = _walk(rootfd, parts)
        except OSError as exc:
            raise OpenBeneathError(relative, _reason(exc)) from None
    finally:
        os.close(rootfd)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise OpenBeneathError(relative, f"path is {kind}, not a regular file")
        os.set_blocking(fd, True)  # O_NONBLOCK served the open; reads of a file ignore it
    except BaseException:
        os.close(fd)
        raise
    return fd
