"""Strict request framing in front of h11.

h11 parses request heads and is the authority for what they mean, but it
is lenient where a server on a public port must not be (RFC 9112 lets a
recipient choose, and a proxy in front of us may choose otherwise, which
is how requests are smuggled):

- a request with both Content-Length and Transfer-Encoding is served;
- duplicate identical Content-Length headers, or a list of them, pass;
- obsolete line folding is joined into one value;
- a chunk-size line without CRLF, or with a huge size, waits for more data.

`RequestFramer` owns a connection's receive buffer. It finds each request
head, checks its raw bytes, and after the caller has read the parsed head
(`check_head`) it cuts the body by the framing the head declares, checking
chunked framing strictly. It hands h11 only whole, checked syntactic units,
and never bytes of the next request before the current one is done, so
pipelined bytes wait here, where the server can bound them.

A head that differs from one read before only in its Content-Length digits
(`known_heads.py`) was checked when first read: digits add no line ending,
control character, comma or second Content-Length, so it is not checked
again, and h11's earlier reading of it comes with it (`known`).
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING

import h11

from .headers import connection_tokens

if TYPE_CHECKING:  # known_heads imports this module
    from .known_heads import KnownHeads, RequestHead


class FramingError(Exception):
    """The request cannot be framed; answer `status` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# A chunk-size line: up to 16 hex digits (a 64-bit size) and optional
# extensions, which are ignored but may not hold control characters.
MAX_CHUNK_LINE_BYTES = 1024
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\x20-\x7e\t\x80-\xff]*)?")


class State(enum.Enum):
    HEAD = "head"  # waiting for a request head
    PARSING = "parsing"  # a head was handed out; waiting for `start_body`
    LENGTH = "length"  # a Content-Length body
    CHUNK_LINE = "chunk line"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"  # the CRLF after a chunk's data
    TRAILERS = "trailers"
    DONE = "done"  # the request is complete; waiting for `next_request`


# Control characters other than HTAB, CR and LF (RFC 9110 section 5.5); h11
# lets DEL and some others through in field values.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _check_lines(section: bytes | bytearray, what: str) -> None:
    """Every line of a head or trailer section ends in CRLF, none is folded, no control characters."""
    lf = section.count(b"\n")
    if lf != section.count(b"\r\n") or section.count(b"\r") != lf:
        raise FramingError(400, f"bare CR or LF in the {what}: lines must end with CRLF")
    if b"\n " in section or b"\n\t" in section:
        raise FramingError(400, f"obsolete line folding in the {what}")
    if _CONTROL.search(section) is not None:
        raise FramingError(400, f"control character in the {what}")


def _check_content_length(head: bytes) -> None:
    """At most one Content-Length line, holding no list.

    Checked on the raw head: h11 folds equal duplicates and "5, 5" into one
    value before anyone can see them.
    """
    lowered = head.lower()
    start = lowered.find(b"\ncontent-length:")
    if start < 0:
        return
    if lowered.find(b"\ncontent-length:", start + 16) >= 0:
        raise FramingError(400, "more than one Content-Length")
    if b"," in head[start : head.find(b"\r\n", start + 1)]:
        raise FramingError(400, "a list in Content-Length")


def check_head(head: h11.Request, max_body_bytes: int) -> tuple[int, bool, bool]:
    """(Content-Length or 0, chunked, plain) of a parsed request head, or `FramingError`.

    Refused (RFC 9112 sections 6.1 and 6.3), where h11 would serve:
    Content-Length together with Transfer-Encoding, more than one
    Content-Length (even equal ones) or a list in one, Transfer-Encoding in
    an HTTP/1.0 request, and a major version other than 1.

    *plain* is an HTTP/1.1 request, not HEAD, with no body or a
    Content-Length one, that keeps the connection alive and asks for no
    100-continue or upgrade: its body and its answer need nothing of h11
    (see `server.py`).
    """
    if not head.http_version.startswith(b"1."):
        raise FramingError(505, f"HTTP/{head.http_version.decode('ascii')} is not supported")
    length: bytes | None = None
    lengths = 0
    chunked = False
    plain = head.http_version == b"1.1" and head.method != b"HEAD"
    for name, value in head.headers.raw_items():
        name_size = len(name)
        if name_size == 14 and name.lower() == b"content-length":
            lengths += 1
            length = value
        elif name_size == 17 and name.lower() == b"transfer-encoding":
            chunked = True  # h11 accepts only exactly one "chunked"
        elif name_size == 10 and name.lower() == b"connection":
            plain = plain and all(token == b"keep-alive" for token in connection_tokens(value))
        elif name_size in (6, 7) and name.lower() in (b"expect", b"upgrade"):
            plain = False
    if chunked:
        if lengths:
            raise FramingError(400, "both Content-Length and Transfer-Encoding: the body's length is ambiguous")
        if head.http_version == b"1.0":
            raise FramingError(400, "Transfer-Encoding in an HTTP/1.0 request")
        return 0, True, False
    if length is None:
        return 0, False, plain
    if lengths > 1 or not length.isdigit():  # the framer has refused these already
        raise FramingError(400, "more than one Content-Length")
    size = int(length)
    check_length(size, max_body_bytes)
    return size, False, plain


def check_length(size: int, max_body_bytes: int) -> None:
    """`FramingError` (413) when a Content-Length is over `max_body_bytes`."""
    if size > max_body_bytes:
        raise FramingError(413, f"request body over {max_body_bytes} bytes")


