"""The embedded server as a child of the master: the first to start, restarted when it dies,
the last to stop. Its command line is in `supervisor.embedded`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from jobs import metrics
from jobs.connection import sync_client
from jobs.settings import Settings
from supervisor import deathsig, embedded
from supervisor.children import Child, reap

log = logging.getLogger("supervisor")

START_SECONDS = 30.0
STOP_SECONDS = 10.0


class EmbeddedServer:
    def __init__(self, settings: Settings) -> None:
        # fixed once, so a restarted server is found where the children look for it
        self.args, url = embedded.command(settings.data_dir, settings.embedded_maxmemory)
        self.settings = settings.with_redis_url(url)
        self.child = Child("valkey")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers; exits 1 when it cannot."""
        self.refuse_if_data_dir_in_use()
        self.spawn()
        self.wait_until_up()

    def refuse_if_data_dir_in_use(self) -> None:
        client = sync_client(self.settings, socket_timeout=1, retry=None)
        try:
            client.ping()
        except RedisError:
            return
        finally:
            client.close()
        log.error(
            "DATA_DIR %s is in use by another running server; refusing to start",
            self.settings.data_dir,
        )
        sys.exit(1)

    def due(self) -> bool:
        return self.child.due()

    def spawn(self) -> None:
        sock = self.settings.data_dir / embedded.SOCKET_NAME
        if sock.is_socket():
            sock.unlink()
        self.proc = proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            preexec_fn=partial(deathsig.server_preexec, os.getpid()),
        )
        self.child.spawned(proc.pid)
        metrics.embedded_server_up(True)
        threading.Thread(target=self._relay, args=(proc.stdout,), daemon=True).start()
        log.info("embedded server started (pid %s) at %s", proc.pid, self.settings.redis_url)

    @staticmethod
    def _relay(stream: Any) -> None:
        """The server's own output, as JSON lines like everything else."""
        server_log = logging.getLogger("valkey")
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace").rstrip()
            if text:
                server_log.info(text)

    def wait_until_up(self) -> None:
        client = sync_client(self.settings, socket_timeout=1)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                client.ping()
                break
            except RedisError:
                if time.monotonic() > deadline:
                    log.error("embedded server did not answer within %gs", START_SECONDS)
                    sys.exit(1)
                if self.child.poll() is not None:
                    log.error("embedded server exited at start-up")
                    sys.exit(1)
                time.sleep(0.05)
        # loading a large AOF answers LOADING until done
        while client.info("persistence").get("loading"):
            time.sleep(0.05)
        client.close()

    def reap(self, stopping: bool) -> None:
        if reap(self.child, "server", stopping):
            metrics.embedded_server_up(False)

    def stop(self) -> None:
        child = self.child
        if not child.pid:
            return
        child.signal(signal.SIGTERM)  # valkey writes and fsyncs the AOF on SIGTERM
        limit = time.monotonic() + STOP_SECONDS
        while child.pid and time.monotonic() < limit:
            if child.poll() is not None:
                child.pid = 0
                break
            time.sleep(0.05)
        if child.pid:
            child.signal(signal.SIGKILL)
            child.poll()
            child.pid = 0
        log.info("embedded server stopped")
