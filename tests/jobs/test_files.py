"""`open_beneath`: a file below FILES_DIR, by openat2 and by the descriptor walk, on real files."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import re
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import jobs.builtin
from jobs.errors import JobInputError
from jobs.files import OpenBeneathError, open_beneath, openat2_available, opened_with

INSIDE = b"inside\n"
OUTSIDE = b"OUTSIDE\n"


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    kernel: bool = request.param
    if kernel and not openat2_available():
        pytest.skip("no openat2 here (test_openat2_is_the_path_taken_on_this_kernel says why)")
    return kernel


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """root/sub/file (inside), and outside/file and outside/passwd next to root."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "file").write_bytes(INSIDE)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_bytes(OUTSIDE)
    (tmp_path / "outside" / "passwd").write_bytes(OUTSIDE)
    return tmp_path / "root"


def read(root: Path, relative: str, use_openat2: bool | None) -> bytes:
    fd = open_beneath(root, relative, use_openat2=use_openat2)
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def refusal(root: Path, relative: str, use_openat2: bool | None) -> OpenBeneathError:
    with pytest.raises(OpenBeneathError) as caught:
        open_beneath(root, relative, use_openat2=use_openat2)
    assert caught.value.path == relative and repr(relative) in str(caught.value)
    return caught.value


