"""uvicorn's httptools protocol with bounds on the request head, which httptools leaves open."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# request line plus headers, and the number of headers; past them: 431
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    head_bytes = 0
    in_head = True
    header_count = 0

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse(f"request line and headers are larger than {MAX_HEAD_BYTES} bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.header_count = True, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > MAX_HEADERS:
            raise ValueError("too many headers")  # stops the parser; answered in refuse()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self.header_count > MAX_HEADERS:
            self.refuse(f"more than {MAX_HEADERS} headers")
        else:
            super().send_400_response(msg)

    def refuse(self, detail: str) -> None:
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
