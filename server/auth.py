"""API-key check: `Authorization: Bearer <key>` (or the dashboard's cookie), in constant time."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import error_response

OPEN_PATHS = frozenset({"/", "/health", "/ready", "/metrics"})
COOKIE = "mq_api_key"


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


class ApiKeyMiddleware:
    """Refuses every route but the open ones without the key, when API_KEY is set."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    given = token.strip()
            elif name == b"cookie" and given is None:
                given = _cookie(value.decode("latin-1"))
        if given is not None and hmac.compare_digest(given.encode("latin-1", "replace"), self.key):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
        )
        await response(scope, receive, send)
