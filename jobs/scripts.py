"""The Lua scripts of the job path, each read once and called by SHA."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

NAMES = ("enqueue", "claim", "finish", "heartbeat", "recover", "cancel")


@cache
def source(name: str) -> str:
    """A script's text with the shared helpers in front of it."""
    folder = resources.files("jobs") / "lua"
    lib = (folder / "_lib.lua").read_text()
    return lib + "\n" + (folder / f"{name}.lua").read_text()


class Scripts:
    """The scripts registered on one client; redis-py runs them by SHA and loads on NOSCRIPT."""

    def __init__(self, client: Any) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    enqueue: Any
    claim: Any
    finish: Any
    heartbeat: Any
    recover: Any
    cancel: Any
