"""API-key check: `Authorization: Bearer <key>`, or the dashboard's session cookie.

The cookie never holds the key: it is a signed session token, `<expiry>.<nonce>.<mac>`, with
the MAC keyed by a hash of API_KEY, so every HTTP worker and host checks it without shared
state, and a new API_KEY ends every session. Sign-in attempts that fail are counted per
client address in the store; past LOGIN_ATTEMPTS in LOGIN_WINDOW seconds: 429.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qs

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from server.body import read_body
from server.errors import ApiError, error_response

OPEN_PATHS = frozenset(
    {"/", "/health", "/ready", "/metrics", "/dashboard/login", "/dashboard/logout"}
)
PAGES = frozenset({"/dashboard", "/admin"})
SESSION_COOKIE = "mq_session"
LOGIN_BODY_BYTES = 4096
LOGIN_ATTEMPTS = 10  # failed sign-ins per client address and window
LOGIN_WINDOW = 60  # seconds

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Job queue: sign in</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body style="font:14px system-ui,sans-serif;margin:2rem"><h1>Job queue</h1>
<form method="post" action="/dashboard/login"><label>API key
<input type="password" name="key" autofocus autocomplete="current-password"></label>
<button type="submit">Open the dashboard</button></form></body></html>"""


class Sessions:
    """Signed session tokens for one API key."""

    def __init__(self, api_key: str, lifetime: int) -> None:
        self.secret = hashlib.sha256(b"mq-session\0" + api_key.encode()).digest()
        self.lifetime = lifetime

    def _mac(self, body: str) -> str:
        return hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        body = f"{expires}.{secrets.token_hex(8)}"
        return f"{body}.{self._mac(body)}"

    def valid(self, token: str, now: float | None = None) -> bool:
        body, _, mac = token.rpartition(".")
        expires = body.partition(".")[0]
        if not expires.isdigit() or not hmac.compare_digest(mac, self._mac(body)):
            return False
        return int(expires) > (time.time() if now is None else now)


def _cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return None


class ApiKeyMiddleware:
    """Refuses every route but the open ones without the key (or a session), when API_KEY
    is set."""

    def __init__(self, app: ASGIApp, api_key: str | None, session_seconds: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.sessions = Sessions(api_key, session_seconds) if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        allowed = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    allowed = hmac.compare_digest(token.strip(), self.key)
                    break
            elif name == b"cookie" and not allowed:
                session = _cookie(value.decode("latin-1"))
                assert self.sessions is not None
                allowed = session is not None and self.sessions.valid(session)
        if allowed:
            await self.app(scope, receive, send)
            return
        response: Response
        if scope["path"] in PAGES:  # a browser: ask for the key once, then keep a session
            response = HTMLResponse(LOGIN_PAGE, status_code=401)
        else:
            response = error_response(
                401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
            )
        await response(scope, receive, send)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def login(request: Request) -> Response:
    """POST /dashboard/login with the key as a form field: starts a dashboard session."""
    key: str | None = request.app.state.settings.api_key
    if key is None:
        return RedirectResponse("/dashboard", status_code=303)
    store = request.app.state.queue.store
    client = _client(request)
    try:
        failed, left = await store.failed_logins(client)
        if failed >= LOGIN_ATTEMPTS:
            raise ApiError(
                429,
                f"{failed} failed sign-ins from {client}; try again in {left} s",
                headers={"Retry-After": str(left)},
            )
        raw = await read_body(request, LOGIN_BODY_BYTES)
        given = parse_qs(raw.decode("ascii", "replace")).get("key", [""])[0]
        if not hmac.compare_digest(given.encode(), key.encode()):
            await store.count_failed_login(client, LOGIN_WINDOW)
            return HTMLResponse(LOGIN_PAGE, status_code=401)
    except RedisError as exc:
        raise ApiError(503, f"the queue store is unavailable: {type(exc).__name__}") from None
    settings = request.app.state.settings
    sessions = Sessions(key, settings.session_seconds)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sessions.issue(),
        max_age=settings.session_seconds,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    """POST /dashboard/logout: ends the session in this browser."""
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
