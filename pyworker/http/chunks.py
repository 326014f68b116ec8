"""Response bodies read without an h11 event per piece.

`LengthReader` takes a Content-Length body: it only counts, so there is
nothing for h11 to add once h11 has parsed the head that declared it.

For chunked bodies: a model server that flushes many tokens at once sends many small chunks in
one read; h11 turns each into an event, and the first event waits until the
whole read is parsed. `ChunkScanner` takes the plain chunks (`HEX CRLF data
CRLF`) itself and hands h11 everything else, always from a chunk boundary,
where h11's chunked reader is in the state it would be had it read the
plain chunks too: the last chunk, trailers, chunk extensions, whitespace,
anything malformed. h11 stays the authority for all of those and ends the
message. `tests/test_chunks.py` feeds the same streams through h11 alone and
through the scanner in front of h11, split at every byte.
"""

from __future__ import annotations

import re

# A plain chunk-size line: 1 to 16 hex digits, nothing else, CRLF.
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
# What may still become a plain size line once more bytes come.
_SIZE_LINE_START = re.compile(rb"[0-9A-Fa-f]{0,16}\r?")


class ChunkError(Exception):
    """The chunk framing is broken where only the scanner reads it (inside a chunk)."""


class ChunkScanner:
    """Decodes plain chunks of a chunked body; see the module docstring.

    `feed` the bytes that follow the response head, then call `take()`: it
    returns the data of every chunk (or part of one) that has arrived, and
    once the scanner met something only h11 should read, `handoff` holds the
    bytes to give h11 from there on (the scanner is then done).
    """

    __slots__ = ("_buf", "_left", "_crlf", "handoff")

    done = False  # the scanner never ends a body: h11 reads the last chunk
    extra = False  # and whatever follows it

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0  # data bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk's data is due
        self.handoff: bytes | None = None

    @property
    def at_boundary(self) -> bool:
        """True between chunks (nothing of a chunk is pending)."""
        return not self._left and not self._crlf

    def feed(self, data: bytes) -> None:
        """Bytes that follow; once `handoff` is set they are h11's, not the scanner's."""
        self._buf += data

    def take(self, limit: int = 0) -> bytes:
        """The data decoded from what was fed so far (maybe empty); with a `limit`,
        decoding stops at the first chunk boundary past that many bytes."""
        buf = self._buf
        size = len(buf)
        pos = 0
        taken = 0
        view = memoryview(buf)
        parts: list[memoryview] = []
        try:
            while True:
                if self._left:
                    n = min(self._left, size - pos)
                    if n == 0:
                        break
                    parts.append(view[pos : pos + n])
                    pos += n
                    taken += n
                    self._left -= n
                    if self._left:
                        break
                    self._crlf = True
                if self._crlf:
                    if size - pos < 2:
                        if size - pos == 1 and buf[pos] != 0x0D:
                            raise ChunkError("chunk data not followed by CRLF")
                        break
                    if buf[pos] != 0x0D or buf[pos + 1] != 0x0A:
                        raise ChunkError("chunk data not followed by CRLF")
                    pos += 2
                    self._crlf = False
                    if limit and taken >= limit:
                        break
                line = _SIZE_LINE.match(buf, pos)
                chunk = 0 if line is None else int(line.group(1), 16)
                if chunk == 0:  # no plain line, or the last chunk (trailers may follow)
                    if line is None and _SIZE_LINE_START.fullmatch(buf, pos):
                        break  # a plain size line may still be arriving
                    self.handoff = bytes(buf[pos:])  # for h11, from this boundary on
                    pos = size
                    break
                assert line is not None
                self._left = chunk
                pos = line.end()
            data = b"".join(parts)
        finally:
            parts.clear()
            view.release()
        del buf[:pos]
        return data


class LengthReader:
    """A Content-Length body: its bytes as they arrive, up to the declared length.

    `take()` returns what has arrived (the received piece itself when it
    fits, no copy); `done` once the whole length came. Bytes past the
    length are not part of this message: `extra` is then set, and the
    connection must not carry another exchange.
    """

    __slots__ = ("_parts", "left", "extra")

    handoff = None  # h11 is never needed past the head

    def __init__(self, length: int) -> None:
        self._parts: list[bytes] = []
        self.left = length
        self.extra = False

    @property
    def done(self) -> bool:
        return self.left <= 0

    def feed(self, data: bytes) -> None:
        if self.left <= 0:
            self.extra = True  # nothing is kept past the body
            return
        self._parts.append(data)

    def take(self, limit: int = 0) -> bytes:
        """What arrived of the body (`limit` is for the scanner's sake: all of it is cheap to take)."""
        parts = self._parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if len(data) > self.left:
            self.extra = True
            data = data[: self.left]
        self.left -= len(data)
        return data
