"""Counts and times every HTTP request by route template, method and status.

Labels stay bounded whatever clients send: the route is the template that matched
(`/jobs/{job_id}`) or "other", and a method outside the standard ones is "other".
/metrics itself is counted too: its latency is the cost of a scrape, worth watching.
Requests RequestGuard refuses (a foreign Host, a cross-site write) are not: it runs outside.
"""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER = "other"


def route_of(scope: Scope) -> str:
    """The template of the route that served `scope` (Starlette stores it in the scope when
    routing), else of the route it would have matched (a request refused before routing),
    else "other"."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if candidate.matches(scope)[0] is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else OTHER


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started becomes a 500 outside

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else OTHER
            metrics.http_request(route_of(scope), method, status, time.perf_counter() - started)
