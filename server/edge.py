"""What every request passes through on its way in and out, in one layer and one pass over its
headers (each layer costs every request a coroutine and a send wrapper):

- the guard (server.guard): a foreign Host or a cross-site write is refused first, and is
  neither counted nor given a request id;
- the request id: the client's `X-Request-ID` when it is a plain token, else a new one. It is
  echoed in the answer, named in this worker's log lines, and stored with a job the request
  enqueues (with its W3C `traceparent`);
- the metrics: each request counted and timed by route template, method and status
  (server.http_metrics names the labels).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import metrics, tracing
from server.auth import SESSION_COOKIE
from server.errors import error_response
from server.guard import refusal
from server.http_metrics import METHODS, OTHER, route_of

COOKIE = SESSION_COOKIE.encode()
REQUEST_ID = b"x-request-id"


class Edge:
    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = None if "*" in allowed_hosts else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = referer = ""
        given = parent = None
        cookie = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"cookie":
                cookie = cookie or COOKIE in value
            elif name == REQUEST_ID and given is None:
                given = value.decode("latin-1")
            elif name == b"traceparent" and parent is None:
                parent = value.decode("latin-1")
        problem = refusal(self.hosts, scope["method"], host, origin, referer, cookie)
        if problem is not None:
            status, code, detail = problem
            await error_response(status, detail, code)(scope, receive, send)
            return

        ident = tracing.valid_request_id(given) or tracing.new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = ident
        state["traceparent"] = tracing.valid_traceparent(parent)
        echoed = (REQUEST_ID, ident.encode("latin-1"))
        started = time.perf_counter()
        answered = 500  # an exception before the response started becomes a 500 outside

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = message["status"]
                headers = [h for h in message.get("headers", ()) if h[0] != REQUEST_ID]
                headers.append(echoed)
                message["headers"] = headers
            await send(message)

        token = tracing.request_id.set(ident)
        try:
            await self.app(scope, receive, sending)
        finally:
            tracing.request_id.reset(token)
            method = scope["method"] if scope["method"] in METHODS else OTHER
            elapsed = time.perf_counter() - started
            metrics.http_request(route_of(scope), method, answered, elapsed)
