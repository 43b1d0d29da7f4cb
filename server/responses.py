"""Starlette's JSON answer, written by jobs.codec: the same JSON, made faster."""

from __future__ import annotations

from typing import Any

from starlette import responses

from jobs import codec


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return codec.dumps(content)
