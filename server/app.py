"""The Starlette app: the HTTP contract over the queue layer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from jobs import metrics, registry
from jobs.errors import Unavailable
from jobs.queue import Enqueued, Queue, arguments
from jobs.settings import Settings, get_settings
from jobs.store import gauges
from server import dashboard, events, openapi, schemas
from server.auth import ApiKeyMiddleware, login, logout
from server.body import read_json
from server.edge import Edge
from server.errors import CODES, HANDLERS, ApiError, queue_error_status
from server.responses import JSONResponse
from server.schemas import (
    BULK,
    DLQ_FILTER,
    ENQUEUE,
    LIMITS,
    MAX_HISTORY_MINUTES,
    MAX_LIST,
    MAX_QUERY,
    SCHEDULER,
    SEED_API_JOB,
    SEED_MESSAGE,
    SEED_WORKER,
    Invalid,
    validate,
)

STARTED = time.monotonic()
MAX_OFFSET = 10_000_000
# a scrape waits this long for the store, then answers without its values
SCRAPE_STORE_SECONDS = 3.0
SEED_STATUS = {
    "queued": "pending",
    "delayed": "pending",
    "failed": "pending",
    "active": "processing",
    "completed": "completed",
    "dead": "failed",
    "cancelled": "cancelled",
}


def queue_of(request: Request) -> Queue:
    q: Queue = request.app.state.queue
    return q


def enqueued_body(job: Enqueued) -> dict[str, Any]:
    body = {
        "message": "Task enqueued successfully",
        "jobId": job.id,
        "jobName": job.name,
        "jobData": job.data,
        "assignedWorker": job.worker,
        "status": job.status,
    }
    if job.duplicate:
        body["duplicate"] = True
    if job.deduplicated:
        body["deduplicated"] = True
    return body


def accepted(job: Enqueued, body: dict[str, Any]) -> JSONResponse:
    if job.created:
        metrics.count_enqueue(job.pool, job.name)
    status = 202 if job.created else 200
    return JSONResponse(
        body, status_code=status, headers={"Location": f"/jobs/{quote(job.id, safe='')}"}
    )


async def submit(
    request: Request, name: str, data: Any, options: dict[str, Any] | None = None
) -> Enqueued:
    return await queue_of(request).enqueue(
        **arguments(name, data, options),
        request_id=request.state.request_id,
        traceparent=request.state.traceparent,
    )


# the contract


async def enqueue_task(request: Request) -> Response:
    body = await read_json(request, ENQUEUE)
    job = await submit(request, body["jobName"], body.get("data"), body.get("options"))
    return accepted(job, enqueued_body(job))


async def enqueue_tasks(request: Request) -> Response:
    """Up to MAX_BULK jobs in one request and one pipeline; each answered on its own."""
    jobs = (await read_json(request, BULK))["jobs"]
    results: list[dict[str, Any]] = [{} for _ in jobs]
    checked: list[tuple[int, dict[str, Any]]] = []
    for i, body in enumerate(jobs):
        try:
            validate(body, ENQUEUE, f"jobs[{i}]")
        except Invalid as exc:
            results[i] = {"error": CODES[422], "detail": exc.detail, "status": 422}
            continue
        checked.append((i, arguments(body["jobName"], body.get("data"), body.get("options"))))
    answers = await queue_of(request).enqueue_many(
        [job for _, job in checked],
        request_id=request.state.request_id,
        traceparent=request.state.traceparent,
    )
    for (i, _), answer in zip(checked, answers, strict=True):
        if isinstance(answer, Enqueued):
            if answer.created:
                metrics.count_enqueue(answer.pool, answer.name)
            results[i] = {**bulk_body(answer), "status": 202 if answer.created else 200}
        else:
            status = queue_error_status(answer)
            code = answer.code if isinstance(answer, Unavailable) else CODES[status]
            results[i] = {"error": code, "detail": answer.detail, "status": status}
    everything = all(r["status"] == 202 for r in results)
    return JSONResponse({"results": results}, status_code=202 if everything else 207)


def bulk_body(job: Enqueued) -> dict[str, Any]:
    """The body /enqueue-task answers, with the job's status as `jobStatus` (`status` is the
    HTTP status of this job in a bulk answer)."""
    body = enqueued_body(job)
    body["jobStatus"] = body.pop("status")
    return body


async def get_job(request: Request) -> Response:
    job = await queue_of(request).get(request.path_params["job_id"])
    if job is None:
        raise ApiError(404, f"no job {request.path_params['job_id']!r}")
    return JSONResponse(job)


async def list_jobs(request: Request) -> Response:
    params = request.query_params
    try:
        limit = int(params.get("limit", "50"))
    except ValueError:
        raise ApiError(422, "limit must be an integer") from None
    if not 1 <= limit <= MAX_LIST:
        raise ApiError(422, f"limit must be 1-{MAX_LIST}")
    q = params.get("q", "")
    if len(q) > MAX_QUERY:
        raise ApiError(422, f"q must be at most {MAX_QUERY} characters")
    page = await queue_of(request).list_jobs(
        status=params.get("status", ""),
        pool=params.get("pool", ""),
        name=params.get("name", ""),
        q=q,
        limit=limit,
        cursor=params.get("cursor"),
    )
    return JSONResponse(page)


async def job_logs(request: Request) -> Response:
    return JSONResponse(await queue_of(request).logs(request.path_params["job_id"]))


async def queue_history(request: Request) -> Response:
    try:
        minutes = int(request.query_params.get("minutes", "60"))
    except ValueError:
        raise ApiError(422, "minutes must be an integer") from None
    if not 1 <= minutes <= MAX_HISTORY_MINUTES:
        raise ApiError(422, f"minutes must be 1-{MAX_HISTORY_MINUTES}")
    pool = request.query_params.get("pool") or None
    return JSONResponse(await queue_of(request).history(minutes, pool))


async def cancel_job(request: Request) -> Response:
    return JSONResponse(await queue_of(request).cancel(request.path_params["job_id"]))


async def job_resource(request: Request) -> Response:
    # one route per path, so that a 405 lists every method the path has in Allow
    return await (cancel_job if request.method == "DELETE" else get_job)(request)


async def jobs_resource(request: Request) -> Response:
    return await (seed_message if request.method == "POST" else list_jobs)(request)


async def dlq_resource(request: Request) -> Response:
    return await (dlq_delete if request.method == "DELETE" else dlq_get)(request)


async def queue_stats(request: Request) -> Response:
    return JSONResponse(await queue_of(request).stats())


# flow control


async def list_pools(request: Request) -> Response:
    return JSONResponse({"pools": list((await queue_of(request).flows()).values())})


async def pause_pool(request: Request) -> Response:
    return JSONResponse(await queue_of(request).pause(request.path_params["pool"]))


async def resume_pool(request: Request) -> Response:
    return JSONResponse(await queue_of(request).resume(request.path_params["pool"]))


async def pool_limits(request: Request) -> Response:
    queue, pool = queue_of(request), request.path_params["pool"]
    if request.method == "PUT":
        limits = await read_json(request, LIMITS)
        return JSONResponse(await queue.set_limits(pool, limits or None))
    if request.method == "DELETE":
        return JSONResponse(await queue.set_limits(pool, None))
    return JSONResponse(await queue.flow(pool))


# job schedulers


async def list_schedulers(request: Request) -> Response:
    return JSONResponse({"schedulers": await queue_of(request).schedulers()})


async def scheduler_resource(request: Request) -> Response:
    queue, ident = queue_of(request), request.path_params["scheduler_id"]
    if request.method == "PUT":
        body = await read_json(request, SCHEDULER)
        return JSONResponse(
            await queue.schedule(
                ident,
                body["jobName"],
                body.get("data"),
                every=body.get("every"),
                cron=body.get("cron"),
                tz=body.get("tz"),
                start=body.get("start"),
                end=body.get("end"),
                missed=body.get("missed"),
                options=body.get("options"),
            )
        )
    if request.method == "DELETE":
        await queue.unschedule(ident)
        return JSONResponse({"id": ident, "deleted": True})
    return JSONResponse(await queue.scheduler(ident))


async def pause_scheduler(request: Request) -> Response:
    return JSONResponse(
        await queue_of(request).pause_scheduler(request.path_params["scheduler_id"])
    )


async def resume_scheduler(request: Request) -> Response:
    return JSONResponse(
        await queue_of(request).resume_scheduler(request.path_params["scheduler_id"])
    )


def _paging(request: Request) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", "50"))
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        raise ApiError(422, "limit and offset must be integers") from None
    if not 1 <= limit <= 1000 or not 0 <= offset <= MAX_OFFSET:
        raise ApiError(422, f"limit must be 1-1000 and offset 0-{MAX_OFFSET}")
    return limit, offset


async def dlq_list(request: Request) -> Response:
    limit, offset = _paging(request)
    return JSONResponse(await queue_of(request).dlq(limit, offset))


async def dlq_get(request: Request) -> Response:
    return JSONResponse(await queue_of(request).dlq_get(request.path_params["job_id"]))


async def dlq_delete(request: Request) -> Response:
    return JSONResponse(await queue_of(request).dlq_delete(request.path_params["job_id"]))


async def dlq_retry(request: Request) -> Response:
    job = await queue_of(request).dlq_retry(request.path_params["job_id"])
    return accepted(job, enqueued_body(job))


async def dlq_retry_matching(request: Request) -> Response:
    body = await read_json(request, DLQ_FILTER)
    return JSONResponse(await queue_of(request).dlq_retry_matching(**body))


async def dlq_delete_matching(request: Request) -> Response:
    body = await read_json(request, DLQ_FILTER)
    return JSONResponse(await queue_of(request).dlq_delete_matching(**body))


async def root(request: Request) -> Response:
    return JSONResponse({"message": "Job queue service is running", "workerPID": os.getpid()})


async def health(request: Request) -> Response:
    uptime = round(time.monotonic() - STARTED, 3)
    return JSONResponse({"status": "ok", "uptime": uptime, "workerPID": os.getpid()})


async def ready(request: Request) -> Response:
    """Ready once every pool this node serves has a consumer that takes jobs: an enqueue to any
    of them can succeed."""
    q = queue_of(request)
    try:
        accepting = await q.accepting()
        warnings = [*q.settings.warnings, *await q.store_warnings()]
    except Exception as exc:
        return JSONResponse(
            {"status": "unavailable", "detail": f"redis: {type(exc).__name__}"}, status_code=503
        )
    idle = [pool for pool, count in accepting.items() if count < 1]
    if idle:
        return JSONResponse(
            {"status": "unavailable", "detail": f"no live consumer in pool(s) {', '.join(idle)}"},
            status_code=503,
        )
    # a store that may evict jobs still works: ready, with the reason to worry
    return JSONResponse(
        {"status": "ready", "consumers": sum(accepting.values()), "warnings": warnings}
    )


async def _store_gauges(q: Queue) -> gauges.Gauges:
    return await gauges.read(q.redis, q.store.at, await q.pools())


async def metrics_endpoint(request: Request) -> Response:
    try:
        values = await asyncio.wait_for(_store_gauges(queue_of(request)), SCRAPE_STORE_SECONDS)
    except (RedisError, OSError, TimeoutError):
        values = None  # still answer: the processes' own metrics, and mq_redis_up 0
    return Response(metrics.page(values), media_type=metrics.CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> Response:
    return Response(openapi.document_bytes(), media_type="application/json")


async def dashboard_page(request: Request) -> Response:
    return HTMLResponse(dashboard.PAGE)


# the seeds' own routes


async def seed_message(request: Request) -> Response:
    body = await read_json(request, SEED_MESSAGE)
    job = await submit(
        request, "message", {"message": body["message"], "shouldFail": bool(body.get("shouldFail"))}
    )
    return accepted(job, {"message": "Job added", "jobId": job.id})


async def seed_api_job(request: Request) -> Response:
    body = await read_json(request, SEED_API_JOB)
    if body["type"] not in registry.registry:
        raise ApiError(422, f"type: unknown job type {body['type']!r}")
    job = await submit(request, body["type"], body.get("payload", {}))
    return accepted(
        job, {"message": "Job submitted successfully", "jobId": job.id, "status": "pending"}
    )


async def seed_api_job_status(request: Request) -> Response:
    job = await queue_of(request).get(request.path_params["job_id"])
    if job is None:
        raise ApiError(404, f"no job {request.path_params['job_id']!r}")
    return JSONResponse(
        {
            "id": job["id"],
            "status": SEED_STATUS.get(job["status"], job["status"]),
            "type": job["jobName"],
            "createdAt": job["createdAt"],
            "completedAt": job["completedAt"],
            "result": job["result"],
        }
    )


def seed_worker(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        body = await read_json(request, SEED_WORKER, optional=True)
        job = await submit(request, name, body)
        return accepted(job, enqueued_body(job))

    return endpoint


async def seed_template(request: Request) -> Response:
    job = await submit(request, "noop", {"source": "template"})
    metrics.count_enqueue(job.pool, job.name)
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>Job enqueued</title></head>"
        f"<body><h1>Job enqueued</h1><p>Job <code>{job.id}</code> ({job.name}) is {job.status}."
        f' <a href="/jobs/{job.id}">status</a></p></body></html>'
    )
    return HTMLResponse(page)  # a page a browser opens: 200 (the job is queued, as it says)


ROUTES = [
    # the hot path first: Starlette tries routes in order
    Route("/enqueue-task", enqueue_task, methods=["POST"]),
    Route("/enqueue-tasks", enqueue_tasks, methods=["POST"]),
    Route("/", root),
    Route("/health", health),
    Route("/ready", ready),
    Route("/metrics", metrics_endpoint),
    Route("/openapi.json", openapi_json),
    Route("/dashboard", dashboard_page),
    Route("/jobs", jobs_resource, methods=["GET", "POST"]),
    Route("/jobs/{job_id}", job_resource, methods=["GET", "DELETE"]),
    Route("/jobs/{job_id}/logs", job_logs),
    Route("/queue/stats", queue_stats),
    Route("/pools", list_pools),
    Route("/pools/{pool}/pause", pause_pool, methods=["POST"]),
    Route("/pools/{pool}/resume", resume_pool, methods=["POST"]),
    Route("/pools/{pool}/limits", pool_limits, methods=["GET", "PUT", "DELETE"]),
    Route("/schedulers", list_schedulers),
    Route("/schedulers/{scheduler_id}", scheduler_resource, methods=["GET", "PUT", "DELETE"]),
    Route("/schedulers/{scheduler_id}/pause", pause_scheduler, methods=["POST"]),
    Route("/schedulers/{scheduler_id}/resume", resume_scheduler, methods=["POST"]),
    Route("/queue/history", queue_history),
    Route("/events", events.events),
    Route("/dlq", dlq_list),
    Route("/dlq/retry-matching", dlq_retry_matching, methods=["POST"]),
    Route("/dlq/delete-matching", dlq_delete_matching, methods=["POST"]),
    Route("/dlq/{job_id}", dlq_resource, methods=["GET", "DELETE"]),
    Route("/dlq/{job_id}/retry", dlq_retry, methods=["POST"]),
    Route("/api/jobs", seed_api_job, methods=["POST"]),
    Route("/api/jobs/{job_id}", seed_api_job_status),
    Route("/api/worker1", seed_worker("worker1"), methods=["POST"]),
    Route("/api/worker2", seed_worker("worker2"), methods=["POST"]),
    Route("/template", seed_template),
    Route("/admin", dashboard_page),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
]


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app. Redis is connected lazily, so start-up never fails on an outage."""
    settings = settings or get_settings()
    schemas.name_choices(list(registry.load(settings.job_modules)), list(settings.pools))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.queue = Queue.from_settings(settings)
        try:
            yield
        finally:
            await app.state.queue.close()

    middleware = [Middleware(Edge, allowed_hosts=settings.allowed_hosts)]
    if settings.api_key:
        middleware.append(
            Middleware(
                ApiKeyMiddleware,
                api_key=settings.api_key,
                session_seconds=settings.session_seconds,
            )
        )
    return Starlette(
        routes=ROUTES,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
