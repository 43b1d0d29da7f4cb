"""One live master per NODE_NAME across the fleet, held as a key with a short expiry."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from redis.exceptions import RedisError

from jobs.settings import Settings
from jobs.store import Shared

log = logging.getLogger("supervisor.node")

CLAIM_SECONDS = 15.0
RENEW_SECONDS = 2.0


class NodeTaken(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NodeClaim:
    """Consumer ids are `<node>-<pool>-<slot>`: two live masters with one node name would share them.

    A master claims its node name at start and renews the claim while it runs. A claim left by a
    master that crashed on this host (its pid is gone, or is our own pid in a new container) is
    taken over at once; one left on another host expires within CLAIM_SECONDS.
    """

    def __init__(self, settings: Settings) -> None:
        self.key = Shared(settings.prefix).node(settings.node_name)
        self.name = settings.node_name
        self.me = json.dumps(
            {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        )
        self.renewed = 0.0

    def claim(self, redis: Any) -> None:
        ttl = int(CLAIM_SECONDS * 1000)
        if redis.set(self.key, self.me, nx=True, px=ttl):
            self.renewed = time.monotonic()
            return
        raw = redis.get(self.key)
        holder = json.loads(raw) if raw else {}
        pid = int(holder.get("pid", 0))
        if holder.get("host") == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
            log.warning(
                "taking over node name %s from a master that is gone (pid %s)", self.name, pid
            )
            redis.set(self.key, self.me, px=ttl)
            self.renewed = time.monotonic()
            return
        raise NodeTaken(
            f"another live master (host {holder.get('host')}, pid {pid}) runs as NODE_NAME={self.name}; "
            "give this one another NODE_NAME"
        )

    def renew(self, redis: Any) -> None:
        if time.monotonic() - self.renewed < RENEW_SECONDS:
            return
        try:
            redis.set(self.key, self.me, px=int(CLAIM_SECONDS * 1000))
            self.renewed = time.monotonic()
        except RedisError as exc:
            log.warning("cannot renew the claim on node name %s: %s", self.name, exc)

    def release(self, redis: Any) -> None:
        try:
            if redis.get(self.key) == self.me:
                redis.delete(self.key)
        except RedisError:
            pass
