"""HTTP/1.1 client to the model server, on h11, with a keep-alive pool.

Requests are written by `wire.request_head`: their parts come from the
worker's own code and are checked as h11 would check them. h11 parses the
response heads and whatever is unusual in a body (chunk extensions,
trailers, a body delimited by the close), with a fresh `h11.Connection`
per exchange, which costs less than driving one through every event of
both messages; plain chunks and Content-Length bodies are read by
`chunks.py`. A response head that differs from one h11 has read only in its
Content-Length digits is taken as h11 read that one (`known_heads.py`), and
h11 reads it too only if something in the body needs h11 after all.

A connection goes back to the pool only when the response was read to its
end with nothing after it and both sides keep the connection alive; after
an error, a timeout or a cancellation it is closed. Idle pooled connections
keep reading, so a model server that closes one is noticed before the
connection is reused.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import h11

from .chunks import ChunkError, ChunkScanner, LengthReader
from .flow import FlowControl
from .headers import connection_tokens, get_header
from .kept import KeptTable
from .known_heads import KnownResponses
from .timers import Deadline
from .wire import request_head

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


# The end of a response head (h11 also takes bare LF line ends).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# A response head that has not ended within this many bytes is refused.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

# The first piece of a chunked body is decoded no further than the first
# chunk boundary past this many bytes, so that it goes out before a burst
# that came with it is decoded. 1: the first chunk alone. (At 4 KiB, as it
# was, a burst's first read was decoded some 70 chunks deep before the
# first write.)
FIRST_PIECE_BYTES = 1

# Request bodies over this size are sent in slices of it.
SEND_SLICE_BYTES = 256 * 1024

# Request heads kept written per pool (one per route and content type, in
# practice), if no longer than MAX_KEPT_HEAD_BYTES.
MAX_KEPT_HEADS = 32
MAX_KEPT_HEAD_BYTES = 2048

_EOM = h11.EndOfMessage()
# One request event per method, sent to each exchange's fresh h11.Connection
# so that it reads the response as the answer to that method.
_REQUEST_EVENTS: dict[bytes, h11.Request] = {}


def _response_parser(method: bytes) -> h11.Connection:
    """An h11 client connection that has sent a `method` request head and awaits its response.

    The request's end is not sent to it: h11 reads a response whether or
    not the request is complete, and its own state after the exchange is
    not used (`end_exchange` decides whether the connection lives on).
    """
    event = _REQUEST_EVENTS.get(method)
    if event is None:
        event = _REQUEST_EVENTS[method] = h11.Request(method=method, target=b"/", headers=[(b"host", b"upstream")])
    conn = h11.Connection(h11.CLIENT)
    conn.send(event)
    return conn


def _says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when a `Connection` header holds the token `close` (names are lower case from h11)."""
    for name, value in headers:
        if name == b"connection" and b"close" in connection_tokens(value):
            return True
    return False


# A request body: bytes, or text fragments sent UTF-8 encoded (as
# `backend.json_fragments` makes them: no joined copy of a large body).
Body = bytes | Sequence[str]


def body_size(body: Body) -> int:
    """The body's length in bytes on the wire."""
    if isinstance(body, bytes):
        return len(body)
    return sum(len(f) if f.isascii() else len(f.encode("utf-8")) for f in body)


def _slices(body: Body) -> Iterator[bytes | memoryview]:
    if isinstance(body, bytes):
        view = memoryview(body)
        for start in range(0, len(body), SEND_SLICE_BYTES):
            yield view[start : start + SEND_SLICE_BYTES]
        return
    for fragment in body:
        for start in range(0, len(fragment), SEND_SLICE_BYTES):
            yield fragment[start : start + SEND_SLICE_BYTES].encode("utf-8")


class UpstreamError(Exception):
    """The model server could not be used; `status` is what the client gets."""

    status = 502


class UpstreamUnavailable(UpstreamError):
    """Connecting to the model server failed (refused, unreachable)."""


class UpstreamProtocolError(UpstreamError):
    """The model server broke HTTP or closed the connection mid-response."""


