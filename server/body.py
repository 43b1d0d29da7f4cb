"""Request bodies: bounded in size (also when chunked), then parsed and checked."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from server.errors import ApiError
from server.schemas import Schema, validate


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 past `limit` bytes, checked before and while reading."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or int(declared) > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes")
        return await request.body()  # the server reads no more than the declared length
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, schema: Schema, optional: bool = False) -> Any:
    """The body as JSON, bounded by MAX_BODY_BYTES and checked against its schema."""
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if optional and not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON", "invalid_json") from None
    validate(body, schema)
    return body
