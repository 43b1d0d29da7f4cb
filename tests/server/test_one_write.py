"""A response leaves as one write: what one turn of the loop writes to the connection is sent
together, before a close, and at once past FLUSH_BYTES. Checked on a real TCP connection, with
the server's socket writes counted by its transport."""

from __future__ import annotations

import asyncio
import socket

from server.protocol import FLUSH_BYTES, OneWrite


class Counted(asyncio.Protocol):
    """The server side of the connection: counts the writes that reach its real transport."""

    def __init__(self) -> None:
        self.made: asyncio.Future[OneWrite] = asyncio.get_running_loop().create_future()
        self.writes: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = transport
        assert isinstance(real, asyncio.Transport)
        write = real.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            self.writes.append(len(data))
            write(data)

        real.write = counted  # type: ignore[method-assign]
        self.made.set_result(OneWrite(real))


async def connection() -> tuple[Counted, OneWrite, socket.socket, asyncio.Server]:
    loop = asyncio.get_running_loop()
    protocol = Counted()
    server = await loop.create_server(lambda: protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    client.settimeout(5)
    return protocol, await protocol.made, client, server


def received(client: socket.socket, size: int) -> bytes:
    """Read `size` bytes (in a thread: the loop must run to send them)."""
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        assert chunk, "the connection closed early"
        data += chunk
    return data


def test_a_head_and_body_written_in_one_turn_are_sent_as_one_write() -> None:
    async def scenario() -> None:
        protocol, transport, client, server = await connection()
        try:
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            transport.write(b"{}")
            assert protocol.writes == []  # held until the turn ends
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert len(protocol.writes) == 1
            head_and_body = await asyncio.to_thread(received, client, protocol.writes[0])
            assert head_and_body.endswith(b"\r\n\r\n{}")
        finally:
            client.close()
            server.close()

    asyncio.run(scenario())


def test_closing_sends_what_is_pending_first_and_a_large_body_goes_at_once() -> None:
    async def scenario() -> None:
        protocol, transport, client, server = await connection()
        try:
            big = b"x" * (FLUSH_BYTES + 1)
            transport.write(b"head\r\n\r\n")
            transport.write(big)
            assert protocol.writes == [len(big) + 8]  # past the bound: sent in this turn
            transport.write(b"tail")
            transport.close()
            assert protocol.writes == [len(big) + 8, 4]
            assert (await asyncio.to_thread(received, client, len(big) + 12)).endswith(b"xtail")
            assert await asyncio.to_thread(client.recv, 1) == b""  # then the close
        finally:
            client.close()
            server.close()

    asyncio.run(scenario())
