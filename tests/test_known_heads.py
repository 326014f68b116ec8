"""Known request heads: reading a head from the table equals h11 reading it afresh.

Each head below is read by h11 once, with one Content-Length, and then
given again with many others; every time, what the table gives must be
what h11 and `check_head` make of the new bytes (and a head the table must
not take must miss). The server-level tests are in test_http_server.py.
"""

from __future__ import annotations

import random
import unittest

import h11

from pyworker.http.framing import FramingError, check_head
from pyworker.http.known_heads import MAX_HEAD_BYTES, KnownHeads, head_key

MAX_BODY = 1 << 20

# Plain heads (HTTP/1.1, keep-alive, not HEAD), "{n}" where the length goes.
HEADS = [
    b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nhost: 127.0.0.1:3000\r\ncontent-type: application/json\r\ncontent-length:{n}\r\n\r\n",
    b"POST /v1/chat/completions?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: \t{n} \t\r\nUser-Agent: sdk/1.0\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nContent-Length: {n}\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   inner  spaces  \r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nX-Length: 12\r\nContent-Length: {n}\r\nX-Mention: content-length\r\n\r\n",
    b"DELETE /session HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\nX-Latin: caf\xe9\r\n\r\n",
]
# Plain heads without a body length at all.
NO_LENGTH = [
    b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /metrics?format=text HTTP/1.1\r\nHost: a\r\nAccept: text/plain\r\n\r\n",
]


def h11_reading(head: bytes) -> tuple[object, ...]:
    """What the server takes from `head` by asking h11 (and `check_head`)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request), event
    length, chunked, plain = check_head(event, MAX_BODY)
    return (event.method, event.target, list(event.headers), event.http_version, length, chunked, plain)


def table_reading(known: KnownHeads, head: bytes) -> tuple[object, ...] | None:
    found = known.get(head, MAX_BODY)
    if found is None:
        return None
    event, length = found
    return (event.method, event.target, list(event.headers), event.http_version, length, False, True)


def learn(known: KnownHeads, head: bytes) -> None:
    """Have h11 read `head`, then keep its reading, as the server does."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    length, _chunked, plain = check_head(event, MAX_BODY)
    assert plain
    known.put(head, event, length)


def lengths(rng: random.Random) -> list[bytes]:
    """Content-Length values: small, large, with leading zeros, up to the body limit."""
    out = [b"0", b"1", b"00", b"007", b"%d" % MAX_BODY, b"0" * 14 + b"1"]
    out += [b"%d" % rng.randrange(0, MAX_BODY) for _ in range(20)]
    return out


class SameAsH11(unittest.TestCase):
    def test_every_head_with_every_length(self) -> None:
        rng = random.Random(5)
        for template in HEADS:
            for first in (b"0", b"1234"):
                known = KnownHeads()
                learn(known, template.replace(b"{n}", first))
                for n in lengths(rng):
                    head = template.replace(b"{n}", n)
                    with self.subTest(head=head):
                        self.assertEqual(table_reading(known, head), h11_reading(head))

    def test_heads_without_a_length_are_known_by_their_bytes(self) -> None:
        for head in NO_LENGTH:
            known = KnownHeads()
            learn(known, head)
            self.assertEqual(table_reading(known, head), h11_reading(head))
            self.assertIsNone(known.get(head.replace(b"Host: a", b"Host: b"), MAX_BODY))

    def test_a_length_over_the_limit_is_refused_as_check_head_refuses_it(self) -> None:
        known = KnownHeads()
        learn(known, HEADS[0].replace(b"{n}", b"5"))
        head = HEADS[0].replace(b"{n}", b"%d" % (MAX_BODY + 1))
        with self.assertRaises(FramingError) as by_table:
            known.get(head, MAX_BODY)
        with self.assertRaises(FramingError) as by_h11:
            h11_reading(head)
        self.assertEqual((by_table.exception.status, by_table.exception.message), (413, by_h11.exception.message))

    def test_a_head_that_differs_in_anything_but_the_digits_misses(self) -> None:
        known = KnownHeads()
        template = HEADS[2]
        learn(known, template.replace(b"{n}", b"10"))
        head = template.replace(b"{n}", b"10")
        for i in range(len(head) - 4):  # every byte but the final empty line
            for byte in (b"X", b" ", b"\x00", b":"):
                changed = head[:i] + byte + head[i + 1 :]
                if changed == head or head[i : i + 1].isdigit() and byte.isdigit():
                    continue
                found = table_reading(known, changed)
                if found is not None:  # only a change that h11 reads the same way may hit
                    with self.subTest(i=i, byte=byte):
                        self.assertEqual(found, h11_reading(changed))
        # The spacing around the value is part of the key.
        self.assertIsNone(known.get(template.replace(b"{n}", b"10 "), MAX_BODY))
        self.assertIsNone(known.get(template.replace(b"\t{n}", b"{n}").replace(b"{n}", b"10"), MAX_BODY))

    def test_only_one_plain_content_length_line_is_ever_replaced(self) -> None:
        # Two lines (h11 folds equal ones into one header) or a list keep the exact bytes as the key,
        # so "7" and "5" can never be taken for the "5" and "5" h11 accepted.
        for head in (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        ):
            self.assertEqual(head_key(head), (head, None))
            known = KnownHeads()
            learn(known, head)
            self.assertIsNone(known.get(head.replace(b"5", b"7", 1), MAX_BODY))
        self.assertEqual(head_key(HEADS[0].replace(b"{n}", b"1" * 16))[1], None)  # over 15 digits: exact bytes

    def test_the_table_is_bounded(self) -> None:
        known = KnownHeads(max_heads=4)
        for i in range(10):
            learn(known, b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            self.assertLessEqual(len(known), 4)
        self.assertIsNotNone(known.get(b"GET /9 HTTP/1.1\r\nHost: a\r\n\r\n", MAX_BODY))
        big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * MAX_HEAD_BYTES + b"\r\n\r\n"
        learn(known, big)
        self.assertIsNone(known.get(big, MAX_BODY))


if __name__ == "__main__":
    unittest.main()
