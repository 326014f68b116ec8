"""The HTTP/1.1 server, spoken to with raw bytes over real sockets."""

from __future__ import annotations

import asyncio
import json
import unittest
import unittest.mock

import h11

from pyworker.http import (
    ClientDisconnected,
    HTTPServer,
    Request,
    Response,
    ServerLimits,
    StreamResponse,
    get,
    post,
    wire,
)
from pyworker.http.wire import REASONS, response_head
from tests.support import post_bytes, read_response, until


class ServerCase(unittest.IsolatedAsyncioTestCase):
    limits = ServerLimits(
        max_header_bytes=4096,
        max_body_bytes=1000,
        header_timeout_s=0.3,
        body_timeout_s=0.3,
        keepalive_timeout_s=0.5,
        send_timeout_s=0.3,
        max_connections=4,
    )

    async def asyncSetUp(self) -> None:
        self.calls: list[str] = []
        self.body_types: list[type] = []
        self.stopped_reading = ""
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()

        async def echo(request: Request) -> Response:
            self.calls.append(request.body.decode())
            self.body_types.append(type(request.body))
            return Response(b"echo:" + request.body, content_type="text/plain")

        async def slow(request: Request) -> Response:
            self.started.set()
            try:
                await asyncio.sleep(float(request.query.split("=")[1]) if request.query else 10)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return Response(f"slept {request.query}")

        async def stream(request: Request) -> StreamResponse:
            res = StreamResponse(content_type="text/event-stream")
            await res.prepare(request)
            if request.query == "lines":  # the three in one write; the empty piece is no chunk
                await res.writelines([b"data: 0\n\n", b"", b"data: 1\n\n", b"data: 2\n\n"])
            else:
                for i in range(3):
                    await res.write(b"data: %d\n\n" % i)
            await res.write_eof()
            return res

        async def boom(request: Request) -> Response:
            raise RuntimeError("bug")

        async def early(request: Request) -> Response:
            response = Response(b"sent early")
            request.respond(response)
            self.calls.append("after")
            if request.query == "fail":
                raise RuntimeError("bug after the answer")
            return response

        async def flood(request: Request) -> StreamResponse:
            res = StreamResponse(content_type="application/octet-stream")
            await res.prepare(request)
            try:
                for _ in range(1000):
                    await res.write(b"x" * 1024 * 1024)
            except ClientDisconnected as exc:
                self.stopped_reading = str(exc)
                raise
            await res.write_eof()
            return res

        async def answer(request: Request) -> Response:
            """The status and headers the query asks for: answers h11 writes for the server."""
            status, _, header = request.query.partition("&")
            name, _, value = header.partition("=")
            headers = [(name, value)] if header else []
            return Response(b"" if status in ("204", "304") else b"body", status=int(status), headers=headers)

        self.server = HTTPServer(
            [
                post("/echo", echo),
                post("/answer", answer),
                get("/slow", slow),
                get("/stream", stream),
                get("/boom", boom),
                get("/flood", flood),
                get("/early", early),
            ],
            self.limits,
        )
        await self.server.start("127.0.0.1", 0)

    async def asyncTearDown(self) -> None:
        await self.server.shutdown(0.1)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.server.port)

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        """Send raw bytes, read one response, and tell whether the server then closed."""
        reader, writer = await self.connect()
        writer.write(raw)
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        closed = await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
        return status, headers, body, closed


