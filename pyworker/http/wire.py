"""Message heads written without h11, for the common exchanges.

h11 checks every header of every event it sends and walks its state
machine for each; for a request to the model server, or for the answer to
a plain HTTP/1.1 request, the bytes are always the same shape. These
functions write them, and check each part as h11 would (names are tokens,
values hold no CR, LF, NUL or other control character and no white space
at either end), so that nothing can be injected. `tests/test_http_client.py`
and `tests/test_http_server.py` compare their bytes with h11's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

from .kept import KeptTable

# What h11 refuses to send (RFC 9110 sections 5.1, 5.5 and 9.1; RFC 9112 section 3.2).
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")

# Header names that decide framing or the connection's fate: a response
# carrying one of them is written by h11, which knows what each means.
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})

REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}


def _field_lines(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    lines = []
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(f"invalid header {name!r}: {value!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    return lines


def request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """An HTTP/1.1 request head; `ValueError` for a part h11 would refuse to send."""
    method_b = method.encode("ascii")
    if not _TOKEN.fullmatch(method_b):
        raise ValueError(f"invalid request method {method!r}")
    target_b = target.encode("ascii")
    if not _TARGET.fullmatch(target_b):
        raise ValueError(f"invalid request target {target!r}")
    lines = _field_lines((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method_b, target_b, b"".join(lines))


def response_head(status: int, headers: list[tuple[bytes, bytes]], framing: bytes) -> bytes | None:
    """An HTTP/1.1 response head with `framing` (a Content-Length or Transfer-Encoding
    line) added, for a keep-alive HTTP/1.1 request that is not HEAD; None when
    h11 must write it (a status without a body, or a header in FRAMING_HEADERS).
    `ValueError` for a header h11 would refuse to send."""
    if status < 200 or status in (204, 304):
        return None
    lines = _response_fields(tuple(headers))
    if lines is None:
        return None
    return b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, REASONS.get(status, b""), lines, framing)


# A model server's answers carry the same headers again and again (a Date
# changes once a second): each set is checked once, not once per answer,
# and kept if short.
MAX_KEPT_SETS = 64
MAX_KEPT_FIELD_BYTES = 2048
_kept_fields: KeptTable[tuple[tuple[bytes, bytes], ...], bytes] = KeptTable(MAX_KEPT_SETS)


def _response_fields(headers: tuple[tuple[bytes, bytes], ...]) -> bytes | None:
    """The field lines of `headers`, checked; None when one of them is in FRAMING_HEADERS."""
    lines = _kept_fields.find(headers)
    if lines is not None:
        return lines
    if any(name.lower() in FRAMING_HEADERS for name, _ in headers):
        return None  # h11 writes these answers: nothing is kept for them
    lines = b"".join(_field_lines(headers))
    if sum(len(name) + len(value) for name, value in headers) <= MAX_KEPT_FIELD_BYTES:
        _kept_fields.keep(headers, lines)
    return lines
