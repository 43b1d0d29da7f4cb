"""Prometheus metrics, aggregated over all processes through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram

JOBS_ENQUEUED = Counter("mq_jobs_enqueued_total", "Jobs accepted by enqueue", ["pool", "job"])
JOBS_FINISHED = Counter(
    "mq_jobs_finished_total", "Tries of jobs that ended, by outcome", ["pool", "job", "outcome"]
)
JOB_SECONDS = Histogram(
    "mq_job_duration_seconds",
    "Run time of a try of a job",
    ["pool", "job"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def observe_job(pool: str, job: str, outcome: str, seconds: float) -> None:
    JOBS_FINISHED.labels(pool, job, outcome).inc()
    JOB_SECONDS.labels(pool, job).observe(seconds)


@cache
def _enqueued(pool: str, job: str) -> Any:
    return JOBS_ENQUEUED.labels(pool, job)


def count_enqueue(pool: str, job: str) -> None:
    _enqueued(pool, job).inc()
