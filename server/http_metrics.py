"""The labels of the HTTP request metrics (counted and timed in server.edge).

Labels stay bounded whatever clients send: the route is the template that matched
(`/jobs/{job_id}`) or "other", and a method outside the standard ones is "other".
/metrics itself is counted too: its latency is the cost of a scrape, worth watching.
Requests the guard refuses (a foreign Host, a cross-site write) are not counted.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import Scope

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