class UpstreamUnhealthy(UpstreamError):
    """The model server was declared down by its health check: nothing is sent or awaited."""

    status = 503


class UpstreamTimeout(UpstreamError):
    """The model server did not connect or answer in time."""

    status = 504


class UpstreamBodyTooLarge(UpstreamError):
    """A response read whole was over the limit given to `read()`."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    connect_timeout_s: float = 5.0
    # Longest silence from the model server while a response is awaited or
    # streamed. A non-streaming LLM generation sends nothing until it is done.
    read_timeout_s: float = 300.0
    max_idle_connections: int = 128
    # Bytes received but not yet consumed before reading from the socket pauses.
    read_buffer_bytes: int = 256 * 1024
    # Largest body `UpstreamResponse.read()` accepts.
    max_response_bytes: int = 64 * 1024 * 1024


class _ClientConnection(asyncio.Protocol):
    """One connection to the model server and its `h11.Connection`."""

    def __init__(self, limits: ClientLimits, known: KnownResponses | None = None) -> None:
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        # The current exchange's response parser (see `_response_parser`),
        # made when first needed: a known response head may need none.
        self._framing: h11.Connection | None = None
        # Response heads h11 has read (shared by the pool's connections).
        self._known = known if known is not None else KnownResponses()
        # A known head h11 was not given; it reads it first if it is needed after all.
        self._unread_head = b""
        self._head = b""  # the current response head's bytes
        # h11's earlier reading of that head (event, fields, a body follows), until routed.
        self._known_reading: tuple[h11.Response, list[tuple[bytes, bytes]], bool] | None = None
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof_fed = False
        self.lost = False
        self._unread = 0
        # Bytes seen since the current request was sent (0: nothing came back).
        self.received = 0
        # When the model server last sent something, or was sent a request.
        self.last_activity = 0.0
        # Set by `fail()`: raised to whoever reads next.
        self.failure: UpstreamError | None = None
        # The pool's set of connections carrying an exchange.
        self.busy_set: set[_ClientConnection] | None = None
        self._deadline = Deadline(self._loop, self._on_timeout)
        self._timeout_s = limits.read_timeout_s
        # While a response head is awaited, what arrived is held here, and h11
        # is given exactly one head at a time: the body's bytes stay ours, so
        # a plain chunked or Content-Length body goes through `_body` (chunks.py).
        self._awaiting_head = False
        self._held = bytearray()
        self._body: ChunkScanner | LengthReader | None = None
        self._method = b""
        self._h11_closed = False
        self._take_limit = 0  # see FIRST_PIECE_BYTES; 0 once the first piece was taken
        # The current response's header fields, names in lower case.
        self.head_fields: list[tuple[bytes, bytes]] = []
        # The response was read to its end; it lets the connection live on.
        self.complete = False
        self.keep_alive = False
        # Between exchanges: the last one ended so that this one may carry another.
        self._reusable = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(self.transport)

    def data_received(self, data: bytes) -> None:
        if self._body is not None:
            self._body.feed(data)
        elif self._awaiting_head:
            self._held += data
        else:
            self.framing.receive_data(data)
        self.received += len(data)
        self.last_activity = self._loop.time()
        self._unread += len(data)
        if self._unread > self._limits.read_buffer_bytes:
            assert self.flow is not None
            self.flow.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._feed_eof()
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._deadline.cancel()
        if self.flow is not None:
            self.flow.connection_lost()
        self._wake()

    def pause_writing(self) -> None:
        assert self.flow is not None
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        assert self.flow is not None
        self.flow.resume_writing()

    # helpers

    @property
    def framing(self) -> h11.Connection:
        """This exchange's h11 connection, having read the response head if it was known."""
        framing = self._framing
        if framing is None:
            framing = self._framing = _response_parser(self._method)
        if self._unread_head:
            head, self._unread_head = self._unread_head, b""
            framing.receive_data(head)
            event = framing.next_event()
            assert type(event) is h11.Response, event  # as when h11 read it before
        return framing

    def _feed_eof(self) -> None:
        # Held bytes and a body in progress meet the end in `poll_event`.
        if not self._eof_fed:
            self._eof_fed = True
            if self._body is None and not self._awaiting_head:
                self._close_h11()

    def _close_h11(self) -> None:
        """Tell h11 the input ended (once)."""
        if not self._h11_closed:
            self._h11_closed = True
            self.framing.receive_data(b"")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timeout(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamTimeout(f"model server sent nothing for {self._timeout_s:g} s"))

    def end_exchange(self) -> bool:
        """The exchange is over: True when the connection may carry another one."""
        # h11 not made, or not given the head: it holds nothing.
        trailing = b"" if self._framing is None or self._unread_head else self._framing.trailing_data[0]
        self._reusable = (
            self.complete
            and self.keep_alive
            and not trailing
            and not (self._body is not None and self._body.extra)
            and not self.lost
            and not self._eof_fed
        )
        self.received = 0
        return self._reusable

    def is_reusable(self) -> bool:
        """True when an idle pooled connection can carry another request."""
        return (
            self._reusable
            and not self.lost
            and not self._eof_fed
            and self.received == 0  # an idle connection must not have been sent anything
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def send(self, head: bytes, method: bytes, body: Body, size: int) -> bool:
        """Send a request (`head` from `request_head`, with its Content-Length) whole if
        its body of `size` bytes is small; False if it is large, for `send_large`."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed before the request was sent")
        self.received = 0
        self.last_activity = self._loop.time()
        self._h11_closed = False
        self._awaiting_head = True
        self._held.clear()
        self._body = None
        self._method = method
        self._framing = None
        self._unread_head = b""
        self._known_reading = None
        self._take_limit = FIRST_PIECE_BYTES
        self.complete = self.keep_alive = self._reusable = False
        transport = self.transport
        whole = size <= SEND_SLICE_BYTES
        if whole:
            data = body if isinstance(body, bytes) else "".join(body).encode("utf-8")
            transport.write(head + data if data else head)
        else:
            transport.write(head)
        return whole

    async def send_large(self, body: Body) -> None:
        """Send the body of a request whose head `send` wrote, in slices, each once the socket takes more.

        No copy of the whole body is made: asyncio buffers at most what the
        socket did not take.
        """
        transport = self.transport
        assert transport is not None and self.flow is not None
        for piece in _slices(body):
            transport.write(piece)
            await self.flow.drain()

    def poll_event(self) -> h11.Event | type[h11.PAUSED] | None:
        """The next event that can be made of what has arrived, or None if more is needed."""
        if self.failure is not None:
            raise self.failure
        # With nothing received since the last "need more", asking again
        # would only say so again: skip the work.
        while self._unread or self._eof_fed or self.lost:
            if self._awaiting_head and not self._head_to_h11():
                if not (self._eof_fed or self.lost):
                    self._need_data()
                    return None
                self._give_h11_the_rest()  # closed before a whole head: h11 says what that is
            body = self._body
            if body is not None and not self.complete:
                data = self._take_body(body)
                if data:
                    return h11.Data(data=data)
                if body.done:
                    self.complete = True
                    return _EOM
                if self._body is not None:
                    if self._eof_fed or self.lost:
                        raise UpstreamProtocolError("model server closed the connection mid-response")
                    self._need_data()
                    return None
            reading = self._known_reading
            if reading is not None:
                self._known_reading = None
                self._body_after(*reading)
                return reading[0]
            try:
                event = self.framing.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamProtocolError(f"model server broke HTTP/1.1: {exc}") from None
            if event is not h11.NEED_DATA:
                kind = type(event)
                if kind is h11.Response:
                    self._read_by_h11(cast(h11.Response, event))
                elif kind is h11.EndOfMessage:
                    self.complete = True
                elif kind is h11.InformationalResponse:
                    self._awaiting_head = True  # the final head is still to come
                return cast("h11.Event | type[h11.PAUSED]", event)
            self._need_data()
            if not self.lost:
                break
            if self._eof_fed:
                raise UpstreamProtocolError("model server closed the connection")
            self._feed_eof()
        return None

    def _need_data(self) -> None:
        """Everything received is consumed: read from the socket again."""
        self._unread = 0
        assert self.flow is not None
        self.flow.resume_reading()

    def _head_to_h11(self) -> bool:
        """Give h11 the next whole head held, and nothing after it; False if none has ended yet."""
        held = self._held
        end = _HEAD_END.search(held)
        if end is None:
            if len(held) > MAX_RESPONSE_HEAD_BYTES:
                raise UpstreamProtocolError(f"model server's response head is over {MAX_RESPONSE_HEAD_BYTES} bytes")
            return False
        head = bytes(held[: end.end()])
        del held[: end.end()]
        self._awaiting_head = False
        self._head = head
        known = self._known.get(self._method, head)
        if known is not None:
            self._unread_head = head
            self._known_reading = known
        else:
            self.framing.receive_data(head)
        return True

    def _give_h11_the_rest(self) -> None:
        self._awaiting_head = False
        self.framing.receive_data(bytes(self._held))
        self._held.clear()
        if self._eof_fed:
            self._close_h11()

    def _read_by_h11(self, head: h11.Response) -> None:
        """h11 has read a final response head: keep its reading, then route the body."""
        # Listed once (iterating h11's Headers goes item by item through Sequence.__iter__).
        fields = [(name.lower(), value) for name, value in head.headers.raw_items()]
        body = self.framing.their_state is h11.SEND_BODY
        self._known.put(self._method, self._head, head, fields, body)
        self._body_after(head, fields, body)

    def _body_after(self, head: h11.Response, fields: list[tuple[bytes, bytes]], sends_body: bool) -> None:
        """Route the body that follows `head` (with header `fields`; h11 expects a body when
        `sends_body`): plain chunks and a Content-Length body to `chunks.py`, anything
        else (a body delimited by the close, say) to h11."""
        rest = bytes(self._held)
        self._held.clear()
        self.head_fields = fields
        self.keep_alive = head.http_version >= b"1.1" and not _says_close(fields)  # as h11 decides
        body: ChunkScanner | LengthReader | None = None
        if sends_body and self._method != b"HEAD" and head.status_code not in (204, 304):
            if (get_header(fields, b"transfer-encoding") or b"").lower() == b"chunked":
                body = ChunkScanner()
            else:
                length = get_header(fields, b"content-length")  # h11 checked it: digits
                if length is not None and int(length) > 0:
                    body = LengthReader(int(length))
        if body is not None:
            self._body = body
            body.feed(rest)
            return
        if rest:
            self.framing.receive_data(rest)
        if self._eof_fed:
            self._close_h11()

    def _take_body(self, body: ChunkScanner | LengthReader) -> bytes:
        try:
            data = body.take(self._take_limit)
            if data:
                self._take_limit = 0
        except ChunkError as exc:
            raise UpstreamProtocolError(f"model server broke HTTP/1.1: {exc}") from None
        if body.handoff is not None:
            self._body = None
            self.framing.receive_data(body.handoff)
            if self._eof_fed:
                self._close_h11()
        return data

    async def next_event(self, timeout_s: float) -> h11.Event | type[h11.PAUSED]:
        """The next event, waiting at most `timeout_s` of silence for it."""
        while True:
            event = self.poll_event()
            if event is not None:
                return event
            waiter = self._loop.create_future()
            self._waiter = waiter
            self._timeout_s = timeout_s
            self._deadline.set(timeout_s)
            try:
                await waiter
            finally:
                self._deadline.clear()
                self._waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.lost = True
        self._deadline.cancel()
        if self.busy_set is not None:
            self.busy_set.discard(self)

    def fail(self, exc: UpstreamError) -> None:
        """End the exchange now with `exc`, for whoever waits on it or reads next."""
        self.failure = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class UpstreamResponse:
    """The model server's answer; its body is read as it arrives.

    Use as an async context manager, or call `aclose()`: the connection goes
    back to the pool only if the body was read to its end.
    """

    def __init__(self, pool: ConnectionPool, conn: _ClientConnection, head: h11.Response) -> None:
        self._pool = pool
        self._conn: _ClientConnection | None = conn
        self.status: int = head.status_code
        self.reason = head.reason.decode("latin-1")
        self.headers: list[tuple[bytes, bytes]] = conn.head_fields
        self.http_version = head.http_version.decode("ascii")
        self.complete = False
        # Read once: the handler asks for them on every answer, and they describe
        # the message as it came (h11 has checked Content-Length is digits).
        length = get_header(self.headers, b"content-length")
        self.content_length: int | None = None if length is None else int(length)
        kind = get_header(self.headers, b"content-type")
        self.content_type = "" if kind is None else kind.decode("latin-1")
        # Event streams and bodies of unknown length (chunked or until close).
        self.is_streaming = self.content_length is None or self.content_type.startswith("text/event-stream")

    def header(self, name: str) -> str | None:
        value = get_header(self.headers, name.lower().encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives from the socket.

        Each piece is yielded as soon as it is read; pieces that arrived
        together (several server-sent events in one read) come joined, so a
        burst costs one write downstream instead of one per event. The
        first piece goes out alone, before the rest of a burst that came
        with it is decoded (see FIRST_PIECE_BYTES).
        """
        conn = self._conn
        if conn is None:
            return
        timeout_s = self._pool.limits.read_timeout_s
        first = True
        while True:
            event: h11.Event | type[h11.PAUSED] | None = await conn.next_event(timeout_s)
            parts: list[bytes] = []
            while event is not None:
                kind = type(event)
                if kind is h11.Data:
                    parts.append(cast(h11.Data, event).data)
                    if first:
                        break
                elif kind is h11.EndOfMessage:
                    self.complete = True
                    self._release()
                    if parts:
                        yield b"".join(parts)
                    return
                else:
                    self.close_now()
                    raise UpstreamProtocolError("model server closed the connection mid-response")
                event = conn.poll_event()
            data = b"".join(parts)
            if data:
                first = False
                yield data

    @property
    def content(self) -> AsyncIterator[bytes]:
        """Same as `iter_chunks()`; named as aiohttp's, for handlers written for it."""
        return self.iter_chunks()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, refusing more than `limit` bytes."""
        cap = self._pool.limits.max_response_bytes if limit is None else limit
        conn = self._conn
        if conn is None:
            return b""
        # The same loop as iter_chunks, without an async generator: this is
        # the path of every non-streaming answer.
        timeout_s = self._pool.limits.read_timeout_s
        parts: list[bytes] = []
        size = 0
        while True:
            event = await conn.next_event(timeout_s)
            kind = type(event)
            if kind is h11.Data:
                data = cast(h11.Data, event).data
                size += len(data)
                if size > cap:
                    self.close_now()
                    raise UpstreamBodyTooLarge(f"model response over {cap} bytes")
                parts.append(data)
            elif kind is h11.EndOfMessage:
                self.complete = True
                self._release()
                return b"".join(parts)
            else:
                self.close_now()
                raise UpstreamProtocolError("model server closed the connection mid-response")

    async def json(self) -> Any:
        return json.loads(await self.read())

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def close_now(self) -> None:
        """Drop the connection unless the body was read to its end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self.complete:
                self._pool.release(conn)
            else:
                conn.close()

    async def aclose(self) -> None:
        self.close_now()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close_now()


class ConnectionPool:
    """Keep-alive connections to one server (`http://host:port` or `https://...`)."""

    def __init__(
        self, base_url: str, limits: ClientLimits | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL must look like http://host:port or https://host, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.prefix = parts.path.rstrip("/")
        self.netloc = parts.netloc  # the Host header
        self.limits = limits or ClientLimits()
        self._idle: list[_ClientConnection] = []
        self._busy: set[_ClientConnection] = set()
        self._known = KnownResponses()  # response heads h11 has read, for all connections
        # Request heads written, by method, path, headers and content type (see _head).
        self._heads: KeptTable[tuple[str, str, tuple[tuple[str, str], ...], str | None], bytes] = KeptTable(
            MAX_KEPT_HEADS
        )

    def _head(self, method: str, path: str, headers: tuple[tuple[str, str], ...], content_type: str | None) -> bytes:
        """The request head but for its Content-Length: written and checked once per shape, then kept."""
        key = (method, path, headers, content_type)
        head = self._heads.find(key)
        if head is None:
            fields = [("host", self.netloc), *headers]
            if content_type is not None:
                fields.append(("content-type", content_type))
            head = request_head(method, self.prefix + path, fields)
            if len(head) <= MAX_KEPT_HEAD_BYTES:  # keys hold the headers' text
                self._heads.keep(key, head)
        return head

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        limits = self.limits
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _ClientConnection(limits, self._known),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                limits.connect_timeout_s,
            )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(
                f"no connection to {self.host}:{self.port} within {limits.connect_timeout_s:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UpstreamUnavailable(f"cannot connect to {self.host}:{self.port}: {reason}") from None
        return conn

    def _take_idle(self) -> _ClientConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.is_reusable():
                return conn
            conn.close()
        return None

    def release(self, conn: _ClientConnection) -> None:
        """Return a connection whose exchange finished; closed unless reusable."""
        self._busy.discard(conn)
        if conn.end_exchange() and conn.is_reusable() and len(self._idle) < self.limits.max_idle_connections:
            self._idle.append(conn)
            return
        conn.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Body = b"",
        headers: Iterable[tuple[str, str]] = (),
        content_type: str | None = None,
        before_wait: Callable[[], None] | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the response head.

        A request that fails on a reused connection before any byte came back
        (the server had closed it while idle) is sent again once on a fresh
        connection when it is idempotent or was never written.

        `before_wait` is called once, before the first await: after the
        request was written when an idle connection could take it at once
        (work done then overlaps the server's), else before connecting.
        """
        size = body_size(body)
        fields = () if headers == () else tuple((name, value) for name, value in headers)
        head = self._head(method, path, fields, content_type)
        if size or method not in ("GET", "HEAD"):
            head = b"%scontent-length: %d\r\n\r\n" % (head[:-2], size)
        method_b = method.encode("ascii")
        retriable = method in IDEMPOTENT_METHODS
        timeout_s = self.limits.read_timeout_s

        waiting = before_wait

        def ready() -> None:
            nonlocal waiting
            if waiting is not None:
                call, waiting = waiting, None
                call()

        for attempt in (1, 2):
            conn = self._take_idle() if attempt == 1 else None
            reused = conn is not None
            if conn is None:
                ready()
                conn = await self._connect()
            conn.busy_set = self._busy
            self._busy.add(conn)
            sent = False
            try:
                whole = conn.send(head, method_b, body, size)
                ready()
                if not whole:
                    await conn.send_large(body)
                sent = True
                while True:
                    event = await conn.next_event(timeout_s)
                    kind = type(event)
                    if kind is h11.Response:
                        return UpstreamResponse(self, conn, cast(h11.Response, event))
                    if kind is h11.InformationalResponse:
                        continue
                    raise UpstreamProtocolError("model server closed the connection without answering")
            except BaseException as exc:
                conn.close()
                stale = (
                    reused
                    and conn.received == 0
                    and (retriable or not sent)
                    and isinstance(exc, (UpstreamProtocolError, ConnectionError))
                )
                if attempt == 1 and stale:
                    continue
                if isinstance(exc, ConnectionError):
                    raise UpstreamProtocolError(f"model server connection failed: {exc}") from None
                raise
        raise AssertionError("unreachable")

    def fail_silent(self, exc: UpstreamError, silent_for_s: float) -> int:
        """Fail every exchange the server has sent nothing to for `silent_for_s`; how many."""
        now = asyncio.get_running_loop().time()
        stale = [c for c in self._busy if now - c.last_activity >= silent_for_s]
        for conn in stale:
            conn.fail(exc)
        return len(stale)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
