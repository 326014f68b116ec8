"""The pooled HTTP/1.1 client, against small raw servers on real sockets."""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Awaitable, Callable

import h11

from pyworker.dev.ports import free_port
from pyworker.http import (
    ClientLimits,
    ConnectionPool,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from pyworker.http.client import MAX_KEPT_HEAD_BYTES
from pyworker.http.wire import request_head

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


class RawServer:
    """Runs `script(reader, writer, connection_number)` for each connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer, self.connections)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                self.closed += 1
                writer.close()

        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


class ClientCase(unittest.IsolatedAsyncioTestCase):
    async def serve(self, script: Script, limits: ClientLimits | None = None) -> tuple[RawServer, ConnectionPool]:
        server = RawServer(script)
        url = await server.start()
        pool = ConnectionPool(url, limits)
        self.addAsyncCleanup(server.stop)
        self.addCleanup(pool.close)
        return server, pool


class PoolReuse(ClientCase):
    async def test_sequential_requests_share_one_connection(self) -> None:
        async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            while True:
                await read_request(reader)
                writer.write(OK)

        server, pool = await self.serve(keep_alive)
        for _ in range(5):
            async with await pool.request("POST", "/x", b"{}") as res:
                self.assertEqual(await res.read(), b"ok")
        self.assertEqual(server.connections, 1)

    async def test_response_not_read_to_the_end_is_not_pooled(self) -> None:
        async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            while True:
                await read_request(reader)
                writer.write(OK)

        server, pool = await self.serve(keep_alive)
        async with await pool.request("GET", "/x") as res:
            self.assertEqual(res.status, 200)  # body left unread
        async with await pool.request("GET", "/x") as res:
            await res.read()
        self.assertEqual(server.connections, 2)

    async def test_connection_close_response_is_not_pooled(self) -> None:
        async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")

        server, pool = await self.serve(closing)
        for _ in range(2):
            async with await pool.request("GET", "/x") as res:
                self.assertEqual(await res.read(), b"ok")
        self.assertEqual(server.connections, 2)


class RequestHeads(ClientCase):
    async def test_each_head_is_request_heads_whole_for_its_own_call(self) -> None:
        heads: list[bytes] = []

        async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            while True:
                heads.append(await read_request(reader))
                writer.write(OK)

        _, pool = await self.serve(keep_alive)
        host = pool.netloc
        calls: list[tuple[str, str, bytes, list[tuple[str, str]], str | None]] = [
            ("POST", "/generate", b'{"a":1}', [], "application/json"),
            ("POST", "/generate", b'{"a":12345}', [], "application/json"),  # a kept head, another length
            ("POST", "/generate", b"", [], "application/json"),
            ("POST", "/generate", b"{}", [("x-trace", "1")], "application/json"),
            ("POST", "/generate", b"{}", [("x-trace", "2")], "application/json"),
            ("POST", "/generate", b"{}", [], None),
            ("POST", "/other", b"{}", [], "application/json"),
            ("GET", "/generate", b"", [], None),
            ("GET", "/generate", b"", [("accept", "*/*")], None),
            ("POST", "/generate", b"{}", [("x-long", "v" * 3000)], None),  # too long to keep
            ("POST", "/generate", b"{1}", [("x-long", "v" * 3000)], None),
        ]
        for method, path, body, headers, content_type in calls:
            async with await pool.request(method, path, body, headers, content_type) as res:
                await res.read()
        expected = []
        for method, path, body, headers, content_type in calls:
            fields = [("host", host), *headers]
            if content_type is not None:
                fields.append(("content-type", content_type))
            if body or method != "GET":
                fields.append(("content-length", str(len(body))))
            expected.append(request_head(method, path, fields))
        self.assertEqual(heads, expected)
        self.assertTrue(all(len(head) <= MAX_KEPT_HEAD_BYTES for head in pool._heads._entries.values()))


class StaleConnections(ClientCase):
    async def test_pooled_connection_the_server_closed_is_not_reused(self) -> None:
        async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            # The server ends the idle connection (its keep-alive timeout).

        server, pool = await self.serve(one_then_close)
        async with await pool.request("POST", "/x", b"{}") as res:
            await res.read()
        await asyncio.sleep(0.05)  # the FIN arrives while the connection idles in the pool
        async with await pool.request("POST", "/x", b"{}") as res:
            self.assertEqual(await res.read(), b"ok")
        self.assertEqual(server.connections, 2)

    async def test_idempotent_request_on_a_connection_dying_unseen_is_retried_once(self) -> None:
        async def race(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            if n == 1:
                # Read the next request, then close without answering: the
                # keep-alive race, seen from the client after it has sent.
                await read_request(reader)
                return
            while True:
                await read_request(reader)
                writer.write(OK)

        server, pool = await self.serve(race)
        async with await pool.request("GET", "/x") as res:
            await res.read()
        async with await pool.request("GET", "/x") as res:
            self.assertEqual(await res.read(), b"ok")
        self.assertEqual(server.connections, 2)

    async def test_sent_post_is_not_retried(self) -> None:
        async def race(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            await read_request(reader)

        server, pool = await self.serve(race)
        async with await pool.request("POST", "/x", b"{}") as res:
            await res.read()
        with self.assertRaises(UpstreamProtocolError):
            await pool.request("POST", "/x", b"{}")
        self.assertEqual(server.connections, 1)


class Streaming(ClientCase):
    async def test_chunks_arrive_as_the_server_writes_them(self) -> None:
        async def slow_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
            for i in range(3):
                data = b"data: %d\n\n" % i
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
                await asyncio.sleep(0.15)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await reader.read()

        _, pool = await self.serve(slow_chunks)
        loop = asyncio.get_running_loop()
        arrivals: list[tuple[float, bytes]] = []
        async with await pool.request("GET", "/s") as res:
            self.assertTrue(res.is_streaming)
            start = loop.time()
            async for chunk in res.iter_chunks():
                arrivals.append((loop.time() - start, chunk))
        self.assertEqual([c for _, c in arrivals], [b"data: %d\n\n" % i for i in range(3)])
        gaps = [b[0] - a[0] for a, b in zip(arrivals, arrivals[1:], strict=False)]
        self.assertTrue(all(g > 0.1 for g in gaps), gaps)

    async def test_the_first_piece_of_a_burst_comes_alone(self) -> None:
        events = [b"data: %d\n\n" % i for i in range(2000)]
        burst = b"".join(b"%x\r\n" % len(e) + e + b"\r\n" for e in events) + b"0\r\n\r\n"

        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + burst)

        _, pool = await self.serve(flood)
        async with await pool.request("POST", "/x", b"{}") as res:
            await asyncio.sleep(0.1)  # the whole burst has arrived
            pieces = [piece async for piece in res.iter_chunks()]
        self.assertEqual(b"".join(pieces), b"".join(events))
        self.assertEqual(pieces[0], events[0])  # the first chunk alone
        self.assertLess(len(pieces), 50)  # the rest in few pieces, not one a chunk

    async def test_cancel_mid_stream_closes_the_connection(self) -> None:
        closed = asyncio.Event()

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                while True:
                    writer.write(b"2\r\nhi\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.02)
            except ConnectionError:
                closed.set()

        _, pool = await self.serve(endless)

        async def consume() -> None:
            async with await pool.request("GET", "/s") as res:
                async for _ in res.iter_chunks():
                    pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 2)
        self.assertEqual(pool._idle, [])

    async def test_server_dying_mid_body_is_a_protocol_error(self) -> None:
        async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()

        _, pool = await self.serve(dies)
        async with await pool.request("GET", "/x") as res:
            with self.assertRaises(UpstreamProtocolError):
                await res.read()


class Failures(ClientCase):
    async def test_refused_connection_is_unavailable_502(self) -> None:
        pool = ConnectionPool(f"http://127.0.0.1:{free_port()}")
        with self.assertRaises(UpstreamUnavailable) as ctx:
            await pool.request("GET", "/x")
        self.assertEqual(ctx.exception.status, 502)
        self.assertIn("cannot connect", str(ctx.exception))

    async def test_silent_server_is_a_timeout_504(self) -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            await asyncio.sleep(5)

        _, pool = await self.serve(silent, ClientLimits(read_timeout_s=0.2))
        with self.assertRaises(UpstreamTimeout) as ctx:
            await pool.request("GET", "/x")
        self.assertEqual(ctx.exception.status, 504)

    async def test_garbage_response_is_a_protocol_error(self) -> None:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await read_request(reader)
            writer.write(b"SPDY/9 lol\r\n\r\n")
            await writer.drain()

        _, pool = await self.serve(garbage)
        with self.assertRaises(UpstreamProtocolError):
            await pool.request("GET", "/x")

    def test_only_http_urls_are_accepted(self) -> None:
        with self.assertRaises(ValueError):
            ConnectionPool("ftp://example")


class RequestHead(unittest.TestCase):
    """`request_head` writes what h11 would write, and refuses what h11 refuses to send."""

    CASES = [
        ("POST", "/generate", [("host", "m:5001"), ("content-type", "application/json"), ("content-length", "2")]),
        ("GET", "/health?x=1", [("host", "m"), ("x-empty", "")]),
        ("GET", "/", [("host", "m"), ("x-inner", "a  b\tc")]),
        ("GET", "/", [("host", "m"), ("x-bad", "a\r\nx-injected: 1")]),
        ("GET", "/", [("host", "m"), ("x-bad", "a\nb")]),
        ("GET", "/", [("host", "m"), ("x-bad", "a\x00b")]),
        ("GET", "/", [("host", "m"), ("x-bad", " leading")]),
        ("GET", "/", [("host", "m"), ("bad name", "v")]),
        ("GET", "/", [("host", "m"), ("bad:name", "v")]),
        ("GET", "/a b", [("host", "m")]),
        ("GE T", "/", [("host", "m")]),
        ("GET", "/\x7f", [("host", "m")]),
    ]

    def test_same_bytes_as_h11_or_both_refuse(self) -> None:
        for method, target, headers in self.CASES:
            with self.subTest(method=method, target=target, headers=headers):
                try:
                    conn = h11.Connection(h11.CLIENT)
                    expected: bytes | None = conn.send(h11.Request(method=method, target=target, headers=headers))
                except h11.LocalProtocolError:
                    expected = None
                try:
                    got: bytes | None = request_head(method, target, headers)
                except ValueError:
                    got = None
                self.assertEqual(got, expected)


if __name__ == "__main__":
    unittest.main()
