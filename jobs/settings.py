"""The one settings object, read from the environment, shared by supervisor, server and jobs."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_POOL = "default"


class SettingsError(ValueError):
    """A configuration value that cannot be used."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {value}")
    return value


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be 1 or 0, got {raw!r}")


def _pool_limits(raw: str, pools: dict[str, int]) -> dict[str, dict[str, Any]]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingsError('POOL_LIMITS must be JSON: {"<pool>": {<limits>}, ...}') from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise SettingsError("POOL_LIMITS must be a JSON object of pool -> limits object")
    unknown = sorted(set(value) - set(pools))
    if unknown:
        raise SettingsError(f"POOL_LIMITS names pools not in POOLS: {', '.join(unknown)}")
    return value


def default_maxmemory() -> int:
    """A quarter of the machine's memory, at least 64 MiB: the embedded server's limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 4 * 1024**3
    return max(64 * 1024**2, total // 4)


_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def default_allowed_hosts(host: str) -> tuple[str, ...]:
    """Bound to loopback, only loopback names reach the service (a page on another site that
    rebinds its DNS name to 127.0.0.1 reads nothing); bound wider, any name ("*")."""
    if is_loopback(host):
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, host)))
    return ("*",)


def _bytes(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    number = raw.rstrip("kmgb")
    unit = raw[len(number) :]
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise SettingsError(f"{name} must be bytes, like 536870912 or 512mb, got {raw!r}") from None
    if value < 1024**2:
        raise SettingsError(f"{name} must be at least 1mb, got {raw!r}")
    return value


def parse_pools(raw: str) -> dict[str, int]:
    """Parse `name:consumers,name:consumers` into a dict."""
    pools: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, count = item.partition(":")
        name = name.strip()
        if not name.replace("-", "").replace("_", "").isalnum():
            raise SettingsError(f"POOLS: bad pool name {name!r}")
        try:
            pools[name] = int(count) if count else 1
        except ValueError:
            raise SettingsError(f"POOLS: bad consumer count in {item!r}") from None
        if pools[name] < 0:
            raise SettingsError(f"POOLS: negative consumer count in {item!r}")
    return pools


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Build it with `Settings.from_env()`."""

    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    pools: dict[str, int] = field(default_factory=lambda: {DEFAULT_POOL: os.cpu_count() or 1})
    consumer_concurrency: int = 8
    redis_url: str | None = None
    data_dir: Path = Path("data")
    api_key: str | None = None
    graceful_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    log_file: str | None = None
    access_log: bool = False  # a JSON line per HTTP request (off: it costs under load)
    node_name: str = field(default_factory=socket.gethostname)
    backlog_limit: int = 100_000
    # an enqueue answers 2xx only once this many replicas acknowledged its write (WAIT)
    ack_replicas: int = 0
    ack_replicas_timeout: float = 1.0  # seconds an enqueue waits for them, else 503
    job_modules: tuple[str, ...] = ()
    key_prefix: str = "mq"
    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0
    lease_seconds: float = 10.0
    keep_result_seconds: int = 86_400
    history_seconds: int = 86_400  # per-minute counts of finished tries are kept this long
    dlq_max: int = 10_000
    max_crashes: int = 3
    consumer_timeout: float = 30.0
    files_dir: Path | None = None
    default_attempts: int = 4
    default_backoff: float = 2.0
    max_backoff: float = 3600.0
    default_timeout: float = 300.0
    embedded_maxmemory: int = field(default_factory=default_maxmemory)
    # Host header names answered; "*" answers any (the default when HOST is not loopback)
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    session_seconds: int = 12 * 3600  # a dashboard sign-in lasts this long
    # pool -> limits (the shape of PUT /pools/{pool}/limits), set by the master at start
    pool_limits: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read the settings from the environment (or the given mapping)."""
        env = dict(os.environ if environ is None else environ)
        cores = os.cpu_count() or 1
        pools = {DEFAULT_POOL: _int(env, "CONSUMERS", cores)}
        for name, count in parse_pools(env.get("POOLS", "worker1:1,worker2:1")).items():
            pools[name] = count
        data_dir = Path(env.get("DATA_DIR", "data")).resolve()
        files_dir = env.get("FILES_DIR")
        modules = tuple(m.strip() for m in env.get("JOB_MODULES", "").split(",") if m.strip())
        level = env.get("LOG_LEVEL", "INFO").upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(f"LOG_LEVEL must be a logging level name, got {level!r}")
        prefix = env.get("KEY_PREFIX", "mq")
        if not prefix or any(c in prefix for c in "{}: "):
            raise SettingsError("KEY_PREFIX must be a plain name without braces, colons or spaces")
        host = env.get("HOST", "127.0.0.1")
        hosts = [h.strip().lower() for h in env.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
        return cls(
            host=host,
            port=_int(env, "PORT", 8000),
            web_concurrency=_int(env, "WEB_CONCURRENCY", cores, minimum=1),
            pools=pools,
            consumer_concurrency=_int(env, "CONSUMER_CONCURRENCY", 8, minimum=1),
            redis_url=env.get("REDIS_URL") or None,
            data_dir=data_dir,
            api_key=env.get("API_KEY") or None,
            graceful_timeout=_float(env, "GRACEFUL_TIMEOUT", 30.0),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1024 * 1024, minimum=1),
            log_level=level,
            log_file=env.get("LOG_FILE") or None,
            access_log=_flag(env, "ACCESS_LOG"),
            node_name=env.get("NODE_NAME") or socket.gethostname(),
            backlog_limit=_int(env, "BACKLOG_LIMIT", 100_000, minimum=1),
            ack_replicas=_int(env, "ACK_REPLICAS", 0),
            ack_replicas_timeout=_float(env, "ACK_REPLICAS_TIMEOUT", 1.0),
            job_modules=modules,
            key_prefix=prefix,
            heartbeat_interval=_float(env, "HEARTBEAT_INTERVAL", 1.0),
            heartbeat_ttl=_float(env, "HEARTBEAT_TTL", 5.0),
            lease_seconds=_float(env, "LEASE_SECONDS", 10.0),
            keep_result_seconds=_int(env, "KEEP_RESULT_SECONDS", 86_400, minimum=1),
            history_seconds=_int(env, "HISTORY_SECONDS", 86_400, minimum=60),
            dlq_max=_int(env, "DLQ_MAX", 10_000, minimum=1),
            max_crashes=_int(env, "MAX_CRASHES", 3, minimum=1),
            consumer_timeout=_float(env, "CONSUMER_TIMEOUT", 30.0),
            files_dir=Path(files_dir).resolve() if files_dir else data_dir / "files",
            default_attempts=_int(env, "DEFAULT_ATTEMPTS", 4, minimum=1),
            default_backoff=_float(env, "DEFAULT_BACKOFF", 2.0),
            default_timeout=_float(env, "DEFAULT_TIMEOUT", 300.0),
            embedded_maxmemory=_bytes(env, "EMBEDDED_MAXMEMORY", default_maxmemory()),
            allowed_hosts=tuple(hosts) or default_allowed_hosts(host),
            session_seconds=_int(env, "SESSION_SECONDS", 12 * 3600, minimum=60),
            pool_limits=_pool_limits(env.get("POOL_LIMITS", ""), pools),
        ).checked()

    def checked(self) -> Settings:
        """The settings, if they agree with each other; SettingsError naming the one that
        does not."""
        if self.heartbeat_interval <= 0:
            raise SettingsError("HEARTBEAT_INTERVAL must be above 0")
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise SettingsError(
                f"HEARTBEAT_TTL ({self.heartbeat_ttl:g}) must be above HEARTBEAT_INTERVAL "
                f"({self.heartbeat_interval:g}), or every consumer looks dead between beats"
            )
        if self.lease_seconds <= self.heartbeat_interval:
            raise SettingsError(
                f"LEASE_SECONDS ({self.lease_seconds:g}) must be above HEARTBEAT_INTERVAL "
                f"({self.heartbeat_interval:g}), or running jobs lose their lease between beats"
            )
        if self.default_timeout <= 0:
            raise SettingsError("DEFAULT_TIMEOUT must be above 0")
        if self.ack_replicas_timeout < 0.001:
            # WAIT's timeout 0 would block for ever
            raise SettingsError("ACK_REPLICAS_TIMEOUT must be at least 0.001 (seconds)")
        if self.ack_replicas > 0 and self.cluster:
            # WAIT answers for the connection it runs on; a batch of a Cluster spans nodes
            raise SettingsError("ACK_REPLICAS is not supported with a redis+cluster:// URL")
        return self

    @property
    def prefix(self) -> str:
        """The hash tag of the keys no pool owns (registry, schedulers, node names)."""
        return "{" + self.key_prefix + "}"

    def pool_prefix(self, pool: str) -> str:
        """The hash tag of one pool's keys: each pool is one Cluster slot of its own."""
        return "{" + self.key_prefix + ":" + pool + "}"

    @property
    def cluster(self) -> bool:
        """Whether REDIS_URL names a Redis Cluster (redis+cluster://seed,seed...)."""
        return (self.redis_url or "").split("://")[0] in ("redis+cluster", "rediss+cluster")

    @property
    def warnings(self) -> list[str]:
        """Settings that work but put the jobs at risk: logged at start, listed by /ready."""
        if self.api_key is None and not is_loopback(self.host):
            return [
                f"HOST is {self.host} and API_KEY is not set: anyone who reaches port "
                f"{self.port} can enqueue, cancel and read jobs; set API_KEY"
            ]
        return []

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def allowed_files_dir(self) -> Path:
        return self.files_dir or self.data_dir / "files"

    @property
    def replica_wait(self) -> tuple[int, int] | None:
        """(replicas, timeout ms) of the WAIT after each enqueue batch; None when not asked."""
        if self.ack_replicas <= 0:
            return None
        return self.ack_replicas, max(1, round(self.ack_replicas_timeout * 1000))

    def with_redis_url(self, url: str) -> Settings:
        return replace(self, redis_url=url)


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_settings(settings: Settings) -> None:
    global _current
    _current = settings
