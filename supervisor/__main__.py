"""`python -m supervisor`: start the whole service."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

HELP = """\
Starts the job-queue service: a master that pre-forks HTTP workers (Starlette on uvicorn,
one shared port), a pool of consumer processes and, unless REDIS_URL is set, an embedded
Valkey server persisting to DATA_DIR (AOF, fsync every second).

Configuration is read from the environment:
  HOST                  address to listen on (default 127.0.0.1; the container sets 0.0.0.0)
  PORT                  port to listen on (default 8000)
  WEB_CONCURRENCY       HTTP worker processes (default: one per core)
  CONSUMERS             consumers of the default pool (default: one per core)
  CONSUMER_CONCURRENCY  jobs one consumer runs at a time (default 8)
  POOLS                 extra pools as name:consumers,... (default worker1:1,worker2:1)
  REDIS_URL             redis://, rediss://, unix:// or redis+sentinel:// URL (default: embedded)
  DATA_DIR              embedded server data, metrics, control socket (default ./data)
  API_KEY               when set, required as "Authorization: Bearer <key>" on all but
                        /, /health, /ready and /metrics
  GRACEFUL_TIMEOUT      seconds running jobs get to finish on SIGTERM (default 30)
  MAX_BODY_BYTES        largest request body (default 1048576)
  BACKLOG_LIMIT         waiting and delayed jobs per pool before enqueue answers 503
                        (default 100000)
  ACK_REPLICAS          replicas that must hold an enqueued job before it is answered 2xx
                        (default 0; else 503 not_replicated after ACK_REPLICAS_TIMEOUT, 1 s)
  EMBEDDED_MAXMEMORY    the embedded server's memory limit, e.g. 512mb (default: a quarter
                        of the machine's memory); past it enqueue answers 503
  JOB_MODULES           comma-separated modules that hold your @job functions
  NODE_NAME             this node's name in consumer ids (default: the host name)
  LOG_LEVEL             DEBUG, INFO, WARNING or ERROR (default INFO)
  LOG_FILE              also write the JSON log lines here, rotated daily
  POOL_LIMITS           limits set at start, JSON {"<pool>": {"rate": {"max": N, "period": s},
                        "concurrency": N, "jobs": {"<name>": {"concurrency": N}}}}
  ACCESS_LOG            1 logs each HTTP request as a JSON line (default 0: off)
HEARTBEAT_INTERVAL (1), HEARTBEAT_TTL (5), LEASE_SECONDS (10), CONSUMER_TIMEOUT (30),
MAX_CRASHES (3), KEEP_RESULT_SECONDS (86400), HISTORY_SECONDS (86400) and DLQ_MAX (10000) tune the job store.
gunicorn's own knobs (timeouts, limits, keep-alive) live in gunicorn.conf.py.

Signals to the master: TERM or INT drain and exit 0; HUP reloads workers and restarts
consumers one at a time;
TTIN/TTOU add or remove an HTTP worker; QUIT stops at once (jobs go back to the queue).

Other commands:
  python -m supervisor move-jobs OLD NEW   move the jobs of a pool removed from POOLS
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    move = commands.add_parser(
        "move-jobs",
        help="move the jobs of a pool no longer in POOLS to another pool (the service may run)",
    )
    move.add_argument("source", help="the pool that is no longer served")
    move.add_argument("target", help="the pool to move its jobs to")
    args = parser.parse_args(argv)

    from jobs.settings import Settings, SettingsError
    from server.schemas import LIMITS, Invalid, validate

    try:
        settings = Settings.from_env()
        for pool, limits in settings.pool_limits.items():
            validate(limits, LIMITS, f"POOL_LIMITS.{pool}")
    except (SettingsError, Invalid) as exc:
        detail = exc.detail if isinstance(exc, Invalid) else str(exc)
        print(f"configuration error: {detail}", file=sys.stderr)
        sys.exit(2)

    if args.command == "move-jobs":
        sys.exit(move_jobs(settings, args.source, args.target))

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # every process writes its metrics here; set before prometheus_client is imported
    metrics_dir = settings.data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    from jobs import logs

    logs.configure(settings.log_level, settings.log_file)
    logs.set_role("master")

    from jobs import registry
    from supervisor.app import Service, port_in_use
    from supervisor.arbiter import Master

    registry.load(settings.job_modules)  # fail here, clearly, on a broken JOB_MODULES
    if settings.port and port_in_use(settings.host, settings.port):
        print(f"port {settings.port} of {settings.host} is in use already", file=sys.stderr)
        sys.exit(1)
    Master(Service(settings), settings).run()


def move_jobs(settings: Any, source: str, target: str) -> int:
    """`python -m supervisor move-jobs SOURCE TARGET`: runs against REDIS_URL, or the
    embedded server of DATA_DIR (which must be running)."""
    from redis.exceptions import RedisError

    from jobs.connection import sync_client
    from jobs.store import SyncStore
    from supervisor import embedded

    if target not in settings.pools:
        print(
            f"pool {target!r} is not in POOLS here; no consumer would run the jobs", file=sys.stderr
        )
        return 2
    if settings.embedded:
        settings = settings.with_redis_url(embedded.socket_url(settings.data_dir))
    store = SyncStore(sync_client(settings, socket_timeout=5), settings)
    try:
        moved = store.move_pool(source, target)
    except (RedisError, ValueError) as exc:
        print(f"cannot move the jobs of {source!r}: {exc}", file=sys.stderr)
        return 1
    print(f"moved {moved} jobs from pool {source!r} to {target!r}")
    return 0


if __name__ == "__main__":
    main()