class MalformedInput(ServerCase):
    async def test_garbage_request_line_is_400_with_reason_and_closes(self) -> None:
        status, _, body, closed = await self.exchange(b"HELLO THERE\r\n\r\n")
        self.assertEqual(status, 400)
        self.assertIn("error", json.loads(body))
        self.assertTrue(closed)

    async def test_bad_header_line_is_400(self) -> None:
        status, _, _, closed = await self.exchange(b"GET /echo HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        self.assertEqual(status, 400)
        self.assertTrue(closed)

    async def test_oversized_header_block_is_431(self) -> None:
        raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
        status, _, body, closed = await self.exchange(raw)
        self.assertEqual(status, 431)
        self.assertTrue(body)
        self.assertTrue(closed)

    async def test_declared_body_over_limit_is_413_before_reading_it(self) -> None:
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        status, _, body, closed = await self.exchange(raw)
        self.assertEqual(status, 413)
        self.assertIn("1000", json.loads(body)["error"])
        self.assertTrue(closed)
        self.assertEqual(self.calls, [])

    async def test_chunked_body_over_limit_is_413(self) -> None:
        chunk = b"200\r\n" + b"x" * 0x200 + b"\r\n"
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
        status, _, _, closed = await self.exchange(raw)
        self.assertEqual(status, 413)
        self.assertTrue(closed)
        self.assertEqual(self.calls, [])

    async def test_unknown_path_is_404(self) -> None:
        status, _, body, closed = await self.exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 404)
        self.assertIn("/nope", json.loads(body)["error"])

    async def test_wrong_method_is_405_with_allow(self) -> None:
        status, headers, _, _ = await self.exchange(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "POST")

    async def test_handler_bug_is_500_and_connection_lives(self) -> None:
        reader, writer = await self.connect()
        writer.write(
            b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n" + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
        )
        with self.assertLogs("pyworker.http", "ERROR"):
            status, _, _ = await read_response(reader)
            self.assertEqual(status, 500)
            status, _, body = await read_response(reader)
        self.assertEqual((status, body), (200, b"echo:z"))
        writer.close()


