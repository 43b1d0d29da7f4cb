"""The job registry: the `@job` decorator users put on their own functions."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from jobs.settings import DEFAULT_POOL


@dataclass(frozen=True)
class JobSpec:
    """A registered job: its function and its defaults."""

    name: str
    func: Callable[..., Any]
    attempts: int | None = None
    timeout: float | None = None
    backoff: dict[str, Any] | None = None
    pool: str = DEFAULT_POOL
    max_concurrency: int | None = None  # tries of this job at once, across the whole fleet
    cron: str | None = None  # run it at each time of this cron expression, in time zone tz
    tz: str = "UTC"

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


registry: dict[str, JobSpec] = {}


@overload
def job(func: Callable[..., Any], /) -> Callable[..., Any]: ...


@overload
def job(
    name: str | None = None,
    /,
    *,
    attempts: int | None = None,
    timeout: float | None = None,
    backoff: dict[str, Any] | None = None,
    pool: str = DEFAULT_POOL,
    max_concurrency: int | None = None,
    cron: str | None = None,
    tz: str = "UTC",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...


def job(
    name: Callable[..., Any] | str | None = None,
    /,
    *,
    attempts: int | None = None,
    timeout: float | None = None,
    backoff: dict[str, Any] | None = None,
    pool: str = DEFAULT_POOL,
    max_concurrency: int | None = None,
    cron: str | None = None,
    tz: str = "UTC",
) -> Any:
    """Register a job function, `async def f(ctx, data)` or a plain `def` run in a thread.

    Use bare (`@job`, named after the function) or with options:
    `@job("report", attempts=2, timeout=60, pool="worker1", max_concurrency=2)`;
    `max_concurrency` caps the tries of this job running at once across the whole fleet;
    `cron="*/5 * * * *"` (with `tz`, default UTC) runs it at those times, once per time across
    the fleet, as the scheduler named after the job (its data `{}`).
    """
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        job_name = name if isinstance(name, str) else func.__name__
        registry[job_name] = JobSpec(
            job_name, func, attempts, timeout, backoff, pool, max_concurrency, cron, tz
        )
        return func

    if callable(name):
        return register(name)
    return register


def caps(pool: str) -> dict[str, int]:
    """The `max_concurrency` of the registered jobs of `pool`."""
    return {
        spec.name: spec.max_concurrency
        for spec in registry.values()
        if spec.pool == pool and spec.max_concurrency is not None
    }


def load(modules: tuple[str, ...] = ()) -> dict[str, JobSpec]:
    """Import the built-in jobs and the user's JOB_MODULES; return the registry."""
    importlib.import_module("jobs.builtin")
    for module in modules:
        importlib.import_module(module)
    return registry
