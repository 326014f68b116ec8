"""The request framer and head checks: bytes in, pieces or a FramingError out."""

from __future__ import annotations

import unittest
from typing import Any

import h11

from pyworker.http.framing import MAX_CHUNK_LINE_BYTES, FramingError, RequestFramer, check_head
from pyworker.http.known_heads import KnownHeads

MAX_HEAD = 1024
MAX_BODY = 10_000


def record(conn: h11.Connection, event: Any, events: list[Any]) -> bool:
    """Add `event` to `events` (data joined); False when no more events can come.

    After a request's end it answers, as the server does, so the next
    request on the connection can be read.
    """
    if isinstance(event, h11.Request):
        events.append(("request", event.method, event.target))
    elif isinstance(event, h11.Data):
        if events and events[-1][0] == "data":
            events[-1] = ("data", events[-1][1] + bytes(event.data))
        else:
            events.append(("data", bytes(event.data)))
    elif isinstance(event, h11.EndOfMessage):
        events.append(("end", list(event.headers)))
        conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False
        conn.start_next_cycle()
    else:
        return False
    return True


def frame(data: bytes, split: int | None = None, parts: list[bytes] | None = None) -> list[Any]:
    """Events from `data` through the framer and h11 as the server drives them.

    `split`: feed the bytes in two parts at that offset (or as `parts`). Ends with the
    FramingError or h11 error (status, message) when there is one.
    """
    framer = RequestFramer(MAX_HEAD, MAX_BODY)
    conn = h11.Connection(h11.SERVER)
    events: list[Any] = []
    if parts is None:
        parts = [data] if split is None else [data[:split], data[split:]]
    try:
        for part in parts:
            framer.feed(part)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    piece = framer.next_piece()
                    if piece is None:
                        break
                    conn.receive_data(piece)
                    continue
                if isinstance(event, h11.Request):
                    framer.start_body(*check_head(event, MAX_BODY)[:2])
                if not record(conn, event, events):
                    if isinstance(event, h11.EndOfMessage):
                        return events
                    break
                if isinstance(event, h11.EndOfMessage):
                    framer.next_request()
    except FramingError as exc:
        events.append(("error", exc.status, exc.message))
    except h11.RemoteProtocolError as exc:
        events.append(("error", exc.error_status_hint, str(exc)))
    return events


def error_of(data: bytes) -> tuple[int, str]:
    events = frame(data)
    last = events[-1]
    assert last[0] == "error", f"no error for {data!r}: {events}"
    return last[1], last[2]


HEAD = b"POST /p HTTP/1.1\r\nHost: a\r\n"


