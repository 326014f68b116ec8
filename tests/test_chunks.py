"""The client's body fast paths (plain chunks, Content-Length) against h11 alone:
the same response bytes, split at every boundary, must give the same body,
the same end (or both an error) and the same keep-alive decision."""

from __future__ import annotations

import asyncio
import unittest
from typing import Any

import h11

from pyworker.http.chunks import ChunkError, ChunkScanner, LengthReader
from pyworker.http.client import ClientLimits, UpstreamError, _ClientConnection
from pyworker.http.known_heads import KnownResponses
from pyworker.http.wire import request_head

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

VALID_BODIES = [
    b"0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"".join(b"%x\r\n" % len(e) + e + b"\r\n" for e in (b"data: %d\n\n" % i for i in range(40))) + b"0\r\n\r\n",
    b"A\r\n0123456789\r\nf\r\n0123456789abcde\r\n0\r\n\r\n",  # upper and lower case hex
    b"0005\r\nhello\r\n000\r\n\r\n",  # leading zeros
    b"5;name=value\r\nhello\r\n0\r\n\r\n",  # an extension: h11's to read
    b"5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",  # trailers
    b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size: h11 decides
    b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n",
    b"3\r\n\r\n\r\r\n0\r\n\r\n",  # data that holds CR and LF
]
# Whole responses whose bodies are not chunked: a length, none, or up to the close.
OTHER_RESPONSES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive, close\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nConnection: Keep-Alive\r\n\r\nabc",
    b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\n\r\nup to the close",
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\ncontent-length: 600\r\n\r\n" + bytes(range(256)) * 2 + b"\r\n" * 44,
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",  # h11 folds equal ones
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.2 200 OK\r\ncontent-length: 5\r\n\r\nhello",  # h11 takes any 1.x or later as 1.1
]
BROKEN_RESPONSES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel",  # closed short
    b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n",  # closed in the head
]
INVALID_BODIES = [
    b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
    b"5\r\nhello\rX0\r\n\r\n",
    b"g\r\nhello\r\n0\r\n\r\n",  # not hex
    b"5\r\nhel",  # the connection closes mid-chunk
    b"5\r\nhello\r\n",  # ... at a boundary, without the last chunk
    b"5\r\nhello",
    b"\r\n5\r\nhello\r\n0\r\n\r\n",  # an empty size line
]


def h11_alone(wire: bytes, pieces: list[bytes], keep_alive: bool = False) -> tuple[Any, ...]:
    """Body and how it ended ("end", "error"), by h11 with nothing in front of it;
    with `keep_alive`, also whether h11 would use the connection again."""
    ended = _read_by_h11(pieces)
    return ended if keep_alive else ended[:2]


def _read_by_h11(pieces: list[bytes]) -> tuple[bytes, str, bool]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "m"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    body = b""
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    break
                if isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    trailing, closed = conn.trailing_data
                    reusable = not closed and not trailing
                    try:
                        conn.start_next_cycle()
                    except h11.LocalProtocolError:
                        reusable = False
                    return body, "end", reusable
                elif isinstance(event, h11.ConnectionClosed):
                    return body, "error", False
    except h11.RemoteProtocolError:
        pass
    return body, "error", False


class _Transport(asyncio.Transport):
    """Stands in for the socket under the connection (the connection is what is tested)."""

    def write(self, data: Any) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def through_client(
    pieces: list[bytes], keep_alive: bool = False, known: KnownResponses | None = None
) -> tuple[Any, ...]:
    """Body and end as the pool's connection reads them (head by h11, plain chunks
    and lengths by chunks.py); with `keep_alive`, also whether it would be pooled.

    Read twice, by two connections sharing a table of known heads: h11 reads the
    head the first time, the table gives it the second (known_heads.py); both
    readings must agree. With `known`, that table is used (and kept) instead.
    """

    async def read() -> tuple[Any, ...]:  # the connection wants an event loop, never waits on it
        table = KnownResponses() if known is None else known
        ended = _read_through_client(pieces, table)
        again = _read_through_client(pieces, table)
        assert again == ended, (again, ended)
        return ended if keep_alive else ended[:2]

    return asyncio.run(read())


