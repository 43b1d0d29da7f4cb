"""Replication for the tests: a primary, its replicas and the sentinels that watch them, all real
valkey-server processes on loopback ports, each stopped by pid."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from helpers import Valkey, free_port, wait_for

from supervisor.embedded import server_binary

SERVICE = "mymaster"


def replica_of(primary: Valkey, data_dir: Path) -> Valkey:
    """A replica of `primary` (`--replicaof`), returned once its link is up."""
    replica = Valkey(data_dir, extra=("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        wait_for(lambda: linked(replica), 10, what="the replica to sync")
    except BaseException:
        replica.stop()
        raise
    return replica


def linked(replica: Valkey) -> bool:
    with replica.client() as client:
        return bool(client.info("replication").get("master_link_status") == "up")


def role(server: Valkey) -> str:
    with server.client() as client:
        return str(client.info("replication")["role"])


class Sentinel:
    """valkey-server in sentinel mode watching `SERVICE` at `primary_port` (quorum 2, a primary
    counts as down after `down_after_ms` without an answer)."""

    def __init__(
        self,
        data_dir: Path,
        primary_port: int,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "sentinel.conf"  # the sentinel rewrites it as it learns
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {data_dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
        )
        args = [server_binary(), str(config), "--sentinel", "--daemonize", "no",
                "--logfile", str(data_dir / "sentinel.log")]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        try:
            with self.client() as client:
                wait_for(client.ping, 10, what="the sentinel to answer")
        except BaseException:
            self.stop()
            raise

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

    def primary_port(self) -> int:
        """The port of the primary this sentinel names now."""
        with self.client() as client:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def knows(self, replicas: int, sentinels: int) -> bool:
        """Whether it sees that many healthy replicas and other sentinels (a failover needs
        both: a replica to promote, and a quorum of sentinels to vote)."""
        with self.client() as client:
            found = client.sentinel_slaves(SERVICE)
            healthy = [r for r in found if not ({"s_down", "disconnected"} & set(r["flags"]))]
            return len(healthy) == replicas and len(client.sentinel_sentinels(SERVICE)) == sentinels

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Group:
    primary: Valkey
    replicas: list[Valkey]
    sentinels: list[Sentinel] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def stop(self) -> None:
        for process in [*self.sentinels, *self.replicas, self.primary]:
            with contextlib.suppress(Exception):
                process.stop()


@contextlib.contextmanager
def replicated(tmp: Path, replicas: int = 1, sentinels: int = 0) -> Iterator[Group]:
    """A primary with `replicas` linked replicas and, with `sentinels`, that many sentinels
    that all know every replica and each other; every process is stopped by pid at the end."""
    group = Group(Valkey(tmp / "primary"), [])
    try:
        for i in range(replicas):
            group.replicas.append(replica_of(group.primary, tmp / f"replica{i}"))
        # started after the replicas are linked, so their first look at the primary sees them
        for i in range(sentinels):
            group.sentinels.append(Sentinel(tmp / f"sentinel{i}", group.primary.port))
        wait_for(
            lambda: all(s.knows(replicas, sentinels - 1) for s in group.sentinels),
            30,
            0.1,
            "the sentinels to know every replica and each other",
        )
        yield group
    finally:
        group.stop()
