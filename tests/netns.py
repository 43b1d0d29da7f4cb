"""Hosts as network namespaces on one machine: each host its own namespace and address,
linked to a bridge in the root namespace (where Redis listens) by a veth pair whose link can be
cut and restored. Every name carries this process's pid, so parallel runs do not clash; `close`
removes every namespace, veth and bridge made here, and `leftovers` says what is still there.

    root namespace: bridge mq<pid>b, 10.213.<x>.1/24 (Redis binds it)
      \\_ veth mq<pid>v<i> == eth0 in namespace mq-<pid>-<i>, 10.213.<x>.<10 + i>/24

A process runs in a host with `ip netns exec <namespace> ...`, which execs: its pid is the
process's own, so it is stopped by pid like any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# test-only addresses: 10.213.<x>.0/24, x picked unused per run
NET = "10.213"
LOCK = Path("/tmp/mq-netns.lock")


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    """One host: a namespace, its address, and the root-side end of its link."""

    netns: str
    address: str
    veth: str

    def exec(self) -> list[str]:
        """The prefix that runs a command inside this host."""
        return ["ip", "netns", "exec", self.netns]

    def pids(self) -> list[int]:
        return [int(p) for p in ip("netns", "pids", self.netns, check=False).split()]


class Network:
    def __init__(self) -> None:
        self.tag = f"mq{os.getpid()}"  # at most 9 characters: interface names hold 15
        self.bridge = f"{self.tag}b"
        self.hosts: list[Host] = []
        self.made_bridge = False
        try:
            with LOCK.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two runs never pick the same subnet
                self.subnet = self.unused_subnet()
                ip("link", "add", self.bridge, "type", "bridge")
                self.made_bridge = True
                ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        self.gateway = f"{self.subnet}.1"

    @staticmethod
    def unused_subnet() -> str:
        taken = ip("-4", "-o", "addr") + ip("-4", "route")
        start = os.getpid() % 236
        for x in (20 + (start + k) % 236 for k in range(236)):
            if not re.search(rf"\b{re.escape(NET)}\.{x}\.", taken):
                return f"{NET}.{x}"
        raise RuntimeError(f"no free {NET}.x.0/24 subnet")

    def host(self) -> Host:
        i = len(self.hosts) + 1
        host = Host(f"{self.tag}-{i}", f"{self.subnet}.{10 + i}", f"{self.tag}v{i}")
        peer = f"{self.tag}p{i}"
        self.hosts.append(host)
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", host.netns)
        ip("-n", host.netns, "link", "set", peer, "name", "eth0")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        ip("link", "set", host.veth, "master", self.bridge)
        ip("link", "set", host.veth, "up")
        return host

    def cut(self, host: Host) -> None:
        """The host's cable is pulled: nothing goes in or out (its own processes keep running)."""
        ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        ip("link", "set", host.veth, "up")

    def close(self) -> None:
        """Stop whatever still runs in a namespace of ours (by pid), then remove every
        namespace, veth and the bridge. Errors are collected, not raised half way."""
        for host in self.hosts:
            for pid in host.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "delete", host.netns, check=False)
            ip("link", "delete", host.veth, check=False)  # gone with its peer, normally
        if self.made_bridge:
            ip("link", "delete", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and interfaces made here that still exist."""
        ours = {self.bridge} | {n for h in self.hosts for n in (h.netns, h.veth)}
        names = ip("netns", "list", check=False).split() + re.findall(
            r"^\d+: ([^:@]+)", ip("-o", "link", check=False), re.M
        )
        return sorted(ours & set(names))


@contextlib.contextmanager
def network() -> Iterator[Network]:
    net = Network()
    try:
        yield net
    finally:
        net.close()
        left = net.leftovers()
        assert not left, f"network namespaces or links left behind: {left}"
