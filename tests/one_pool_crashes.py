"""A JOB_MODULES module that makes the consumers of pool worker2 die as they start."""

import os
from typing import Any

import jobs.consumer

_run = jobs.consumer.run


def _run_unless_worker2(cid: str, pool: str, *args: Any, **kwargs: Any) -> None:
    if pool == "worker2":
        os._exit(7)
    _run(cid, pool, *args, **kwargs)


jobs.consumer.run = _run_unless_worker2
