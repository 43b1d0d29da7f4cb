"""Every error answers `{"error": <short code>, "detail": <human text>}`, never a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from jobs.errors import Conflict, InvalidJob, NotFound, QueueError, Unavailable
from server.responses import JSONResponse
from server.schemas import Invalid

log = logging.getLogger("server.errors")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by a route to answer an error."""

    def __init__(
        self,
        status: int,
        detail: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code or CODES.get(status, "error")
        self.headers = headers


def error_response(
    status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": code or CODES.get(status, "error"), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.code, exc.headers)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


def queue_error_status(exc: QueueError) -> int:
    """The HTTP status of an error of the queue layer."""
    if isinstance(exc, InvalidJob):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    return 503


async def on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Invalid | InvalidJob)
    return error_response(422, exc.detail)


async def on_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound)
    return error_response(404, exc.detail)


async def on_conflict(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Conflict)
    return error_response(409, exc.detail)


async def on_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Unavailable)
    return error_response(503, exc.detail, exc.code, headers={"Retry-After": str(exc.retry_after)})


async def on_redis_error(request: Request, exc: Exception) -> Response:
    log.warning("redis unavailable: %s", exc)
    return error_response(
        503, f"the queue store is unavailable: {type(exc).__name__}", headers={"Retry-After": "1"}
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error; see the server log")


HANDLERS: dict[Any, Any] = {
    ApiError: on_api_error,
    HTTPException: on_http_exception,
    Invalid: on_invalid,
    InvalidJob: on_invalid,
    NotFound: on_not_found,
    Conflict: on_conflict,
    Unavailable: on_unavailable,
    RedisError: on_redis_error,
    RedisClusterException: on_redis_error,  # a Cluster's, outside RedisError (SlotNotCovered)
    Exception: on_unexpected,
}
