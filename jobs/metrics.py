"""Prometheus metrics, aggregated over all processes through PROMETHEUS_MULTIPROC_DIR.

Each process counts what it sees: HTTP workers their requests and enqueues, consumers the
tries they run, the master the children it replaces. What the store holds (queue depths,
lag, live consumers) is read from Redis at scrape time instead: see `page`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import REGISTRY, CollectorRegistry

if TYPE_CHECKING:
    from jobs.store.gauges import Gauges

__all__ = ["CONTENT_TYPE_LATEST", "page"]

# not "job": Prometheus sets that label on every target (the scrape job)
JOB = ["pool", "job_name"]
# job run times: from a noop to the longest time-out
JOB_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
# enqueue (or due time) to start: a few ms when consumers keep up, minutes in a backlog
PICKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120, 600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

JOBS_ENQUEUED = Counter("mq_jobs_enqueued_total", "Jobs accepted by enqueue", JOB)
JOBS_STARTED = Counter("mq_jobs_started_total", "Tries of jobs that started", JOB)
JOBS_COMPLETED = Counter("mq_jobs_completed_total", "Jobs that completed", JOB)
JOB_FAILURES = Counter(
    "mq_job_failures_total", "Tries that failed (an error or a time-out), retried or not", JOB
)
JOBS_RETRIED = Counter("mq_jobs_retried_total", "Failed tries followed by another try", JOB)
JOBS_DEAD = Counter(
    "mq_jobs_dead_lettered_total",
    "Jobs dead-lettered (a last try failed, or too many crashes)",
    JOB,
)
JOBS_CANCELLED = Counter("mq_jobs_cancelled_total", "Jobs cancelled", JOB)
JOB_SECONDS = Histogram(
    "mq_job_duration_seconds", "Run time of a try of a job", JOB, buckets=JOB_BUCKETS
)
JOB_PICKUP = Histogram(
    "mq_job_pickup_seconds",
    "Time from a job's enqueue or due time to the start of its try (server clock)",
    JOB,
    buckets=PICKUP_BUCKETS,
)
HTTP_REQUESTS = Counter(
    "mq_http_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "mq_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["route", "method"],
    buckets=HTTP_BUCKETS,
)
CHILD_RESTARTS = Counter(
    "mq_child_restarts_total", "Children the master replaced after they died", ["kind"]
)

# the store's status after a try's end -> the counters it adds to
ENDINGS: dict[str, tuple[Counter, ...]] = {
    "completed": (JOBS_COMPLETED,),
    "failed": (JOB_FAILURES, JOBS_RETRIED),
    "dead": (JOB_FAILURES, JOBS_DEAD),
    "cancelled": (JOBS_CANCELLED,),
}


@cache
def _child(metric: Any, *labels: str) -> Any:
    # .labels() looks the child up under a lock on every call; the hot path asks once
    return metric.labels(*labels)


def count_enqueue(pool: str, job: str) -> None:
    _child(JOBS_ENQUEUED, pool, job).inc()


def count_cancel(pool: str, job: str) -> None:
    """A job cancelled before it ran (a running one is counted when its try ends)."""
    _child(JOBS_CANCELLED, pool, job).inc()


def try_started(pool: str, job: str, waited: float) -> None:
    _child(JOBS_STARTED, pool, job).inc()
    _child(JOB_PICKUP, pool, job).observe(max(waited, 0.0))


def try_ended(pool: str, job: str, status: str, seconds: float) -> None:
    """A try whose end the store recorded; `status` is the job's status afterwards (a job
    handed back at shutdown is `queued`: not a try, not counted)."""
    counters = ENDINGS.get(status)
    if counters is None:
        return
    for counter in counters:
        _child(counter, pool, job).inc()
    _child(JOB_SECONDS, pool, job).observe(seconds)


def taken_back(pool: str, ended: Iterable[tuple[str, str]]) -> None:
    """Tries the store ended while taking jobs back from a lost holder: a timed-out try
    (`failed` or `dead`, as a try's end) or a job dead-lettered for its crashes."""
    for job, outcome in ended:
        counters = (JOBS_DEAD,) if outcome == "crashed" else ENDINGS.get(outcome, ())
        for counter in counters:
            _child(counter, pool, job).inc()


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    _child(HTTP_REQUESTS, route, method, str(status)).inc()
    _child(HTTP_SECONDS, route, method).observe(seconds)


def count_restart(kind: str) -> None:
    _child(CHILD_RESTARTS, kind).inc()


@cache
def _server_up() -> Gauge:
    # created only in the master that runs an embedded server, so that it is absent with
    # REDIS_URL. Processes forked from the master hold a 0 for it: "max" over every process
    # is the master's value
    return Gauge(
        "mq_embedded_server_up", "1 while the embedded server runs", multiprocess_mode="max"
    )


def embedded_server_up(up: bool) -> None:
    _server_up().set(1 if up else 0)


class StoreCollector:
    """The values read from Redis for one scrape; without them (Redis down) only mq_redis_up."""

    def __init__(self, gauges: Gauges | None) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "mq_redis_up", "1 when this scrape could read the store", int(self.gauges is not None)
        )
        if self.gauges is None:
            return
        pools = self.gauges.pools
        per_pool = (
            ("mq_queue_waiting", "Jobs ready to run, not started", "waiting"),
            ("mq_queue_active", "Tries running", "active"),
            ("mq_queue_delayed", "Jobs not due yet (delays and retry backoffs)", "delayed"),
            (
                "mq_queue_oldest_waiting_age_seconds",
                "Age of the oldest job at the head of a ready queue or due in the pool",
                "oldest_age",
            ),
            ("mq_consumers_live", "Consumers with a current heartbeat that take jobs", "live"),
        )
        for name, text, field in per_pool:
            family = GaugeMetricFamily(name, text, labels=["pool"])
            for pool, values in pools.items():
                family.add_metric([pool], getattr(values, field))
            yield family
        yield GaugeMetricFamily("mq_dlq_size", "Jobs in the dead-letter queue", self.gauges.dlq)


def page(gauges: Gauges | None) -> bytes:
    """The text of /metrics: every process's metrics and the store's values."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    store = CollectorRegistry()
    store.register(StoreCollector(gauges))
    body: bytes = generate_latest(registry) + generate_latest(store)
    return body
