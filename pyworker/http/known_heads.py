"""h11's reading of a message head, kept for the next head that differs only in its Content-Length.

Parsing heads is the worker's largest single cost per proxied request:
h11 takes about 30 µs for a request head and 25 for a response head warm,
several times that on a cold cache. But the heads repeat: one client's
requests have the same method, target and headers, and a model server's
answers the same status and headers; only the Content-Length value
differs with the body. So a head h11 has read is kept under its bytes
with the Content-Length digits replaced by a mark, and a later head with
the same key reuses h11's reading, its own digits put in place of the old.

Why that equals reading it again: the key holds every byte of the head
but the digits of its Content-Length value, and it is made only when the
head has exactly one line starting with `Content-Length:`, whose value
is 1 to 15 digits between optional blanks (anything else keeps the exact
bytes as the key). Two heads with one key are then the same bytes but for
those digits; h11 reads such a value as that number and nothing else
about the head depends on it. A head that differs in anything else is a
new key, and h11 reads it. `tests/test_known_heads.py` (requests) and
`tests/test_chunks.py` (responses) compare both readings.

The table is small and starts afresh when full: a client that sends ever
new heads costs h11's parse per head, as it would without it. Keys are
the heads' own bytes, so what one client sends is only ever read back for
the very same bytes: no client can change how another's head is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, TypeVar

import h11

from .framing import check_length
from .headers import get_header
from .kept import KeptTable

T = TypeVar("T")

MAX_HEADS = 32
# Longer heads are not kept (the keys would hold their bytes).
MAX_HEAD_BYTES = 2048
# The value of the one Content-Length line, from just after its colon.
_LENGTH_VALUE = re.compile(rb"[ \t]*([0-9]{1,15})[ \t]*\r\n")
_LENGTH_NAME = b"\ncontent-length:"


class RequestHead(Protocol):
    """What the server reads of a request head: h11's `Request` event, or a `KnownHead`."""

    @property
    def method(self) -> bytes: ...

    @property
    def target(self) -> bytes: ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    @property
    def http_version(self) -> bytes: ...


class KnownHead:
    """A head read as h11 read an earlier one, with this head's Content-Length."""

    __slots__ = ("method", "target", "headers", "http_version")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], http_version: bytes) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.http_version = http_version


def head_key(head: bytes) -> tuple[bytes, bytes | None]:
    """(the key of `head`, its Content-Length digits or None).

    The digits give way to `#`, which no digit string holds, so heads with
    other spacing around the value get other keys.
    """
    lowered = head.lower()
    start = lowered.find(_LENGTH_NAME)
    if start < 0 or lowered.find(_LENGTH_NAME, start + 1) >= 0:
        return head, None  # none, or several (the server's framer refuses those)
    match = _LENGTH_VALUE.match(head, start + len(_LENGTH_NAME))
    if match is None:
        return head, None  # not digits: h11 will say what it is
    return head[: match.start(1)] + b"#" + head[match.end(1) :], match.group(1)


class _HeadTable(KeptTable[bytes, T]):
    """Values by head key (see the module docstring), MAX_HEADS of them unless told."""

    __slots__ = ()

    def __init__(self, max_heads: int = MAX_HEADS) -> None:
        super().__init__(max_heads)


def _length_at(pairs: list[tuple[bytes, bytes]], digits: bytes | None, size: int) -> int | None:
    """Where the one Content-Length of `pairs` is (-1 when the key is the head itself); None: do not keep."""
    if digits is None:
        return -1
    names = [name for name, _ in pairs]
    if names.count(b"content-length") != 1 or int(digits) != size:
        return None  # h11 read something else than the one plain line: never guess
    return names.index(b"content-length")


def _with_length(pairs: list[tuple[bytes, bytes]], at: int, digits: bytes) -> list[tuple[bytes, bytes]]:
    headers = pairs.copy()
    headers[at] = (b"content-length", digits)
    return headers


class KnownHeads(_HeadTable[tuple[h11.Request, list[tuple[bytes, bytes]], int, int]]):
    """Plain request heads h11 has read, for the server (see the module docstring).

    Each entry: h11's event, its headers listed (names in lower case), where
    Content-Length is in them (-1: the key is the head itself) and its value.
    """

    __slots__ = ()

    def get(self, head: bytes, max_body_bytes: int) -> tuple[RequestHead, int] | None:
        """(the head as h11 reads it, its Content-Length or 0) for a known head, else None.

        `FramingError` when the length is over `max_body_bytes`, as `check_head` says.
        """
        if len(head) > MAX_HEAD_BYTES:
            return None
        key, digits = head_key(head)
        known = self.find(key)
        if known is None:
            return None
        event, pairs, at, size = known
        if at < 0:
            return event, size  # the very same bytes
        assert digits is not None  # the key has the mark
        size = int(digits)
        check_length(size, max_body_bytes)
        return KnownHead(event.method, event.target, _with_length(pairs, at, digits), event.http_version), size

    def put(self, head: bytes, event: h11.Request, size: int) -> None:
        """Keep h11's reading `event` of `head`, which `check_head` found plain with a body of `size`."""
        if len(head) > MAX_HEAD_BYTES:
            return
        key, digits = head_key(head)
        pairs = [(name.lower(), value) for name, value in event.headers.raw_items()]
        at = _length_at(pairs, digits, size)
        if at is not None:
            self.keep(key, (event, pairs, at, size))


class KnownResponses(_HeadTable[tuple[h11.Response, list[tuple[bytes, bytes]], int, bool]]):
    """Final response heads h11 has read, for the client, by request method and key.

    Each entry: h11's event, its header fields (names in lower case), where
    Content-Length is in them (-1: the key is the head itself), and whether
    h11 then expected a body.
    """

    __slots__ = ()

    def get(self, method: bytes, head: bytes) -> tuple[h11.Response, list[tuple[bytes, bytes]], bool] | None:
        """(h11's event, the head's fields, a body follows) for a known head, else None."""
        if len(head) > MAX_HEAD_BYTES:
            return None
        key, digits = head_key(head)
        known = self.find(method + b" " + key)
        if known is None:
            return None
        event, fields, at, body = known
        if at < 0:
            return event, fields.copy(), body  # a copy: the response's headers are the handler's to change
        assert digits is not None
        return event, _with_length(fields, at, digits), body

    def put(
        self, method: bytes, head: bytes, event: h11.Response, fields: list[tuple[bytes, bytes]], body: bool
    ) -> None:
        """Keep h11's reading of `head` (answering `method`): `event`, its `fields`, whether a `body` follows."""
        if len(head) > MAX_HEAD_BYTES:
            return
        key, digits = head_key(head)
        size = -1
        if digits is not None:
            value = get_header(fields, b"content-length") or b""
            size = int(value) if value.isdigit() else -1
        at = _length_at(fields, digits, size)
        if at is not None:
            # A copy: `fields` become the response's headers, the handler's to change.
            self.keep(method + b" " + key, (event, fields.copy(), at, body))
