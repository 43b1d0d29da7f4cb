"""JSON-lines logging for every process: time, level, logger, message, pid, role."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from jobs import tracing

_role = "master"

RESERVED = ("time", "level", "logger", "message", "pid", "role")


def set_role(role: str) -> None:
    """Name this process in every record it logs from now on."""
    global _role
    _role = role


def get_role() -> str:
    return _role


class RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        request = tracing.request_id.get()
        if request is not None and not hasattr(record, "requestId"):
            record.requestId = request
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            if len(record.args) == 5:  # uvicorn's (client, method, path, version, status)
                _client, record.method, record.path, _version, record.status = record.args
        return True


class Formatter(JsonFormatter):
    """One JSON object per line with the fields of the brief."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",
            },
            timestamp=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["role"] = getattr(record, "role", _role)
        log_data.pop("color_message", None)


def handlers(log_file: str | None) -> list[logging.Handler]:
    """Stdout always; a daily-rotated file when LOG_FILE is set."""
    out: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file:
        out.append(
            logging.handlers.TimedRotatingFileHandler(
                log_file, when="midnight", backupCount=14, utc=True
            )
        )
    for handler in out:
        handler.setFormatter(Formatter())
        handler.addFilter(RoleFilter())
    return out


def configure(level: str = "INFO", log_file: str | None = None) -> None:
    """Route every logger through the JSON handlers of this process."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers(log_file):
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("gunicorn.error", "gunicorn.access", "uvicorn", "uvicorn.error", "arq"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    # the access log is noisy under load; ACCESS_LOG=1 turns it on (supervisor.glog)
    logging.getLogger("uvicorn.access").propagate = False
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
