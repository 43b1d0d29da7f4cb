"""Every request gets an id: the client's `X-Request-ID` when it is a plain token, else a new
one. It is echoed in the answer, named in this worker's log lines, and stored with a job the
request enqueues (with its W3C `traceparent`)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import tracing


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = parent = None
        for name, value in scope["headers"]:  # one pass: this runs on every request
            if name == b"x-request-id" and given is None:
                given = value.decode("latin-1")
            elif name == b"traceparent" and parent is None:
                parent = value.decode("latin-1")
        ident = tracing.valid_request_id(given) or tracing.new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = ident
        state["traceparent"] = tracing.valid_traceparent(parent)
        token = tracing.request_id.set(ident)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["x-request-id"] = ident
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tracing.request_id.reset(token)