class Framing(ServerCase):
    async def test_the_body_is_bytes_whether_it_came_in_one_read_or_several(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual((await read_response(reader))[2], b"echo:hello")
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"llo")
        self.assertEqual((await read_response(reader))[2], b"echo:hello")
        self.assertEqual(self.body_types, [bytes, bytes])
        writer.close()

    async def test_keep_alive_serves_many_requests_on_one_connection(self) -> None:
        reader, writer = await self.connect()
        for i in range(3):
            data = b"n%d" % i
            writer.write(post_bytes("/echo", data))
            status, _, body = await read_response(reader)
            self.assertEqual((status, body), (200, b"echo:" + data))
        self.assertEqual(len(self.server.connections), 1)
        writer.close()

    async def test_pipelined_requests_are_answered_in_order(self) -> None:
        reader, writer = await self.connect()
        raw = b"GET /slow?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n" + b"".join(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % i for i in range(5)
        )
        writer.write(raw)
        first = await read_response(reader)
        self.assertEqual(first[2], b"slept s=0.2")
        bodies = [(await read_response(reader))[2] for _ in range(5)]
        self.assertEqual(bodies, [b"echo:%d" % i for i in range(5)])
        writer.close()

    async def test_plain_and_h11_requests_pipelined_on_one_connection(self) -> None:
        reader, writer = await self.connect()
        writer.write(
            post_bytes("/echo", b"a")
            + b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
            + b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n"
            + b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
            + post_bytes("/echo", b"c")
            + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nd"
        )
        self.assertEqual((await read_response(reader))[2], b"echo:a")
        self.assertEqual((await read_response(reader))[2], b"data: 0\n\ndata: 1\n\ndata: 2\n\n")
        self.assertEqual((await read_response(reader))[2], b"echo:b")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # HEAD: no body follows
        self.assertTrue(head.startswith(b"HTTP/1.1 405"), head)  # routes answer HEAD only if they say so
        self.assertEqual((await read_response(reader))[2], b"echo:c")
        status, headers, body = await read_response(reader)
        self.assertEqual((status, body, headers.get("connection")), (200, b"echo:d", "close"))
        self.assertEqual(await asyncio.wait_for(reader.read(1), 5), b"")
        writer.close()

    async def test_a_response_sent_before_the_handler_returns(self) -> None:
        reader, writer = await self.connect()
        for query in ("", "?fail", ""):
            writer.write(b"GET /early%s HTTP/1.1\r\nHost: x\r\n\r\n" % query.encode())
            status, _, body = await read_response(reader)
            self.assertEqual((status, body), (200, b"sent early"))
        self.assertEqual(self.calls, ["after"] * 3)
        writer.close()

    async def test_chunked_request_body_is_joined(self) -> None:
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        status, _, body, _ = await self.exchange(raw)
        self.assertEqual((status, body), (200, b"echo:abcde"))

    async def test_expect_100_continue_is_answered_before_the_body(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        self.assertTrue(interim.startswith(b"HTTP/1.1 100"))
        writer.write(b"ok")
        status, _, body = await read_response(reader)
        self.assertEqual((status, body), (200, b"echo:ok"))
        writer.close()

    async def test_http_1_0_client_gets_an_answer_and_a_close(self) -> None:
        status, _, body, closed = await self.exchange(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual((status, body), (200, b"echo:hi"))
        self.assertTrue(closed)

    async def test_stream_to_http_1_0_client_ends_by_closing(self) -> None:
        for target in (b"/stream", b"/stream?lines"):
            reader, writer = await self.connect()
            writer.write(b"GET %s HTTP/1.0\r\n\r\n" % target)
            data = await asyncio.wait_for(reader.read(), 5)
            self.assertTrue(data.endswith(b"\r\n\r\ndata: 0\n\ndata: 1\n\ndata: 2\n\n"), data)
            self.assertNotIn(b"chunked", data.lower())
            writer.close()

    async def test_stream_to_http_1_1_client_is_chunked(self) -> None:
        for target in (b"/stream", b"/stream?lines"):
            reader, writer = await self.connect()
            writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
            status, headers, body = await read_response(reader)
            self.assertEqual(headers["transfer-encoding"], "chunked")
            self.assertEqual(body, b"data: 0\n\ndata: 1\n\ndata: 2\n\n")
            writer.close()

    async def test_pieces_written_together_are_a_chunk_each(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"GET /stream?lines HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)
        chunks = b"".join(b"9\r\ndata: %d\n\n\r\n" % i for i in range(3))
        self.assertTrue(data.endswith(b"\r\n\r\n" + chunks + b"0\r\n\r\n"), data)
        writer.close()


def h11_answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes | None, stream: list[bytes]) -> bytes:
    """What h11 writes for a response to a plain request: whole (`body`) or streamed."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    conn.next_event()
    if body is not None:
        headers = headers + [(b"content-length", b"%d" % len(body))]
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))) or b""
    for piece in [body] if body else stream:
        out += conn.send(h11.Data(data=piece)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


class WireAgainstH11(unittest.TestCase):
    """The heads and chunks the server writes for plain requests are h11's, byte for byte."""

    HEADERS = [
        [],
        [(b"content-type", b"application/json")],
        [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-empty", b"")],
        [(b"x-inner-space", b"a b\tc"), (b"x-latin", b"caf\xe9")],
    ]
    REFUSED = [[(b"x-bad", b"a\r\nx-injected: 1")], [(b"x-bad", b"a\x00")], [(b"bad name", b"v")], [(b"x", b" v")]]

    def test_whole_answers(self) -> None:
        for status in (200, 201, 400, 404, 422, 429, 500, 502, 599):
            for headers in self.HEADERS:
                for body in (b"", b"{}", b"x" * 70000):
                    with self.subTest(status=status, headers=headers, size=len(body)):
                        head = response_head(status, headers, b"content-length: %d\r\n" % len(body))
                        self.assertEqual(head + body if head else None, h11_answer(status, headers, body, []))

    def test_streamed_answers(self) -> None:
        pieces = [b"data: 1\n\n", b"x" * 5000, b"\r\n"]
        for headers in self.HEADERS:
            with self.subTest(headers=headers):
                head = response_head(200, headers, b"Transfer-Encoding: chunked\r\n")
                assert head is not None
                ours = head + b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
                self.assertEqual(ours, h11_answer(200, headers, None, pieces))

    def test_kept_header_sets_are_bounded_and_long_ones_never_kept(self) -> None:
        long_set = [(b"x-long", b"v" * 3000)]
        for _ in range(2):
            head = response_head(200, long_set, b"content-length: 0\r\n")
            self.assertEqual(head, h11_answer(200, long_set, b"", []))
        self.assertIsNone(wire._kept_fields.find(tuple(long_set)))
        for n in range(3 * wire.MAX_KEPT_SETS):
            response_head(200, [(b"x-n", b"%d" % n)], b"content-length: 0\r\n")
            self.assertLessEqual(len(wire._kept_fields), wire.MAX_KEPT_SETS)

    def test_what_h11_refuses_is_refused(self) -> None:
        for headers in self.REFUSED:
            with self.subTest(headers=headers):
                with self.assertRaises(h11.LocalProtocolError):
                    h11_answer(200, headers, b"", [])
                for _ in range(2):  # and again: a refusal is never kept as a head
                    with self.assertRaises(ValueError):
                        response_head(200, headers, b"content-length: 0\r\n")

    def test_framing_headers_and_bodiless_statuses_are_left_to_h11(self) -> None:
        for status, headers in [
            (204, []),
            (304, []),
            (101, []),
            (200, [(b"Content-Length", b"3")]),
            (200, [(b"connection", b"close")]),
            (200, [(b"transfer-encoding", b"chunked")]),
        ]:
            for _ in range(2):  # and again: nothing kept changes the answer
                self.assertIsNone(response_head(status, headers, b"content-length: 0\r\n"))


class KnownHeads(ServerCase):
    """A head h11 has read is not read again when it comes back with another length (known_heads.py)."""

    async def test_one_head_with_many_lengths_on_one_connection_and_on_new_ones(self) -> None:
        bodies = [b"", b"x", b"0123456789", b"y" * 100, b"z" * 999, b"w"]
        reader, writer = await self.connect()
        for body in bodies:
            writer.write(post_bytes("/echo", body))
            self.assertEqual(await read_response(reader), (200, unittest.mock.ANY, b"echo:" + body))
        writer.close()
        for body in bodies:
            status, _, answer, _closed = await self.exchange(post_bytes("/echo", body))
            self.assertEqual((status, answer), (200, b"echo:" + body))
        self.assertEqual(len(self.server.known_heads), 1)
        self.assertEqual(self.server.known_heads.hits, 2 * len(bodies) - 1)  # h11 read the first only

    async def test_answers_h11_writes_are_the_same_for_a_known_head(self) -> None:
        for query, closes in (
            ("204", False),
            ("304", False),
            ("200&connection=close", True),
            ("201&content-length=4", False),
        ):
            head = b"POST /answer?%s HTTP/1.1\r\nHost: x\r\nContent-Length: %%d\r\n\r\n" % query.encode()
            answers = []
            for body in (b"a", b"bb", b"a"):  # h11 reads the first head; the table gives the others
                reader, writer = await self.connect()
                writer.write(head % len(body) + body + b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n")
                raw = await asyncio.wait_for(reader.read(65536), 5)
                while not (raw.endswith(b"sent early") or closes and raw.endswith(b"body")):
                    more = await asyncio.wait_for(reader.read(65536), 5)
                    if not more:
                        break
                    raw += more
                closed = await asyncio.wait_for(reader.read(1), 5) == b"" if closes else False
                writer.close()
                answers.append((raw, closed))
            with self.subTest(query=query):
                self.assertEqual(answers[0], answers[1])
                self.assertEqual(answers[0], answers[2])
                self.assertEqual(answers[0][0].endswith(b"sent early"), not closes)
                self.assertEqual(answers[0][1], closes)

    async def test_a_known_head_over_the_body_limit_is_413(self) -> None:
        status, _, _, _closed = await self.exchange(post_bytes("/echo", b"x" * 1000))
        self.assertEqual(status, 200)
        status, _, body, closed = await self.exchange(post_bytes("/echo", b"x" * 1001))
        self.assertEqual((status, closed), (413, True))
        self.assertIn(b"over 1000 bytes", body)


class SlowAndIdleClients(ServerCase):
    async def test_slow_header_gets_408_and_close(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"GET /echo HTTP/1.1\r\nHo")
        # Keep trickling: the deadline counts from the first byte, not the last.
        for _ in range(3):
            await asyncio.sleep(0.1)
            writer.write(b"o")
        status, _, body = await asyncio.wait_for(read_response(reader), 2)
        self.assertEqual(status, 408)
        self.assertIn("head", json.loads(body)["error"])
        self.assertEqual(await reader.read(), b"")
        writer.close()

    async def test_the_first_head_deadline_is_dropped_at_the_head_or_the_close(self) -> None:
        first_heads = self.server.first_heads
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, quiet = await self.connect()
        reader, writer = await self.connect()
        await until(lambda: len(first_heads) == 2)
        quiet.close()
        await until(lambda: len(first_heads) == 1)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        self.assertEqual((await read_response(reader))[0], 200)
        self.assertEqual(len(first_heads), 0)
        if loop.time() - started >= self.limits.header_timeout_s:
            self.skipTest("too slow to tell a dropped deadline from one that expired")
        writer.close()

    async def test_a_first_body_may_arrive_after_the_head_deadline(self) -> None:
        reader, writer = await self.connect()
        # A head, then its body trickled on past the head deadline (0.3 s from
        # accept): the body's own deadlines hold, no 408.
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\na")
        for byte in (b"b", b"c", b"d", b"e"):
            await asyncio.sleep(0.1)
            writer.write(byte)
        self.assertEqual((await read_response(reader))[:3:2], (200, b"echo:abcde"))
        writer.close()

    async def test_a_partial_head_on_a_kept_alive_connection_gets_408(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        self.assertEqual((await read_response(reader))[0], 200)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        started = asyncio.get_running_loop().time()
        status, _, body = await asyncio.wait_for(read_response(reader), 2)
        self.assertEqual(status, 408)
        self.assertIn("head", json.loads(body)["error"])
        # The header deadline (0.3 s), not the keep-alive one (0.5 s) from the last answer.
        self.assertLess(asyncio.get_running_loop().time() - started, 0.45)
        writer.close()

    async def test_stalled_body_gets_408(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        status, _, body = await asyncio.wait_for(read_response(reader), 2)
        self.assertEqual(status, 408)
        self.assertIn("body", json.loads(body)["error"])
        writer.close()

    async def test_idle_keep_alive_connection_is_closed(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
        await read_response(reader)
        self.assertEqual(await asyncio.wait_for(reader.read(), 2), b"")
        writer.close()

    async def test_at_the_limit_the_oldest_idle_connection_makes_room(self) -> None:
        held = [await self.connect() for _ in range(self.limits.max_connections)]
        await asyncio.sleep(0.05)
        reader, writer = await self.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        status, _, body = await asyncio.wait_for(read_response(reader), 2)
        self.assertEqual((status, body), (200, b"echo:ok"))
        # The first connection made was closed for it, the others are open.
        self.assertEqual(await asyncio.wait_for(held[0][0].read(), 2), b"")
        self.assertEqual(len(self.server.connections), self.limits.max_connections)
        for _, w in held:
            w.close()
        writer.close()

    async def test_connections_over_the_limit_all_handling_requests_get_503(self) -> None:
        held = [await self.connect() for _ in range(self.limits.max_connections)]
        for _, w in held:
            w.write(b"GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        reader, writer = await self.connect()
        status, _, body = await asyncio.wait_for(read_response(reader), 2)
        self.assertEqual(status, 503)
        for _, w in held:
            w.close()
        writer.close()


class Disconnects(ServerCase):
    async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(1.5)  # reading nothing while the handler writes
        self.assertIn("read nothing for 0.3 s", self.stopped_reading)
        self.assertEqual(len(self.server.connections), 0)
        writer.close()

    async def test_client_disconnect_cancels_the_running_handler(self) -> None:
        reader, writer = await self.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(self.started.wait(), 2)
        writer.close()
        await asyncio.wait_for(self.cancelled.wait(), 2)
        await asyncio.sleep(0.01)
        self.assertEqual(len(self.server.connections), 0)


if __name__ == "__main__":
    unittest.main()