class Smuggling(unittest.TestCase):
    def test_content_length_and_transfer_encoding_in_either_order(self) -> None:
        for fields in (
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ):
            status, message = error_of(HEAD + fields + b"\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(status, 400)
            self.assertIn("ambiguous", message)

    def test_content_length_twice_even_equal_or_as_a_list(self) -> None:
        for fields in (b"Content-Length: 2\r\nContent-Length: 2\r\n", b"Content-Length: 2, 2\r\n"):
            self.assertEqual(error_of(HEAD + fields + b"\r\nhi")[0], 400)
        self.assertEqual(error_of(HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nhi")[0], 400)

    def test_bad_content_length_values(self) -> None:
        for value in (b"+5", b"-1", b"0x5", b"5 5", b"99999999999999999999999"):
            self.assertEqual(error_of(HEAD + b"Content-Length: " + value + b"\r\n\r\n")[0], 400, value)

    def test_content_length_over_the_body_limit_is_413_from_the_head(self) -> None:
        self.assertEqual(error_of(HEAD + b"Content-Length: 10001\r\n\r\n")[0], 413)

    def test_transfer_encoding_other_than_chunked(self) -> None:
        for value in (b"gzip, chunked", b"chunked, chunked", b"identity", b"gzip"):
            status, _ = error_of(HEAD + b"Transfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n")
            self.assertIn(status, (400, 501), value)
        status, _ = error_of(HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertIn(status, (400, 501))

    def test_transfer_encoding_in_http_1_0(self) -> None:
        data = b"POST /p HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        self.assertEqual(error_of(data), (400, "Transfer-Encoding in an HTTP/1.0 request"))

    def test_obsolete_line_folding(self) -> None:
        for fold in (b"X: a\r\n b\r\n", b"X: a\r\n\tb\r\n"):
            status, message = error_of(HEAD + fold + b"\r\n")
            self.assertEqual(status, 400)
            self.assertIn("folding", message)

    def test_whitespace_before_colon_and_control_characters_in_values(self) -> None:
        for line in (b"X : a", b"X\t: a", b"X: a\x00b", b"X: a\rb", b"X: a\x7fb", b"X: a\x1bb", b"X\x7f: a"):
            self.assertEqual(error_of(HEAD + line + b"\r\n\r\n")[0], 400, line)

    def test_bare_lf_in_the_head(self) -> None:
        for data in (
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        ):
            status, message = error_of(data)
            self.assertEqual(status, 400, data)
            self.assertIn("CRLF", message)

    def test_http_2_and_other_versions(self) -> None:
        self.assertEqual(error_of(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n")[0], 505)

    def test_request_line_and_host_rules_from_h11(self) -> None:
        for data in (
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",  # two spaces
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00",  # a TLS hello on the plain port
        ):
            self.assertEqual(error_of(data)[0], 400, data)

    def test_head_over_the_limit_is_431_without_waiting_for_its_end(self) -> None:
        self.assertEqual(error_of(HEAD + b"X: " + b"a" * MAX_HEAD)[0], 431)


class Chunked(unittest.TestCase):
    CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"

    def test_chunk_size_with_too_many_digits_fails_at_once(self) -> None:
        status, message = error_of(self.CHUNKED + b"f" * 18 + b"\r\n")
        self.assertEqual(status, 400)
        self.assertIn("chunk-size", message)

    def test_chunk_size_over_the_body_limit_is_413_before_the_data(self) -> None:
        self.assertEqual(error_of(self.CHUNKED + b"ffffffff\r\n")[0], 413)
        self.assertEqual(error_of(self.CHUNKED + b"1388\r\n" + b"a" * 5000 + b"\r\n1389\r\n")[0], 413)

    def test_chunk_lines_ended_by_bare_lf(self) -> None:
        self.assertEqual(error_of(self.CHUNKED + b"5\nhello\n0\n\n")[0], 400)
        self.assertEqual(error_of(self.CHUNKED + b"5\r\nhello\n0\r\n\r\n")[0], 400)
        self.assertEqual(error_of(self.CHUNKED + b"0\r\n\n")[0], 400)

    def test_chunk_size_line_without_end_is_bounded(self) -> None:
        status, message = error_of(self.CHUNKED + b"5;" + b"x" * MAX_CHUNK_LINE_BYTES)
        self.assertEqual(status, 400)
        self.assertIn(str(MAX_CHUNK_LINE_BYTES), message)

    def test_malformed_chunk_lines(self) -> None:
        for line in (b"", b"g", b"-1", b" 5", b"5;\x00", b"0x5"):
            self.assertEqual(error_of(self.CHUNKED + line + b"\r\nhello\r\n0\r\n\r\n")[0], 400, line)

    def test_chunk_data_not_followed_by_crlf(self) -> None:
        self.assertEqual(error_of(self.CHUNKED + b"5\r\nhelloXX0\r\n\r\n")[0], 400)

    def test_trailer_with_folding_or_over_the_limit(self) -> None:
        self.assertEqual(error_of(self.CHUNKED + b"0\r\nX: a\r\n b\r\n\r\n")[0], 400)
        self.assertEqual(error_of(self.CHUNKED + b"0\r\nX: " + b"a" * (MAX_HEAD + 10))[0], 431)

    def test_extensions_and_trailers_are_accepted(self) -> None:
        events = frame(self.CHUNKED + b"5;name=value\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
        self.assertEqual(events[1:], [("data", b"hello"), ("end", [(b"x-t", b"1")])])


VALID = [
    HEAD + b"Content-Length: 5\r\n\r\nhello",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n",
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTrailer-A: 1\r\nTrailer-B: 2\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a HTTP/1.0\r\n\r\n",
    b"\r\nGET /lead HTTP/1.1\r\nHost: a\r\n\r\n",
    HEAD + b"X: \x80\xff obs-text\r\nContent-Length: 0\r\n\r\n",
]
# Pipelined: every valid request, one after another, in one stream.
PIPELINE = b"".join(v for v in VALID if b"HTTP/1.0" not in v and not v.startswith(b"\r\n"))


def h11_alone(data: bytes) -> list[Any]:
    """What h11 makes of the same bytes on its own (the reference)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data.removeprefix(b"\r\n"))  # h11 refuses a leading empty line
    events: list[Any] = []
    while record(conn, conn.next_event(), events):
        pass
    return events


class SameAsH11(unittest.TestCase):
    """On valid input the framer changes nothing: same events as h11 alone, however the bytes are split."""

    def test_every_split_of_every_valid_request(self) -> None:
        for data in VALID + [PIPELINE]:
            expected = h11_alone(data)
            self.assertTrue(expected, data)
            for split in range(len(data) + 1):
                with self.subTest(data=data[:40], split=split):
                    self.assertEqual(frame(data, split), expected)

    def test_byte_by_byte(self) -> None:
        for data in VALID + [PIPELINE]:
            with self.subTest(data=data[:40]):
                self.assertEqual(frame(data, parts=[data[i : i + 1] for i in range(len(data))]), h11_alone(data))

    def test_bytes_of_the_next_request_wait_in_the_framer(self) -> None:
        framer = RequestFramer(MAX_HEAD, MAX_BODY)
        framer.feed(VALID[0] + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        head = framer.next_piece()
        assert head is not None
        framer.start_body(5, False)
        self.assertEqual(framer.next_piece(), b"hello")
        self.assertIsNone(framer.next_piece())
        self.assertEqual(framer.buffered, len(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"))


def first_reading(head: bytes, known: KnownHeads | None = None) -> tuple[Any, ...]:
    """What the server makes of a request head: refused (status), or (method, target, headers, length).

    With `known`, a head the framer finds in the table is taken as h11 read
    it before, as the server does; every other head goes to h11.
    """
    framer = RequestFramer(MAX_HEAD, MAX_BODY, known)
    framer.feed(head)
    try:
        piece = framer.next_piece()
        assert piece is not None, head
        if framer.known is not None:
            request, length = framer.known
            return ("known", request.method, request.target, list(request.headers), length)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(piece)
        event = conn.next_event()
        assert isinstance(event, h11.Request), event
        length = check_head(event, MAX_BODY)[0]
        return ("read", event.method, event.target, list(event.headers), length)
    except FramingError as exc:
        return ("error", exc.status)
    except h11.RemoteProtocolError as exc:
        return ("error", exc.error_status_hint)


class KnownHeadsInTheFramer(unittest.TestCase):
    """A head read before skips the framer's checks only when it differs in its Content-Length digits alone."""

    LEARNED = HEAD + b"Content-Type: application/json\r\nContent-Length: 25\r\n\r\n"

    def table(self) -> KnownHeads:
        known = KnownHeads()
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(self.LEARNED)
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        known.put(self.LEARNED, event, check_head(event, MAX_BODY)[0])
        return known

    def test_other_digits_are_known_and_read_as_h11_reads_them(self) -> None:
        for digits in (b"0", b"7", b"025", b"%d" % MAX_BODY):
            head = self.LEARNED.replace(b": 25\r\n", b": " + digits + b"\r\n")
            reading = first_reading(head, self.table())
            self.assertEqual(reading[0], "known", digits)
            self.assertEqual(reading[1:], first_reading(head)[1:])
        self.assertEqual(
            first_reading(self.LEARNED.replace(b"25", b"%d" % (MAX_BODY + 1)), self.table()), ("error", 413)
        )

    def test_every_one_byte_change_is_read_as_without_the_table(self) -> None:
        # Each byte of the learned head replaced by, or preceded by, one that
        # the checks look for: a flaw anywhere but in the digits must be refused
        # exactly as it is without the table, and nothing but digits may be "known".
        known = self.table()
        head = self.LEARNED
        digits = head.index(b"25")
        for at in range(len(head) - 2):  # the final CRLF changed would only leave a head unended
            for byte in (b"\n", b"\r", b"\x00", b"\x7f", b",", b" ", b"\t", b"5", b"x"):
                for variant in (head[:at] + byte + head[at + 1 :], head[:at] + byte + head[at:]):
                    if variant == head or variant.find(b"\r\n\r\n") != len(variant) - 4:
                        continue  # no change, or the head ends elsewhere: another request
                    with self.subTest(variant=variant):
                        reading = first_reading(variant, known)
                        alone = first_reading(variant)
                        if reading[0] == "known":
                            self.assertTrue(digits <= at <= digits + 2 and byte.isdigit(), variant)
                            self.assertEqual(reading[1:], alone[1:])
                        else:
                            self.assertEqual(reading, alone)


class Plain(unittest.TestCase):
    """Which heads the server may answer without h11 past the head (`check_head`'s third part)."""

    def plain(self, head: bytes) -> bool:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        return check_head(event, 1 << 20)[2]

    def test_plain_heads(self) -> None:
        for head in (
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n",
        ):
            with self.subTest(head=head):
                self.assertTrue(self.plain(head))

    def test_heads_left_to_h11(self) -> None:
        for head in (
            b"GET / HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        ):
            with self.subTest(head=head):
                self.assertFalse(self.plain(head))


if __name__ == "__main__":
    unittest.main()
