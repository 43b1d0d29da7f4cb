"""API-key check: `Authorization: Bearer <key>` (or the dashboard's cookie), in constant time."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.body import read_body
from server.errors import error_response

OPEN_PATHS = frozenset({"/", "/health", "/ready", "/metrics", "/dashboard/login"})
PAGES = frozenset({"/dashboard", "/admin"})
COOKIE = "mq_api_key"
LOGIN_BODY_BYTES = 4096

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Job queue: sign in</title></head>
<body style="font:14px system-ui,sans-serif;margin:2rem"><h1>Job queue</h1>
<form method="post" action="/dashboard/login"><label>API key
<input type="password" name="key" autofocus autocomplete="current-password"></label>
<button type="submit">Open the dashboard</button></form></body></html>"""


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
        if given is not None and self.check(given):
            await self.app(scope, receive, send)
            return
        response: Response
        if scope["path"] in PAGES:  # a browser: ask for the key once, keep it in a cookie
            response = HTMLResponse(LOGIN_PAGE, status_code=401)
        else:
            response = error_response(
                401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
            )
        await response(scope, receive, send)

    def check(self, given: str) -> bool:
        assert self.key is not None
        return hmac.compare_digest(given.encode("latin-1", "replace"), self.key)


async def login(request: Request) -> Response:
    """POST /dashboard/login with the key as a form field: sets the dashboard's cookie."""
    key: str | None = request.app.state.settings.api_key
    raw = await read_body(request, LOGIN_BODY_BYTES)
    given = parse_qs(raw.decode("latin-1")).get("key", [""])[0]
    if key is None or not hmac.compare_digest(given.encode("latin-1", "replace"), key.encode()):
        return HTMLResponse(LOGIN_PAGE, status_code=401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/")
    return response
