"""Request bodies: bounded in size (also when chunked), then parsed and checked.

JSON is checked for what JSON text may hold but a job cannot carry: `NaN` and `Infinity`,
numbers past the float range, lone surrogates (not text; Redis takes only UTF-8), and
nesting past MAX_DEPTH (in schemas.validate). Each is a 400 before anything is written.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request

from jobs import codec
from server.errors import ApiError
from server.schemas import Schema, validate

JSON_TYPE = "application/json"


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


def _media_type(request: Request) -> tuple[str, str]:
    """The content type without parameters, and its charset (lower case; '' when absent)."""
    kind, _, params = request.headers.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


def _bad(detail: str) -> ApiError:
    return ApiError(400, detail, "invalid_json")


def _constant(name: str) -> Any:
    raise _bad(f"request body holds {name}, which JSON does not allow")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _bad(f"request body holds the number {text[:40]}, past the range of a double")
    return value


def parse_json(raw: bytes) -> Any:
    """JSON text as a value; ApiError 400 naming what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        value = codec.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise _bad("request body is nested too deeply") from None
    except ValueError as exc:
        raise _bad(f"request body is not valid JSON: {exc}") from None
    if "\\ud" in text or "\\uD" in text:  # a surrogate escape: paired, or a lone one?
        try:
            codec.dumps(value)  # the standard library's UnicodeEncodeError for a lone one
        except UnicodeEncodeError:
            raise _bad("request body holds a lone surrogate (\\ud800-\\udfff), not text") from None
        except RecursionError:  # orjson reads deeper than json writes
            raise _bad("request body is nested too deeply") from None
    return value


async def read_json(request: Request, schema: Schema, optional: bool = False) -> Any:
    """The body as JSON, bounded by MAX_BODY_BYTES and checked against its schema. It must
    come as application/json (415 otherwise): a web form cannot send that type, and another
    origin's script cannot without the browser asking first (CORS, which is not offered)."""
    kind, charset = _media_type(request)
    if optional:
        raw = await read_body(request, request.app.state.settings.max_body_bytes)
        if not raw.strip() and kind in ("", JSON_TYPE):
            return {}
    if kind != JSON_TYPE or charset not in ("", "utf-8"):
        given = request.headers.get("content-type")
        raise ApiError(
            415,
            f"the body must be {JSON_TYPE} (UTF-8), not {given!r}"
            if given
            else f"the body needs content-type: {JSON_TYPE}",
        )
    if not optional:
        raw = await read_body(request, request.app.state.settings.max_body_bytes)
    body = parse_json(raw)
    validate(body, schema)
    return body
