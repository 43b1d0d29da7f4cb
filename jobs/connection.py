"""Redis clients from the settings: redis://, rediss://, unix:// and redis+sentinel:// URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import hiredis
import redis
import redis.asyncio
from redis.asyncio import connection as aconn
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from jobs.settings import Settings

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    # bytes that are not UTF-8 (planted, never ours) must not break reading a record
    "encoding_errors": "replace",
    "socket_connect_timeout": 2,
    "health_check_interval": 30,
}


class HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's Python packer, the enqueue hot spot."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


class FastConnection(HiredisPacking, aconn.Connection):  # type: ignore[misc]
    pass


class FastUnixConnection(HiredisPacking, aconn.UnixDomainSocketConnection):  # type: ignore[misc]
    pass


class FastSSLConnection(HiredisPacking, aconn.SSLConnection):  # type: ignore[misc]
    pass


FAST = {
    aconn.Connection: FastConnection,
    aconn.UnixDomainSocketConnection: FastUnixConnection,
    aconn.SSLConnection: FastSSLConnection,
}


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """`redis+sentinel://[:password@]host:port[,host:port]/service[/db]`."""
    parsed = urlparse(url)
    netloc = parsed.netloc.rpartition("@")[2]
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parsed.path.split("/") if p]
    service = path[0] if path else "mymaster"
    options: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0}
    if parsed.password:
        options["password"] = parsed.password
    query = parse_qs(parsed.query)
    if "sentinel_password" in query:
        options["sentinel_kwargs"] = {"password": query["sentinel_password"][0]}
    return hosts, service, options


def async_client(settings: Settings, **extra: Any) -> redis.asyncio.Redis:
    """An asyncio client that retries a dropped connection with backoff."""
    url = settings.redis_url
    if url is None:
        raise RuntimeError("no Redis URL: the supervisor sets it for the embedded server")
    options = {
        **CLIENT_OPTIONS,
        "retry": AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        **extra,
    }
    if url.split("://")[0] in SENTINEL_SCHEMES:
        from redis.asyncio.sentinel import Sentinel

        hosts, service, conn = _sentinel_parts(url)
        sentinel_kwargs = conn.pop("sentinel_kwargs", None)
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)
        return sentinel.master_for(service, **conn, **options)
    pool = redis.asyncio.ConnectionPool.from_url(url, **options)
    pool.connection_class = FAST.get(pool.connection_class, pool.connection_class)
    return redis.asyncio.Redis(connection_pool=pool)


def sync_client(settings: Settings, **extra: Any) -> redis.Redis:
    """A blocking client, for the supervisor's own calls."""
    url = settings.redis_url
    if url is None:
        raise RuntimeError("no Redis URL")
    options = {**CLIENT_OPTIONS, "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 2), **extra}
    if url.split("://")[0] in SENTINEL_SCHEMES:
        from redis.sentinel import Sentinel

        hosts, service, conn = _sentinel_parts(url)
        sentinel_kwargs = conn.pop("sentinel_kwargs", None)
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **options)
        return sentinel.master_for(service, **conn, **options)
    return redis.Redis.from_url(url, **options)


def eviction_warning(policy: str | None) -> str | None:
    """What to tell the user when the server may evict keys, that is lose queued jobs."""
    if policy in (None, "noeviction"):
        return None
    return (
        f"the Redis server's maxmemory-policy is {policy}: under memory pressure it may evict "
        "queued jobs; set it to noeviction"
    )
