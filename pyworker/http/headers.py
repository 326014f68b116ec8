"""Header helpers shared by the server and the client."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 9110 section 7.6.1: these describe one hop, never the end-to-end message.
# h11 frames each hop itself, so a proxy must drop them both ways.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def connection_tokens(value: bytes) -> list[bytes]:
    """The options of a `Connection` header value, in lower case (RFC 9110 section 7.6.1)."""
    return [token.strip().lower() for token in value.split(b",")]


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` without hop-by-hop ones, including those the Connection header names."""
    items = list(headers)
    named: frozenset[bytes] | set[bytes] = HOP_BY_HOP
    for key, value in items:
        if key == b"connection":
            named = set(named)
            named.update(connection_tokens(value))
    return [(k, v) for k, v in items if k not in named]


def passthrough_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An upstream response's headers as sent on to the client: no hop-by-hop ones,
    no Content-Length (the server frames the body it sends)."""
    return [(k, v) for k, v in strip_hop_by_hop(headers) if k != b"content-length"]


def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of the lower-case header `name`, or None."""
    for key, value in headers:
        if key == name:
            return value
    return None
