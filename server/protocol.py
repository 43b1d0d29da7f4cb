"""uvicorn's httptools protocol with bounds on the request head, which httptools leaves open.

Only the request line and the headers count against the bound, never the body: the parser
reports the head's parts (`on_url`, `on_header`), and their sizes are summed exactly. A head
still unfinished is bounded by the bytes received since it began, so a single endless header
cannot grow httptools' buffer (past the bound by at most one read).

It also sends a response as one write: uvicorn writes a response's head and its body apart,
which is two sends and two packets per response (TCP_NODELAY).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from server.events import stop_streams

# request line plus headers, and the number of headers; past them: 431
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# what OneWrite holds back for one write at most
FLUSH_BYTES = 64 * 1024


class HeadTooLarge(ValueError):
    """Raised inside a parser callback: httptools stops and reports a parser error."""


class OneWrite:
    """A transport that sends what one turn of the event loop wrote to it as one write (a
    response's head and body are written in the same turn), or at once past FLUSH_BYTES (so
    that flow control sees a large body). Closing sends what is pending first; everything
    else is the transport's own."""

    __slots__ = ("loop", "pending", "size", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.pending: list[bytes] = []
        self.size = 0
        self.loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)
        self.size += len(data)
        if self.size > FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.size = 0
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    in_head = True  # between the start of a request and the end of its headers
    received = 0  # bytes received while in the head (an upper bound of its size)
    head_bytes = 0  # the exact size of the head's parts reported so far
    header_count = 0
    refused: str | None = None

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.received += len(data)
        super().data_received(data)
        if self.in_head and self.received > MAX_HEAD_BYTES and self.refused is None:
            self.refuse(f"request line and headers are larger than {MAX_HEAD_BYTES} bytes")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, OneWrite(transport)))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes, self.header_count = True, 0, 0

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.received = True, 0  # what comes next is the next request's head

    def on_url(self, url: bytes) -> None:
        self.count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            self.refused = f"more than {MAX_HEADERS} headers"
            raise HeadTooLarge(self.refused)
        self.count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.refused = f"request line and headers are larger than {MAX_HEAD_BYTES} bytes"
            raise HeadTooLarge(self.refused)

    def on_headers_complete(self) -> None:
        self.in_head, self.received = False, 0
        super().on_headers_complete()

    def shutdown(self) -> None:
        stop_streams()  # the server stops: event streams end, so that their connections close
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if self.refused is not None:
            self.refuse(self.refused)
        else:
            super().send_400_response(msg)

    def refuse(self, detail: str) -> None:
        self.refused = detail
        body = json.dumps({"error": "headers_too_large", "detail": detail}).encode()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[431],
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
        self.in_head = False