def _read_through_client(pieces: list[bytes], known: KnownResponses) -> tuple[bytes, str, bool]:
    conn = _ClientConnection(ClientLimits(), known)
    conn.connection_made(_Transport())
    conn.send(request_head("POST", "/", [("host", "m"), ("content-length", "0")]), b"POST", b"", 0)
    body = b""
    got_head = False
    try:
        for piece in [*pieces, None]:
            if piece is None:
                conn.eof_received()
            else:
                conn.data_received(piece)
            while True:
                event = conn.poll_event()
                if event is None:
                    break
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    got_head = True
                elif isinstance(event, h11.Data):
                    assert got_head
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    if not isinstance(conn._body, LengthReader):
                        assert conn.framing.their_state is h11.DONE, "h11 ended the message"
                    return body, "end", conn.end_exchange()
                else:
                    return body, "error", False
    except UpstreamError:
        return body, "error", False
    return body, "error", False


def splits(wire: bytes) -> list[list[bytes]]:
    """The wire whole, split in two at every byte, and byte by byte."""
    ways = [[wire]] + [[wire[:k], wire[k:]] for k in range(1, len(wire))]
    ways.append([wire[i : i + 1] for i in range(len(wire))])
    return ways


class Differential(unittest.TestCase):
    def test_valid_streams_give_what_h11_gives(self) -> None:
        for body in VALID_BODIES:
            wire = HEAD + body
            expected = h11_alone(wire, [wire])
            self.assertEqual(expected[1], "end", body)
            for pieces in splits(wire):
                with self.subTest(body=body[:40], pieces=len(pieces), first=len(pieces[0])):
                    self.assertEqual(through_client(pieces), expected)

    def test_broken_streams_fail_as_h11_fails(self) -> None:
        for body in INVALID_BODIES:
            wire = HEAD + body
            self.assertEqual(h11_alone(wire, [wire])[1], "error", body)
            for pieces in splits(wire):
                with self.subTest(body=body, pieces=len(pieces), first=len(pieces[0])):
                    got_body, end = through_client(pieces)
                    self.assertEqual(end, "error")
                    self.assertTrue(b"hello".startswith(got_body) or not got_body, got_body)

    def test_a_head_with_bare_lf_lines_is_read(self) -> None:
        wire = HEAD.replace(b"\r\n", b"\n") + b"5\r\nhello\r\n0\r\n\r\n"
        self.assertEqual(through_client([wire]), h11_alone(wire, [wire]))

    def test_other_responses_give_what_h11_gives_and_the_same_keep_alive(self) -> None:
        for wire in OTHER_RESPONSES + [HEAD + b"5\r\nhello\r\n0\r\n\r\n"]:
            expected = h11_alone(wire, [wire], keep_alive=True)
            self.assertEqual(expected[1], "end", wire)
            for pieces in splits(wire):
                with self.subTest(wire=wire[:60], pieces=len(pieces), first=len(pieces[0])):
                    self.assertEqual(through_client(pieces, keep_alive=True), expected)

    def test_broken_responses_fail_as_h11_fails(self) -> None:
        for wire in BROKEN_RESPONSES:
            self.assertEqual(h11_alone(wire, [wire])[1], "error", wire)
            for pieces in splits(wire):
                with self.subTest(wire=wire[:60], pieces=len(pieces), first=len(pieces[0])):
                    self.assertEqual(through_client(pieces)[1], "error")

    def test_bytes_after_a_body_keep_the_connection_out_of_the_pool(self) -> None:
        extra = b"HTTP/1.1 200 OK\r\n"
        for wire in (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" + extra,
            HEAD + b"2\r\nok\r\n0\r\n\r\n" + extra,
        ):
            # Split anywhere before the extra bytes, which come with the body's end
            # (later ones come to a pooled connection, which `received` rules out).
            for k in range(1, len(wire) - len(extra)):
                pieces = [wire[:k], wire[k:]]
                with self.subTest(wire=wire[:60], first=k):
                    self.assertEqual(through_client(pieces, keep_alive=True), (b"ok", "end", False))

    def test_a_known_head_with_another_length_reads_as_h11_reads_it(self) -> None:
        for form in (b"Content-Length: %d", b"content-length:%d", b"CONTENT-LENGTH: \t%d  "):
            known = KnownResponses()
            through_client([b"HTTP/1.1 200 OK\r\n%s\r\nX-A: b\r\n\r\nok" % (form % 2)], known=known)
            for size in (0, 1, 9, 10, 250):
                wire = b"HTTP/1.1 200 OK\r\n%s\r\nX-A: b\r\n\r\n" % (form % size) + b"y" * size
                expected = h11_alone(wire, [wire], keep_alive=True)
                for pieces in splits(wire)[:40]:
                    with self.subTest(form=form, size=size, pieces=len(pieces), first=len(pieces[0])):
                        hits = known.hits
                        self.assertEqual(through_client(pieces, keep_alive=True, known=known), expected)
                        self.assertEqual(known.hits, hits + 2)  # both readings came from the table

    def test_a_handler_that_changes_the_headers_changes_no_other_response(self) -> None:
        async def read_then_change(wire: bytes, known: KnownResponses) -> list[tuple[bytes, bytes]]:
            """The head's fields as read; then changed, as a handler may change UpstreamResponse.headers."""
            conn = _ClientConnection(ClientLimits(), known)
            conn.connection_made(_Transport())
            conn.send(request_head("POST", "/", [("host", "m"), ("content-length", "0")]), b"POST", b"", 0)
            conn.data_received(wire)
            while not isinstance(conn.poll_event(), h11.Response):
                pass
            fields = conn.head_fields
            read = list(fields)
            fields.append((b"x-added", b"by a handler"))
            fields[0] = (b"x-changed", b"too")
            return read

        for wire in (HEAD + b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"):
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="POST", target="/", headers=[("host", "m")]))
            conn.receive_data(wire)
            event = conn.next_event()
            assert isinstance(event, h11.Response)
            expected = [(name.lower(), value) for name, value in event.headers.raw_items()]
            known = KnownResponses()
            for _ in range(3):  # h11 reads the first; the table gives the others
                self.assertEqual(asyncio.run(read_then_change(wire, known)), expected)
            self.assertEqual(known.hits, 2)

    def test_100_continue_then_the_answer(self) -> None:
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"5\r\nhello\r\n0\r\n\r\n"
        for pieces in splits(wire):
            self.assertEqual(through_client(pieces), (b"hello", "end"))


