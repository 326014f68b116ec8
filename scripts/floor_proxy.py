#!/usr/bin/env python3
"""The floor of a proxy written on asyncio: bytes passed through, nothing else.

    python scripts/floor_proxy.py LISTEN_PORT MODEL_PORT

Not a usable proxy: it parses, checks and counts nothing. It takes each
read from a client as one whole request and sends it to an idle keep-alive
connection to the model (opening one when none is idle), and passes every
byte of the answer back as it comes, until the answer's Content-Length
body or last chunk has gone by. `scripts/bench.py --floor` measures it
beside the others: what any proxy on asyncio costs on the machine before it
does any work of its own.
"""

from __future__ import annotations

import asyncio
import sys

LAST_CHUNK = b"\r\n0\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the model; answers one client request at a time."""

    def __init__(self, idle: list[Upstream]) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.client: asyncio.Transport | None = None
        self.head: bytes | None = b""  # the answer's head so far; None once it has ended
        self.left = -1  # Content-Length bytes still to come; -1 for a chunked answer
        self.tail = b""  # the last bytes of a chunked answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, client: asyncio.Transport, request: bytes) -> None:
        assert self.transport is not None
        self.client, self.head, self.left, self.tail = client, b"", -1, b""
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.client is None:
            return
        if not self.client.is_closing():
            self.client.write(data)
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            self.head = None
            at = head.find(b"\ncontent-length:")
            if at >= 0:
                self.left = int(head[at + 16 :].split(b"\r\n", 1)[0])
            else:
                self.tail = b"\r\n"  # the body's first chunk-size line follows the head's CRLF
        if self.left >= 0:
            self.left -= len(data)
            done = self.left <= 0
        else:
            self.tail = (self.tail + data)[-len(LAST_CHUNK) :]
            done = self.tail == LAST_CHUNK
        if done:
            self.client = None
            self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.client is not None:
            self.client.close()


class Client(asyncio.Protocol):
    def __init__(self, model_port: int, idle: list[Upstream]) -> None:
        self.model_port = model_port
        self.idle = idle
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.idle:
            self.idle.pop().send(self.transport, data)
        else:
            asyncio.get_running_loop().create_task(self._connect_and_send(data))

    async def _connect_and_send(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: Upstream(self.idle), "127.0.0.1", self.model_port)
        assert self.transport is not None
        upstream.send(self.transport, data)


async def serve(port: int, model_port: int) -> None:
    idle: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(model_port, idle), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
