"""gunicorn's application object: its settings from ours, then gunicorn.conf.py."""

from __future__ import annotations

import math
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
        }
        for key, value in options.items():
            self.cfg.set(key, value)
        path = config_file()
        if path is not None:
            self.load_config_from_file(str(path))

    def load(self) -> Any:
        from server.app import create_app

        return create_app(get_settings())
