"""Real processes for the tests: a Valkey server and the whole service, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from supervisor.embedded import server_binary

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def debian_tool(binary: str, package: str) -> str:
    """The path of a program from Debian's packages, installed with apt-get when missing."""
    import shutil

    found = shutil.which(binary)
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        found = shutil.which(binary)
    assert found is not None, f"{binary} (Debian package {package}) could not be installed"
    return found


def wait_for(
    check: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: {last}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False


def children(pid: int) -> dict[int, str]:
    """Direct children of `pid` with their process titles."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                out[int(entry.name)] = cmd
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every descendant, found through /proc, all at one instant: each is
    stopped (SIGSTOP) before any is killed, so none sees another die (a consumer whose master
    dies first would hand its jobs back) and the master spawns nothing in between."""
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGSTOP)
        found.append(p)
        todo.extend(children(p))
    for p in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    for p in found:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, 0)


class Valkey:
    """A valkey-server on a free loopback port, stopped by pid."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = False,
        also_bind: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """`also_bind`: another address to listen on besides loopback (a test network's);
        `extra`: more server arguments."""
        self.port = port or free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        bind = ["127.0.0.1", *([also_bind] if also_bind else [])]
        args = [server_binary(), "--port", str(self.port), "--bind", *bind, "--save", "",
                "--appendonly", "yes" if appendonly else "no", "--dir", str(data_dir),
                "--protected-mode", "no" if also_bind else "yes",
                "--daemonize", "no", "--logfile", str(data_dir / "valkey.log"), *extra]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(client.ping, 10, what="valkey to answer")
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Service:
    """`python -m supervisor` as a subprocess, with its own port and data directory."""

    def __init__(
        self, data_dir: Path, host: str = "127.0.0.1", wrap: list[str] | None = None, **env: Any
    ) -> None:
        """`wrap`: a command prefix the master runs under (it must exec, so that the pid stays
        the master's), such as `ip netns exec <ns>`; `host` the address it listens on."""
        self.port = free_port()
        self.data_dir = data_dir
        self.wrap = wrap or []
        self.log_path = data_dir.parent / f"{data_dir.name}-service-{self.port}.log"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": host,
            "DATA_DIR": str(data_dir),
            "WEB_CONCURRENCY": "2",
            "CONSUMERS": "2",
            "GRACEFUL_TIMEOUT": "10",
            "NODE_NAME": "test",
            "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}",
            **{k: str(v) for k, v in env.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://{host}:{self.port}", timeout=10)

    def start(self, ready: bool = True) -> Service:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "supervisor"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        if ready:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}: {self.tail()}")
            return self.http.get("/ready").status_code == 200

        wait_for(ready, timeout, 0.1, "the service to be ready")

    def roles(self) -> dict[str, list[int]]:
        """The master's children grouped by role: http, consumer, server."""
        out: dict[str, list[int]] = {"http": [], "consumer": [], "server": []}
        for pid, title in children(self.pid).items():
            if title.startswith("supervisor: http worker"):
                out["http"].append(pid)
            elif title.startswith("supervisor: consumer"):
                out["consumer"].append(pid)
            elif "valkey-server" in title or "redis-server" in title:
                out["server"].append(pid)
        return out

    def enqueue(self, name: str, data: dict[str, Any] | None = None, **options: Any) -> str:
        body: dict[str, Any] = {"jobName": name, "data": data or {}}
        if options:
            body["options"] = options
        r = self.http.post("/enqueue-task", json=body)
        assert r.status_code in (200, 202), r.text
        job_id: str = r.json()["jobId"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def wait_status(self, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["status"] == status and j,
            timeout,
            0.05,
            f"{job_id} {status}",
        )

    def store(self) -> redis.Redis:
        """A client of the service's Redis (the embedded one through its socket)."""
        url = self.env.get("REDIS_URL") or f"unix://{self.data_dir / 'valkey.sock'}"
        return redis.Redis.from_url(url, decode_responses=True)

    def statuses(self, ids: list[str]) -> dict[str, str | None]:
        """Each job's status, read straight from Redis (None: no such job)."""
        with self.store() as client:
            pipe = client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget("{mq:default}:job:" + job_id, "status")
            return dict(zip(ids, pipe.execute(), strict=True))

    def wait_all_completed(self, ids: list[str], timeout: float = 60) -> None:
        def done() -> bool:
            states = self.statuses(ids)
            missing = [i for i, s in states.items() if s is None]
            assert not missing, f"{len(missing)} accepted jobs are gone, e.g. {missing[:3]}"
            return all(s == "completed" for s in states.values())

        wait_for(done, timeout, 0.2, f"{len(ids)} jobs to complete")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Drain with SIGTERM; whatever is still there after a while is killed, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            tree = [self.pid, *children(self.pid)]
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            for pid in tree:
                if alive(pid):
                    kill_tree(pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.http.close()
        if hasattr(self, "log"):
            self.log.close()


@contextlib.contextmanager
def running(data_dir: Path, **env: Any) -> Iterator[Service]:
    service = Service(data_dir, **env)
    try:
        yield service.start()
    finally:
        service.stop()


class Load:
    """Clients enqueueing in a loop from threads; remembers every job that got a 2xx."""

    def __init__(
        self, base_url: str, clients: int = 4, job: str = "noop", data: dict[str, Any] | None = None
    ) -> None:
        import threading

        self.base_url = base_url
        self.accepted: list[str] = []
        self.failed = 0
        self.statuses: dict[int, int] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.body = {"jobName": job, "data": data or {}}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            deadline = time.monotonic() + 120  # bounded even if never stopped
            while not self.stopping.is_set() and time.monotonic() < deadline:
                try:
                    r = client.post("/enqueue-task", json=self.body)
                except httpx.HTTPError:
                    with self.lock:
                        self.failed += 1
                    time.sleep(0.01)
                    continue
                with self.lock:
                    self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
                    if r.status_code in (200, 202):
                        self.accepted.append(r.json()["jobId"])
                if r.status_code >= 500:
                    time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(10)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)
