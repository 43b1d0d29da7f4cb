"""/openapi.json, generated from the schemas that validate the requests."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jobs.queue import CURSOR_PATTERN
from server.schemas import (
    BULK,
    BULK_RESULTS,
    DLQ_FILTER,
    ENQUEUE,
    ENQUEUED,
    ERROR,
    FLOW,
    JOB_RECORD,
    LIMITS,
    MAX_BULK,
    MAX_HISTORY_MINUTES,
    MAX_LIST,
    MAX_QUERY,
    SCHEDULER,
    SCHEDULER_BODY,
    SEED_API_JOB,
    SEED_MESSAGE,
    SEED_WORKER,
    STATUSES,
    Schema,
)

JSON = "application/json"


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Malformed JSON, or a Host header not in ALLOWED_HOSTS",
        401: "Missing or wrong API key",
        403: "Sent by a page of another origin",
        404: "Not found",
        409: "Already finished, or already retried",
        413: "Body too large",
        415: "The body is not application/json",
        422: "Invalid input",
        503: "No live consumer, backlog full, store unavailable or not replicated (ACK_REPLICAS)",
    }
    return {str(c): _json(ERROR, words[c]) for c in codes}


def _body(schema: Schema, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _id_param() -> list[dict[str, Any]]:
    return [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _pool_param() -> list[dict[str, Any]]:
    return [{"name": "pool", "in": "path", "required": True, "schema": {"type": "string"}}]


def _scheduler_param() -> list[dict[str, Any]]:
    return [{"name": "scheduler_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _get(summary: str, schema: Schema | None = None, *errors: int) -> dict[str, Any]:
    ok = _json(schema, "OK") if schema else {"description": "OK"}
    return {"summary": summary, "responses": {"200": ok, **_errors(401, *errors)}}


@cache
def document_bytes() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the whole HTTP API."""
    enqueue_errors = _errors(400, 401, 403, 413, 415, 422, 503)
    accepted = {"202": _json(ENQUEUED, "Accepted"), "200": _json(ENQUEUED, "Duplicate jobId")}
    obj: Schema = {"type": "object"}
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "summary": "Greeting with the worker pid",
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/health": {
            "get": {
                "summary": "Liveness, no Redis call",
                "responses": {"200": {"description": "OK"}},
            }
        },
        "/ready": {
            "get": {
                "summary": "Redis answers and every pool served here has a consumer taking jobs",
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OK"}}}
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
        },
        "/dashboard": {"get": _get("Dashboard (HTML)")},
        "/admin": {"get": _get("Dashboard (HTML), seed 001")},
        "/enqueue-task": {
            "post": {
                "summary": "Enqueue a job",
                "requestBody": _body(ENQUEUE),
                "responses": {**accepted, **enqueue_errors},
            }
        },
        "/enqueue-tasks": {
            "post": {
                "summary": f"Enqueue up to {MAX_BULK} jobs, each answered on its own",
                "requestBody": _body(BULK),
                "responses": {
                    "202": _json(BULK_RESULTS, "Every job accepted"),
                    "207": _json(BULK_RESULTS, "Some jobs refused, duplicate or not accepted"),
                    **_errors(400, 401, 403, 413, 415, 422),
                },
            }
        },
        "/schedulers": {"get": _get("Every job scheduler with its next runs", obj)},
        "/schedulers/{scheduler_id}": {
            "get": {
                **_get("A scheduler and its next runs", SCHEDULER_BODY, 404),
                "parameters": _scheduler_param(),
            },
            "put": {
                "summary": "Create or replace a scheduler (a paused one stays paused)",
                "parameters": _scheduler_param(),
                "requestBody": _body(SCHEDULER),
                "responses": {
                    "200": _json(SCHEDULER_BODY, "Written"),
                    **_errors(400, 401, 403, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Delete a scheduler (the jobs it made stay)",
                "parameters": _scheduler_param(),
                "responses": {"200": _json(obj, "Deleted"), **_errors(401, 403, 404)},
            },
        },
        "/schedulers/{scheduler_id}/pause": {
            "post": {
                "summary": "Make no more jobs of the scheduler",
                "parameters": _scheduler_param(),
                "responses": {"200": _json(SCHEDULER_BODY, "Paused"), **_errors(401, 403, 404)},
            }
        },
        "/schedulers/{scheduler_id}/resume": {
            "post": {
                "summary": "Run the scheduler again from its next due time",
                "parameters": _scheduler_param(),
                "responses": {"200": _json(SCHEDULER_BODY, "Resumed"), **_errors(401, 403, 404)},
            }
        },
        "/pools": {"get": _get("Every pool's pause state, limits and their use", obj)},
        "/pools/{pool}/pause": {
            "post": {
                "summary": "Start no job of the pool on any node (running ones finish)",
                "parameters": _pool_param(),
                "responses": {"200": _json(FLOW, "Paused"), **_errors(401, 403, 404)},
            }
        },
        "/pools/{pool}/resume": {
            "post": {
                "summary": "Start the pool's jobs again",
                "parameters": _pool_param(),
                "responses": {"200": _json(FLOW, "Resumed"), **_errors(401, 403, 404)},
            }
        },
        "/pools/{pool}/limits": {
            "get": {
                **_get("The pool's limits and their use", FLOW, 404),
                "parameters": _pool_param(),
            },
            "put": {
                "summary": "Set the pool's limits, for every node",
                "parameters": _pool_param(),
                "requestBody": _body(LIMITS),
                "responses": {
                    "200": _json(FLOW, "Set"),
                    **_errors(400, 401, 403, 404, 413, 415, 422),
                },
            },
            "delete": {
                "summary": "Remove the pool's limits",
                "parameters": _pool_param(),
                "responses": {"200": _json(FLOW, "Removed"), **_errors(401, 403, 404)},
            },
        },
        "/jobs": {
            "get": {
                **_get("Jobs newest first, filtered; page on with the cursor", obj, 422),
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": ["", *STATUSES]},
                        "only this status (empty: any)",
                    ),
                    _query("pool", {"type": "string"}, "only this pool"),
                    _query("name", {"type": "string"}, "only this job name"),
                    _query(
                        "q",
                        {"type": "string", "maxLength": MAX_QUERY},
                        "text found in the id, the error or the data (ASCII letters in any case)",
                    ),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST}, "page size"
                    ),
                    _query(
                        "cursor",
                        {"type": "string", "pattern": f"^{CURSOR_PATTERN}$"},
                        "where the previous page stopped; a page may hold fewer than limit "
                        "jobs while cursor is not null",
                    ),
                ],
            },
            "post": {
                "summary": "Enqueue a message job (seed 004)",
                "requestBody": _body(SEED_MESSAGE),
                "responses": {"202": {"description": "Accepted"}, **enqueue_errors},
            },
        },
        "/jobs/{job_id}": {
            "parameters": _id_param(),
            "get": _get("A job's record", JOB_RECORD, 404),
            "delete": _get("Cancel a job", JOB_RECORD, 403, 404, 409),
        },
        "/jobs/{job_id}/logs": {
            "parameters": _id_param(),
            "get": _get("The lines a job wrote with ctx.log", obj, 404),
        },
        "/queue/stats": {"get": _get("Queue counts and consumers", obj)},
        "/queue/history": {
            "get": {
                **_get("Finished tries per minute and pool", obj, 422),
                "parameters": [
                    _query(
                        "minutes",
                        {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY_MINUTES},
                        "span",
                    ),
                    _query("pool", {"type": "string"}, "only this pool"),
                ],
            }
        },
        "/events": {
            "get": {
                "summary": "Job state changes as server-sent events (text/event-stream); "
                "Last-Event-ID resumes",
                "parameters": [
                    _query("pool", {"type": "string"}, "only this pool"),
                    _query("job", {"type": "string"}, "only this job id"),
                ],
                "responses": {"200": {"description": "An endless event stream"}, **_errors(401)},
            }
        },
        "/dlq/retry-matching": {
            "post": {
                "summary": "Retry the dead-lettered jobs matching a filter (1000 per call)",
                "requestBody": _body(DLQ_FILTER),
                "responses": {"200": _json(obj, "OK"), **_errors(400, 401, 403, 415, 422)},
            }
        },
        "/dlq/delete-matching": {
            "post": {
                "summary": "Delete the dead-lettered jobs matching a filter (1000 per call)",
                "requestBody": _body(DLQ_FILTER),
                "responses": {"200": _json(obj, "OK"), **_errors(400, 401, 403, 415, 422)},
            }
        },
        "/dlq": {
            "get": {
                **_get("Dead-lettered jobs, newest first", obj, 422),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                    },
                ],
            }
        },
        "/dlq/{job_id}": {
            "parameters": _id_param(),
            "get": _get("A dead-lettered job", obj, 404),
            "delete": _get("Remove a dead-lettered job", obj, 403, 404),
        },
        "/dlq/{job_id}/retry": {
            "parameters": _id_param(),
            "post": {
                "summary": "Run a dead-lettered job again",
                "responses": {**accepted, **_errors(401, 403, 404, 409, 503)},
            },
        },
        "/api/jobs": {
            "post": {
                "summary": "Submit a job (seed 003)",
                "requestBody": _body(SEED_API_JOB),
                "responses": {"202": {"description": "Accepted"}, **enqueue_errors},
            }
        },
        "/api/jobs/{job_id}": {
            "parameters": _id_param(),
            "get": _get("A job in seed 003's words", obj, 404),
        },
        "/api/worker1": {
            "post": {
                "summary": "Run a job on pool worker1 (seed 000)",
                "requestBody": _body(SEED_WORKER, required=False),
                "responses": {**accepted, **enqueue_errors},
            }
        },
        "/api/worker2": {
            "post": {
                "summary": "Run a job on pool worker2 (seed 000)",
                "requestBody": _body(SEED_WORKER, required=False),
                "responses": {**accepted, **enqueue_errors},
            }
        },
        "/template": {
            "get": {
                "summary": "Enqueue a job, answer HTML (seed 001)",
                "responses": {"200": {"description": "HTML page"}, **_errors(401, 503)},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Job queue service", "version": "0.1.0"},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
