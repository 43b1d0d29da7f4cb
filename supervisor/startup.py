"""What every master does in the store at start, before it starts a child: warn about what
risks jobs, set POOL_LIMITS and write the schedulers of @job(cron=...)."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from jobs.connection import eviction_warning
from jobs.errors import QueueError
from jobs.queue import put_decorated, unserved_warning
from jobs.settings import Settings
from jobs.store import SyncStore, calls

log = logging.getLogger("supervisor")


def prepare(store: SyncStore, settings: Settings) -> None:
    warn_about_store(store, settings)
    warn_about_unserved_pools(store, settings)
    set_pool_limits(store, settings)
    put_decorated_schedulers(store, settings)


def warn_about_store(store: SyncStore, settings: Settings) -> None:
    for risk in settings.warnings:
        log.warning("%s", risk)
    try:
        policy = store.redis.config_get("maxmemory-policy").get("maxmemory-policy")
    except RedisError:
        return
    warning = eviction_warning(policy)
    if warning:
        log.warning("%s", warning)


def warn_about_unserved_pools(store: SyncStore, settings: Settings) -> None:
    try:
        unserved = store.unserved(set(settings.pools))
    except RedisError:
        return
    for pool, count in unserved.items():
        log.warning("%s", unserved_warning(pool, count))


def set_pool_limits(store: SyncStore, settings: Settings) -> None:
    """POOL_LIMITS: set at each start, for every node (the API may change them later)."""
    for pool, limits in settings.pool_limits.items():
        try:
            store.run(
                calls.control(store.at(pool), pool=pool, what="limits", limits=limits or None)
            )
        except RedisError as exc:
            log.warning("could not set the limits of pool %s: %s", pool, exc)


def put_decorated_schedulers(store: SyncStore, settings: Settings) -> None:
    """@job(cron=...): written at each start, for every node."""
    try:
        written = put_decorated(store, settings)
    except (RedisError, QueueError) as exc:
        log.warning("could not write the schedulers of @job(cron=...): %s", exc)
        return
    if written:
        log.info("schedulers of @job(cron=...): %s", ", ".join(written))