class RequestFramer:
    """Cuts one connection's bytes into the pieces h11 may see, checking them.

    >>> framer = RequestFramer(max_head_bytes=16384, max_body_bytes=1 << 20)
    >>> framer.feed(b"POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    >>> head = framer.next_piece()  # the head's bytes, for h11
    >>> framer.start_body(2, chunked=False)
    >>> framer.next_piece()
    b'hi'
    """

    __slots__ = (
        "_buf",
        "_scan_from",
        "state",
        "_remaining",
        "_body_bytes",
        "max_head_bytes",
        "max_body_bytes",
        "_known_heads",
        "known",
    )

    def __init__(self, max_head_bytes: int, max_body_bytes: int, known_heads: KnownHeads | None = None) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self.state = State.HEAD
        self._remaining = 0
        self._body_bytes = 0
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self._known_heads = known_heads
        # The last head handed out, as h11 read it before (with its Content-Length), or None.
        self.known: tuple[RequestHead, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def discard(self) -> None:
        """Drop what is buffered (the connection is closing)."""
        self._buf = bytearray()

    def start_body(self, length: int, chunked: bool) -> None:
        """The head handed out declares this body (see `check_head`)."""
        assert self.state is State.PARSING
        self._body_bytes = 0
        if chunked:
            self.state = State.CHUNK_LINE
        elif length:
            self._remaining = length
            self.state = State.LENGTH
        else:
            self.state = State.DONE

    def next_request(self) -> None:
        """The current request is answered: start looking for the next head."""
        assert self.state is State.DONE
        self.state = State.HEAD
        self._scan_from = 0

    def next_piece(self) -> bytes | None:
        """The next checked bytes for h11, or None until more arrive (or the request is done)."""
        state = self.state
        if state is State.HEAD:
            return self._head()
        if state is State.LENGTH:
            buf = self._buf
            if not buf:
                return None
            take = min(self._remaining, len(buf))
            piece = bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            if not self._remaining:
                self.state = State.DONE
            return piece
        if state is State.PARSING or state is State.DONE:
            return None
        return self._chunked()

    def _head(self) -> bytes | None:
        buf = self._buf
        # RFC 9112 section 2.2: empty lines before a request line are ignored
        # (some clients send CRLF after a POST body).
        while buf[:2] == b"\r\n":
            del buf[:2]
        if not buf or buf == b"\r":
            return None
        first = buf[0]
        if first < 0x21 or first > 0x7E:
            raise FramingError(400, "not an HTTP/1.1 request")
        end = buf.find(b"\r\n\r\n", self._scan_from)
        if end < 0:
            if len(buf) > self.max_head_bytes:
                raise FramingError(431, f"request head over {self.max_head_bytes} bytes")
            if b"\n\n" in buf or b"\n\r\n" in buf:
                _check_lines(buf, "request head")  # a head that ended in bare LFs
            self._scan_from = max(0, len(buf) - 3)
            return None
        size = end + 4
        if size > self.max_head_bytes:
            raise FramingError(431, f"request head over {self.max_head_bytes} bytes")
        head = bytes(buf[:size])
        del buf[:size]
        self.state = State.PARSING
        if self._known_heads is not None:
            self.known = self._known_heads.get(head, self.max_body_bytes)
            if self.known is not None:
                return head  # checked when first read (see the module docstring)
        _check_lines(head, "request head")
        _check_content_length(head)
        return head

    def _chunked(self) -> bytes | None:
        """Check as much chunked framing as has arrived; hand it out whole."""
        buf = self._buf
        pos = 0
        end = len(buf)
        state = self.state
        while pos < end:
            if state is State.CHUNK_LINE:
                nl = buf.find(b"\n", pos, pos + MAX_CHUNK_LINE_BYTES + 1)
                if nl < 0:
                    if end - pos > MAX_CHUNK_LINE_BYTES:
                        raise FramingError(400, f"chunk-size line over {MAX_CHUNK_LINE_BYTES} bytes")
                    break
                if nl == pos or buf[nl - 1] != 0x0D:
                    raise FramingError(400, "chunk-size line not ended by CRLF")
                match = _CHUNK_LINE.fullmatch(buf, pos, nl - 1)
                if match is None:
                    raise FramingError(400, "malformed chunk-size line")
                size = int(match.group(1), 16)
                self._body_bytes += size
                if self._body_bytes > self.max_body_bytes:
                    raise FramingError(413, f"request body over {self.max_body_bytes} bytes")
                pos = nl + 1
                self._remaining = size
                state = State.CHUNK_DATA if size else State.TRAILERS
            elif state is State.CHUNK_DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                state = State.CHUNK_END
            elif state is State.CHUNK_END:
                tail = buf[pos : pos + 2]
                if tail != b"\r\n"[: len(tail)]:
                    raise FramingError(400, "chunk data not followed by CRLF")
                if len(tail) < 2:
                    break
                pos += 2
                state = State.CHUNK_LINE
            else:  # TRAILERS: none, or a field section ended by an empty line
                if buf[pos : pos + 2] == b"\r\n":
                    pos += 2
                    state = State.DONE
                    break
                stop = buf.find(b"\r\n\r\n", pos)
                if stop < 0:
                    if end - pos > self.max_head_bytes:
                        raise FramingError(431, f"trailer section over {self.max_head_bytes} bytes")
                    if buf[pos : pos + 1] == b"\n" or b"\n\n" in buf[pos:]:
                        raise FramingError(400, "bare LF in the trailer section: lines must end with CRLF")
                    break
                _check_lines(buf[pos : stop + 4], "trailer section")
                pos = stop + 4
                state = State.DONE
                break
        self.state = state
        if not pos:
            return None
        piece = bytes(buf[:pos])
        del buf[:pos]
        return piece
