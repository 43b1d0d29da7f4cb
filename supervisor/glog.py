"""gunicorn's own logs (error and access) as JSON lines on stdout."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from jobs import logs
from jobs.settings import get_settings


class JsonLogger(Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        log_file = get_settings().log_file
        self.error_log.handlers = logs.handlers(log_file)
        self.error_log.propagate = False
        if cfg.accesslog is not None:
            self.access_log.handlers = logs.handlers(log_file)
            self.access_log.propagate = False
