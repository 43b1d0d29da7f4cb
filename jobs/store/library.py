"""The scripts as one Valkey function library: loaded once per server, called with FCALL.

An EVAL script runs its whole text on every call; here `_lib.lua` runs once, at load, and each
call runs only its own function (a third less server time per enqueue). Each `lua/<name>.lua`
becomes function `<library>_<name>`, where the library's name carries a hash of the text: two
versions of the service on one server (a rolling deploy) each call their own functions.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import ResponseError

# a function's body runs after begin(): it sets the per-call state _lib.lua declares
CALLBACK = (
    "redis.register_function('{function}', function(keys, argv)\nbegin(keys, argv)\n{body}\nend)\n"
)


@cache
def scripts() -> dict[str, str]:
    """Every script's body by name: the files of lua/ but the shared helpers."""
    folder = resources.files("jobs.store") / "lua"
    return {
        f.name.removesuffix(".lua"): f.read_text()
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".lua") and not f.name.startswith("_")
    }


@cache
def library() -> tuple[str, str]:
    """(name, text) of the library."""
    helpers = (resources.files("jobs.store") / "lua" / "_lib.lua").read_text()
    digest = hashlib.sha1(CALLBACK.encode() + helpers.encode())
    for script, body in scripts().items():
        digest.update(f"\0{script}\0{body}".encode())
    name = f"mq_{digest.hexdigest()[:16]}"
    bodies = "".join(
        CALLBACK.format(function=f"{name}_{script}", body=body)
        for script, body in scripts().items()
    )
    return name, f"#!lua name={name}\n{helpers}\n{bodies}"


@cache
def function(script: str) -> str:
    return f"{library()[0]}_{script}"


def missing(error: BaseException) -> bool:
    """Whether `error` says the server does not have the library (new, or lost its data)."""
    return isinstance(error, ResponseError) and "function not found" in str(error).lower()


# REPLACE: loading the same text again changes nothing, so a Cluster client may send it to
# every primary (redis-py's routing of FUNCTION LOAD) whether or not some already have it
def load(redis: Any) -> None:
    redis.function_load(library()[1], replace=True)


async def load_async(redis: Any) -> None:
    await redis.function_load(library()[1], replace=True)