def finishes_within(seconds: float, call: Callable[[], Any], unblock: Callable[[], None]) -> Any:
    """`call()` in a daemon thread; fail (after `unblock()`, so no thread is left) if it hangs."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        unblock()
        thread.join(5)
        pytest.fail(f"the call still blocked after {seconds}s")
    return outcome[0]


def test_a_regular_file_in_a_subdirectory_is_read(root: Path, use_openat2: bool) -> None:
    assert read(root, "sub/file", use_openat2) == INSIDE
    assert read(root, "./sub/./file", use_openat2) == INSIDE


def test_the_descriptor_is_blocking_and_closed_on_exec(root: Path, use_openat2: bool) -> None:
    fd = open_beneath(root, "sub/file", use_openat2=use_openat2)
    try:
        assert os.get_blocking(fd) and not os.get_inheritable(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("../x", "'..'"),
        ("sub/../sub/file", "'..'"),
        ("/etc/passwd", "relative"),
        ("", "relative"),
        ("sub//file", "empty"),
        ("sub/file/", "empty"),
        ("sub/file\x00.png", "NUL"),
        (".", "name a file"),
    ],
)
def test_an_escaping_or_malformed_path_is_refused_before_the_disk_is_touched(
    tmp_path: Path, use_openat2: bool, relative: str, reason: str
) -> None:
    # the root does not even exist: a refusal naming the files directory would mean it was opened
    assert reason in refusal(tmp_path / "missing", relative, use_openat2).reason


def test_a_symlink_as_the_last_component_is_refused_wherever_it_points(
    root: Path, use_openat2: bool
) -> None:
    (root / "out").symlink_to(root.parent / "outside" / "file")
    (root / "in").symlink_to(root / "sub" / "file")
    assert "symlink" in refusal(root, "out", use_openat2).reason
    assert "symlink" in refusal(root, "in", use_openat2).reason


@pytest.mark.parametrize("target", ["/etc", "outside"])
def test_a_directory_replaced_by_a_symlink_to_outside_is_refused(
    root: Path, use_openat2: bool, target: str
) -> None:
    (root / "sub" / "file").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(target if target.startswith("/") else root.parent / target)
    assert "symlink" in refusal(root, "sub/passwd", use_openat2).reason


def test_a_missing_file_is_refused_naming_the_path(root: Path, use_openat2: bool) -> None:
    assert refusal(root, "sub/nothing", use_openat2).reason == os.strerror(errno.ENOENT)
    assert refusal(root, "sub/file/x", use_openat2).reason == os.strerror(errno.ENOTDIR)


def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(
    root: Path, use_openat2: bool
) -> None:
    fifo = root / "sub" / "fifo"
    os.mkfifo(fifo)

    def unblock() -> None:  # a writer releases an open() stuck waiting for one
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    outcome = finishes_within(
        3, lambda: open_beneath(root, "sub/fifo", use_openat2=use_openat2), unblock
    )
    assert isinstance(outcome, OpenBeneathError), outcome
    assert "FIFO" in outcome.reason


def test_a_directory_is_refused(root: Path, use_openat2: bool) -> None:
    assert "directory" in refusal(root, "sub", use_openat2).reason


def test_a_char_device_is_refused(root: Path, use_openat2: bool) -> None:
    try:
        os.mknod(root / "sub" / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    # a nodev mount refuses the open itself (EACCES); otherwise fstat tells it is a device
    reason = refusal(root, "sub/null", use_openat2).reason
    assert "device" in reason or reason == os.strerror(errno.EACCES), reason


def test_a_unix_socket_is_refused(root: Path, use_openat2: bool) -> None:
    path = root / "sub" / "sock"
    if len(os.fsencode(path)) >= 100:
        pytest.skip("tmp_path too long for a unix socket")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        # open(2) of a socket fails with ENXIO before fstat sees it
        reason = refusal(root, "sub/sock", use_openat2).reason
    assert "socket" in reason or reason == os.strerror(errno.ENXIO), reason


def test_a_directory_swapped_for_a_symlink_in_a_loop_never_yields_the_outside_file(
    root: Path, use_openat2: bool
) -> None:
    sub, held, link = root / "sub", root / "held", root / "link"
    outside = root.parent / "outside"
    stop = threading.Event()
    swaps = 0

    def swap() -> None:  # sub: directory, gone, symlink to outside, gone, directory, ...
        nonlocal swaps
        while not stop.is_set():
            os.rename(sub, held)
            os.symlink(outside, link)
            os.rename(link, sub)
            os.unlink(sub)
            os.rename(held, sub)
            swaps += 1

    outcomes: Counter[str] = Counter()
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave the two threads as finely as Python allows
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        # at least 2000 opens, and on until both the swapped-in symlink and the real directory
        # were met 20 times each (scheduling decides the mix), within 20 s
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            sum(outcomes.values()) < 2000
            or min(outcomes["read inside"], outcomes["a symlink is in the path"]) < 20
        ):
            try:
                content = read(root, "sub/file", use_openat2)
            except OpenBeneathError as exc:
                outcomes[exc.reason] += 1
            else:
                assert content == INSIDE, content
                outcomes["read inside"] += 1
    finally:
        stop.set()
        swapper.join(10)
        sys.setswitchinterval(old_interval)
    assert not swapper.is_alive()
    assert swaps > 0 and outcomes["read inside"] >= 20, outcomes
    # ENOTDIR: the walk met the symlink, which was gone by the time it looked at what it was
    refusals = {"a symlink is in the path", os.strerror(errno.ENOENT), os.strerror(errno.ENOTDIR)}
    assert set(outcomes) <= {"read inside", *refusals}, outcomes
    assert outcomes["a symlink is in the path"] >= 20, outcomes


def kernel_has_openat2() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    major, minor = (int(n) for n in platform.release().split(".")[:2])
    return (major, minor) >= (5, 6)


def test_openat2_is_the_path_taken_on_this_kernel(root: Path) -> None:
    if not kernel_has_openat2():
        pytest.skip(f"kernel {platform.release()} predates openat2 (5.6)")
    assert openat2_available(), "Linux >= 5.6 but openat2 refused (a seccomp filter?)"
    before = opened_with.copy()
    assert read(root, "sub/file", None) == INSIDE
    refusal(root, "sub/nothing", None)
    assert opened_with["openat2"] - before["openat2"] == 2
    assert opened_with["walk"] == before["walk"]


@pytest.fixture
def files_dir(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    settings = SimpleNamespace(allowed_files_dir=root)
    monkeypatch.setattr(jobs.builtin, "get_settings", lambda: settings)
    yield root


def test_the_file_processing_job_turns_a_refusal_into_an_input_error_naming_the_path(
    files_dir: Path,
) -> None:
    os.mkfifo(files_dir / "fifo")
    result = jobs.builtin.file_processing(None, {"path": "sub/file"})
    assert result == {
        "source": "sub/file",
        "size": len(INSIDE),
        "lines": 1,
        "sha256": hashlib.sha256(INSIDE).hexdigest(),
    }
    for path in ("fifo", "../outside/file", "sub"):
        with pytest.raises(JobInputError, match=re.escape(repr(path))):
            jobs.builtin.file_processing(None, {"path": path})
