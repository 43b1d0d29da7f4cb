"""Redis clients from the settings: redis://, rediss://, unix://, redis+sentinel:// and
redis+cluster:// URLs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.asyncio import connection as aconn
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from jobs.settings import Settings

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
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


# with a Sentinel URL, each pool asks the sentinels which server is the primary at most this
# often while it is used, and moves its connections to a new one (see FollowingPool)
SENTINEL_FOLLOW_SECONDS = 0.5


def _off_primary(pool: Any, connection: Any) -> bool:
    """Whether `connection` is to another server than the primary the sentinels last named."""
    return pool.master_address is not None and (connection.host, connection.port) != tuple(
        pool.master_address
    )


class FollowingPool(redis.asyncio.sentinel.SentinelConnectionPool):  # type: ignore[misc]
    """A Sentinel pool that follows a failover even while the old primary still answers.

    redis-py's pool asks the sentinels only when it opens a connection, so one whose
    connections stay open keeps writing to a demoted primary until that server turns replica
    (up to ten seconds after the promotion, when a sentinel next looks at it: every write of
    that time is lost). This one asks again, in the background, at most every
    SENTINEL_FOLLOW_SECONDS while it hands out connections, and a connection to any other
    server than the primary the sentinels name is reconnected before use.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.followed = 0.0
        self.following: asyncio.Task[None] | None = None

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if now - self.followed >= SENTINEL_FOLLOW_SECONDS and (
            self.following is None or self.following.done()
        ):
            self.followed = now
            self.following = asyncio.ensure_future(self.follow())
        connection = await super().get_connection(command_name, *keys, **options)
        if _off_primary(self, connection):
            try:  # open on a former primary: reconnect, to the primary the sentinels name now
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def follow(self) -> None:
        # a new address disconnects the idle connections (redis-py's get_master_address)
        with contextlib.suppress(RedisError, OSError):
            await self.get_master_address()


class FollowingSyncPool(redis.sentinel.SentinelConnectionPool):  # type: ignore[misc]
    """FollowingPool for blocking clients (the heartbeat thread, the master): the sentinels
    are asked in line, at most every SENTINEL_FOLLOW_SECONDS; a connection to a former primary
    is dropped when it comes back (redis-py's `owns_connection`) or reconnected here."""

    followed = 0.0

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        now = time.monotonic()
        if now - self.followed >= SENTINEL_FOLLOW_SECONDS:
            self.followed = now
            with contextlib.suppress(RedisError, OSError):
                self.get_master_address()
        connection = super().get_connection(command_name, *keys, **options)
        if _off_primary(self, connection):
            try:
                connection.disconnect()
                connection.connect()
            except BaseException:
                self.release(connection)
                raise
        return connection


def _hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """The `host:port[,host:port...]` of a URL's netloc, without its credentials."""
    hosts = []
    for part in netloc.rpartition("@")[2].split(","):
        host, _, port = part.partition(":")
        hosts.append((host, int(port or default_port)))
    return hosts


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """`redis+sentinel://[:password@]host:port[,host:port]/service[/db]`."""
    parsed = urlparse(url)
    hosts = _hosts(parsed.netloc, 26379)
    path = [p for p in parsed.path.split("/") if p]
    service = path[0] if path else "mymaster"
    options: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0}
    if parsed.password:
        options["password"] = parsed.password
    query = parse_qs(parsed.query)
    if "sentinel_password" in query:
        options["sentinel_kwargs"] = {"password": query["sentinel_password"][0]}
    return hosts, service, options


def _function_slot(client: Any, command: str, args: tuple[Any, ...]) -> int | None:
    """The slot of an FCALL from its own KEYS (all in one slot: one pool's store), or None for
    another command. redis-py would ask the server (COMMAND GETKEYS) on every call."""
    if command.upper() not in ("FCALL", "FCALL_RO") or len(args) < 3 or not int(args[1]):
        return None
    slot: int = client.keyslot(args[2])
    return slot


class ClusterUnavailable(RedisError):  # type: ignore[misc]
    """A Cluster that cannot serve a slot now (say, mid-failover): redis-py raises some of
    these outside RedisError, which every caller handles as the store being away."""


class Cluster(redis.asyncio.cluster.RedisCluster):  # type: ignore[misc]
    async def _determine_slot(self, command: str, *args: Any) -> int:
        slot = _function_slot(self, command, args)
        if slot is None:
            slot = await super()._determine_slot(command, *args)
        return slot

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


class SyncCluster(redis.cluster.RedisCluster):  # type: ignore[misc]
    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    def determine_slot(self, *args: Any) -> int:
        slot = _function_slot(self, str(args[0]), args[1:])
        if slot is None:
            slot = super().determine_slot(*args)
        return slot


def _cluster_parts(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`redis+cluster://[[user]:password@]host:port[,host:port...]` (seed nodes)."""
    parsed = urlparse(url)
    seeds = _hosts(parsed.netloc, 6379)
    options: dict[str, Any] = {}
    if parsed.password:
        options["password"] = parsed.password
    if parsed.username:
        options["username"] = parsed.username
    if parsed.scheme.startswith("rediss"):
        options["ssl"] = True
    return seeds, options


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
        return sentinel.master_for(service, connection_pool_class=FollowingPool, **conn, **options)
    if url.split("://")[0] in CLUSTER_SCHEMES:
        seeds, conn = _cluster_parts(url)
        nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in seeds]
        cluster: redis.asyncio.Redis = Cluster(startup_nodes=nodes, **conn, **options)
        return cluster
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
        return sentinel.master_for(
            service, connection_pool_class=FollowingSyncPool, **conn, **options
        )
    if url.split("://")[0] in CLUSTER_SCHEMES:
        seeds, conn = _cluster_parts(url)
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in seeds]
        cluster: redis.Redis = SyncCluster(startup_nodes=nodes, **conn, **options)
        return cluster
    return redis.Redis.from_url(url, **options)


def eviction_warning(policy: str | None) -> str | None:
    """What to tell the user when the server may evict keys, that is lose queued jobs."""
    if policy in (None, "noeviction"):
        return None
    return (
        f"the Redis server's maxmemory-policy is {policy}: under memory pressure it may evict "
        "queued jobs; set it to noeviction"
    )
