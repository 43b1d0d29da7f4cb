"""The HTTP worker class: uvicorn's gunicorn worker, named and logging as an `http worker`."""

from __future__ import annotations

import signal

import setproctitle
from uvicorn_worker import UvicornWorker

from jobs import otel
from jobs.logs import set_role
from server.protocol import BoundedHttpToolsProtocol
from supervisor.deathsig import die_with_parent


class HttpWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS = {"loop": "uvloop", "http": BoundedHttpToolsProtocol, "lifespan": "on"}

    def init_process(self) -> None:
        # with the master gone, stop at once: no one would replace or drain this worker
        die_with_parent(signal.SIGKILL, self.ppid)
        set_role("http worker")
        setproctitle.setproctitle("supervisor: http worker")
        otel.configure("http worker")
        super().init_process()