class Length(unittest.TestCase):
    def test_a_piece_that_fits_is_passed_on_without_a_copy(self) -> None:
        reader = LengthReader(10)
        piece = b"0123456789"
        reader.feed(piece)
        self.assertIs(reader.take(), piece)
        self.assertTrue(reader.done)

    def test_bytes_past_the_length_are_not_kept(self) -> None:
        reader = LengthReader(3)
        reader.feed(b"ab")
        reader.feed(b"cdef")
        self.assertEqual(reader.take(), b"abc")
        self.assertTrue(reader.extra)
        reader.feed(b"x" * 1000)
        self.assertEqual(reader.take(), b"")


class Scanner(unittest.TestCase):
    def test_many_chunks_in_one_read_come_out_as_one_piece(self) -> None:
        scanner = ChunkScanner()
        events = [b"data: %d\n\n" % i for i in range(300)]
        scanner.feed(b"".join(b"%x\r\n" % len(e) + e + b"\r\n" for e in events))
        self.assertEqual(scanner.take(), b"".join(events))
        self.assertTrue(scanner.at_boundary)
        self.assertIsNone(scanner.handoff)

    def test_a_limit_stops_decoding_at_the_first_boundary_past_it(self) -> None:
        scanner = ChunkScanner()
        events = [b"data: %d\n\n" % i for i in range(300)]
        scanner.feed(b"".join(b"%x\r\n" % len(e) + e + b"\r\n" for e in events) + b"0\r\n\r\n")
        self.assertEqual(scanner.take(limit=20), b"".join(events[:3]))  # 9 + 9 + 9 bytes
        self.assertEqual(scanner.take(), b"".join(events[3:]))
        self.assertEqual(scanner.handoff, b"0\r\n\r\n")

    def test_the_last_chunk_is_handed_over_from_the_boundary(self) -> None:
        scanner = ChunkScanner()
        scanner.feed(b"2\r\nab\r\n0\r\nx: y\r\n\r\n")
        self.assertEqual(scanner.take(), b"ab")
        self.assertEqual(scanner.handoff, b"0\r\nx: y\r\n\r\n")

    def test_a_large_chunk_is_passed_on_as_it_arrives(self) -> None:
        scanner = ChunkScanner()
        scanner.feed(b"100000\r\n" + b"x" * 1000)
        self.assertEqual(len(scanner.take()), 1000)
        scanner.feed(b"y" * 5000)
        self.assertEqual(scanner.take(), b"y" * 5000)
        self.assertFalse(scanner.at_boundary)

    def test_a_broken_chunk_end_is_an_error(self) -> None:
        scanner = ChunkScanner()
        scanner.feed(b"1\r\naXY")
        with self.assertRaises(ChunkError):
            scanner.take()


if __name__ == "__main__":
    unittest.main()
