"""gunicorn's application object: its settings from ours, then gunicorn.conf.py."""

from __future__ import annotations

import errno
import math
import socket
from pathlib import Path
from typing import Any

from gunicorn.app.base import Application

from jobs.settings import Settings, get_settings

# sun_path holds 108 bytes; a longer control-socket path is not usable
MAX_SOCKET_PATH = 100


def config_file() -> Path | None:
    """`gunicorn.conf.py` in the working directory, else the one beside the packages."""
    for folder in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = folder / "gunicorn.conf.py"
        if candidate.is_file():
            return candidate
    return None


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port already. The HTTP workers bind with
    SO_REUSEPORT, so a second service there would share the first one's connections; this
    bind, without it, fails instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE  # any other error: gunicorn's bind reports it
    return False


class Service(Application):  # type: ignore[misc]
    """Serves `server.app:create_app()` with the settings of the environment."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        control = s.data_dir / "gunicorn.ctl"
        options: dict[str, Any] = {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
            "workers": s.web_concurrency,
            "worker_class": "server.worker.HttpWorker",
            "graceful_timeout": math.ceil(s.graceful_timeout),
            "loglevel": s.log_level.lower(),
            "logger_class": "supervisor.glog.JsonLogger",
            "accesslog": "-" if s.access_log else None,
            "proc_name": "supervisor",
            "control_socket": str(control),
            "control_socket_disable": len(str(control)) > MAX_SOCKET_PATH,
            # each HTTP worker binds a socket of its own (SO_REUSEPORT) and the kernel spreads
            # new connections evenly over them; on one shared socket the worker that wakes
            # first takes a burst of connections whole (seen: 11 and 53 of 64). A port the
            # kernel picks (PORT=0) must be one socket.
            "reuse_port": s.port != 0,
        }
        for key, value in options.items():
            self.cfg.set(key, value)
        path = config_file()
        if path is not None:
            self.load_config_from_file(str(path))

    def load(self) -> Any:
        from server.app import create_app

        return create_app(get_settings())
