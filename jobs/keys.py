"""Redis key names. Every key starts with the prefix, a hash tag such as `{mq}`."""

from __future__ import annotations


def job(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}"


def ready(prefix: str, cid: str) -> str:
    return f"{prefix}:ready:{cid}"


def active(prefix: str, cid: str) -> str:
    return f"{prefix}:active:{cid}"


def wake(prefix: str, cid: str) -> str:
    return f"{prefix}:wake:{cid}"


def delayed(prefix: str, pool: str) -> str:
    return f"{prefix}:delayed:{pool}"


def workers(prefix: str, pool: str) -> str:
    return f"{prefix}:workers:{pool}"


def worker(prefix: str, cid: str) -> str:
    return f"{prefix}:worker:{cid}"


def pools(prefix: str) -> str:
    return f"{prefix}:pools"


def stats(prefix: str) -> str:
    return f"{prefix}:stats"


def dlq(prefix: str) -> str:
    return f"{prefix}:dlq"


def node(prefix: str, name: str) -> str:
    return f"{prefix}:node:{name}"
