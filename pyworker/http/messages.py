"""What a route handler receives and returns: `Request`, `Response`, `StreamResponse`.

These play the part of aiohttp's `web.Request`, `web.Response` and
`web.StreamResponse` in the original guide, without aiohttp.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .headers import get_header
from .json_checks import dumps_compact, loads_checked

Headers = list[tuple[bytes, bytes]]
HeaderItems = Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]


def encode_headers(items: HeaderItems | Mapping[str, str], content_type: str | None = None) -> Headers:
    """Header pairs as bytes (str is taken as latin-1), with `content_type` added."""
    # A list first: Mapping is an ABC, and its isinstance test costs more than a type test.
    pairs: Iterable[tuple[str | bytes, str | bytes]] = (
        items if isinstance(items, list) or not isinstance(items, Mapping) else items.items()
    )
    # The tests inline, not in a helper: a proxied answer's headers are bytes
    # already, and a call per name and per value cost more than the rest.
    out = [
        (
            (k if isinstance(k, bytes) else k.encode("latin-1")).lower(),
            v if isinstance(v, bytes) else v.encode("latin-1"),
        )
        for k, v in pairs
    ]
    if content_type is not None:
        out.append((b"content-type", content_type.encode("latin-1")))
    return out


JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


class _Responder(Protocol):
    """What a connection offers a `StreamResponse` (the server protocol implements it)."""

    @property
    def head_sent(self) -> bool: ...

    @property
    def first_body_at(self) -> float | None: ...

    @property
    def body_bytes_sent(self) -> int: ...

    async def start(self, status: int, headers: Headers) -> None: ...

    def respond(self, response: Response) -> None: ...

    async def writelines(self, pieces: Iterable[bytes]) -> None: ...

    def finish(self) -> None: ...


class HTTPError(Exception):
    """Raise from a handler to answer with `status` and a JSON error body.

    >>> raise HTTPError(422, {"payload": {"prompt": "missing parameter"}})
    """

    def __init__(self, status: int, detail: Any, headers: HeaderItems = ()) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.headers = encode_headers(headers)

    def to_response(self) -> Response:
        body = self.detail if isinstance(self.detail, dict) else {"error": self.detail}
        return json_response(body, status=self.status, headers=self.headers)


class Request:
    """One HTTP request whose body has been read in full (bounded by the server's limit)."""

    __slots__ = ("method", "path", "query", "_headers", "body", "http_version", "_responder")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        http_version: str,
        responder: _Responder | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        # Kept as given (h11's own sequence on the server) and listed only if
        # asked for: the proxy path never reads the client's headers.
        self._headers: Iterable[tuple[bytes, bytes]] | Headers = headers
        self.body = body
        self.http_version = http_version
        self._responder = responder

    @property
    def headers(self) -> Headers:
        """(name, value) pairs, names in lower case."""
        if not isinstance(self._headers, list):
            self._headers = list(self._headers)
        return self._headers

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        value = get_header(self.headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    def json(self) -> Any:
        """The body parsed as JSON; raises `ValueError` when it is not, or when it is
        JSON the worker refuses (see `json_checks.loads_checked`)."""
        return loads_checked(self.body)

    @property
    def first_body_at(self) -> float | None:
        """`time.monotonic()` when a streamed answer's first body piece went out, else None."""
        return None if self._responder is None else self._responder.first_body_at

    @property
    def body_bytes_sent(self) -> int:
        """Body bytes of the response handed to the connection so far."""
        return 0 if self._responder is None else self._responder.body_bytes_sent

    def respond(self, response: Response) -> None:
        """Send `response` now, before the handler returns it.

        For work after the answer that need not delay the client (records,
        metrics). The handler must still return the same `response`.
        """
        if self._responder is None:
            raise RuntimeError("this request has no connection to answer on")
        self._responder.respond(response)

    @property
    def response_started(self) -> bool:
        """True once a response head went out: the status can no longer change."""
        return self._responder is not None and self._responder.head_sent


class Response:
    """A complete response: status, headers and a body held in memory."""

    __slots__ = ("status", "headers", "body")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: HeaderItems = (),
        content_type: str | None = None,
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
            if content_type is None:
                content_type = TEXT_TYPE
        self.status = status
        self.body = body
        self.headers: Headers = encode_headers(headers, content_type)


def json_response(data: Any, status: int = 200, headers: HeaderItems = ()) -> Response:
    """A `Response` whose body is `data` as compact JSON."""
    body = dumps_compact(data).encode("utf-8")
    return Response(body, status=status, headers=headers, content_type=JSON_TYPE)


class StreamResponse:
    """A response sent piece by piece while the handler runs, as aiohttp's.

    >>> res = StreamResponse(content_type="text/event-stream")
    >>> await res.prepare(request)
    >>> async for chunk in model_response.iter_chunks():
    ...     await res.write(chunk)
    >>> await res.write_eof()

    `write` waits while the client is slow to read, so memory stays bounded.
    With no `Content-Length` header the body goes out chunked (HTTP/1.1
    clients) or delimited by closing the connection (HTTP/1.0 clients).
    """

    __slots__ = ("status", "headers", "_responder", "finished")

    def __init__(
        self,
        status: int = 200,
        headers: HeaderItems | Mapping[str, str] = (),
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers: Headers = encode_headers(headers, content_type)
        self._responder: _Responder | None = None
        self.finished = False

    @property
    def prepared(self) -> bool:
        return self._responder is not None

    async def prepare(self, request: Request) -> None:
        """Send the status line and headers."""
        if self._responder is not None:
            raise RuntimeError("response already prepared")
        responder = request._responder
        if responder is None:
            raise RuntimeError("this request has no connection to answer on")
        self._responder = responder
        await responder.start(self.status, self.headers)

    async def write(self, data: bytes) -> None:
        """Send one piece of the body; returns once the client can take more."""
        if self._responder is None:
            raise RuntimeError("prepare() the response before writing")
        if data:
            await self._responder.writelines((data,))

    async def writelines(self, pieces: Iterable[bytes]) -> None:
        """Send several pieces of the body in one write to the socket (each its own chunk).

        What a server that flushes several events at once sends; returns
        once the client can take more.
        """
        if self._responder is None:
            raise RuntimeError("prepare() the response before writing")
        await self._responder.writelines(pieces)

    async def write_eof(self) -> None:
        """End the body."""
        if self._responder is None:
            raise RuntimeError("prepare() the response before writing")
        if not self.finished:
            self.finished = True
            self._responder.finish()
