"""Request ids and W3C trace context: what ties a job to the request that enqueued it.

The HTTP edge takes `X-Request-ID` (or makes one) and `traceparent`; both are stored with the
job. The try that runs it logs the same request id and trace id, and its `ctx.traceparent`
continues the trace (same trace id, a span id of its own) for the calls the job makes.
"""

from __future__ import annotations

import contextvars
import re

from jobs import ids

MAX_REQUEST_ID = 128
REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

# the request this task serves, for the logs of the HTTP workers
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def valid_request_id(value: str | None) -> str | None:
    return value if value and REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    return ids.token_hex(16)


def valid_traceparent(value: str | None) -> str | None:
    """A version-00 traceparent, or None; all-zero trace or span ids are invalid (W3C)."""
    m = TRACEPARENT.fullmatch(value.strip().lower()) if value else None
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(0)


def trace_id(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None


def child(traceparent: str | None) -> str | None:
    """The traceparent of a span below `traceparent`: same trace, a new span id."""
    if not traceparent:
        return None
    version, trace, _, flags = traceparent.split("-")
    return f"{version}-{trace}-{ids.token_hex(8)}-{flags}"
