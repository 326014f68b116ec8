"""HTTP/1.1 server on h11 and asyncio protocols.

One `HTTPServerProtocol` serves one connection. Bytes come in through
`data_received`, and a whole request (head and body, bounded) is handed to
its route's handler in a task. A `RequestFramer` stands between the socket
and h11: it checks framing strictly and hands h11 one request at a time,
each to a fresh `h11.Connection`. Requests on one connection are answered
in order: while a handler runs, pipelined bytes wait in the framer, and
reading pauses once it holds `pipeline_buffer_bytes`.

h11 parses the request heads; one that differs from a head it has read
before only in its Content-Length digits is taken as h11 read that one
(`known_heads.py`). A *plain* request (HTTP/1.1, keep-alive,
not HEAD, no body or a Content-Length one; see `framing.check_head`)
needs nothing more of it: its body is cut by the framer, and its answer's
head is written by `wire.response_head`, chunks framed here. Anything else
(HTTP/1.0, HEAD, chunked bodies, 100-continue, a status without a body, a
handler's own framing headers) goes through h11 as a whole.

Every phase of a connection has a deadline (see `Phase`), and at the
connection limit the oldest connection with no request being handled is
closed to make room, so idle or slow clients cannot lock others out.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import h11

from .flow import FlowControl
from .framing import FramingError, RequestFramer, check_head
from .framing import State as FramerState
from .known_heads import KnownHeads, RequestHead
from .messages import Headers, HTTPError, Request, Response, StreamResponse, json_response
from .routing import Handler, Route, Router
from .timers import Deadline, FixedDeadlines
from .transport import Listener
from .wire import REASONS, response_head

log = logging.getLogger("pyworker.http")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds that keep one client from holding memory, connections or time."""

    max_header_bytes: int = 16 * 1024
    # Image payloads arrive base64-encoded in JSON; 64 MiB leaves room for several.
    max_body_bytes: int = 64 * 1024 * 1024
    # From accept (or a kept-alive connection's next first byte) to a complete head.
    header_timeout_s: float = 10.0
    # Longest silence while a request body is arriving.
    body_timeout_s: float = 30.0
    # After `body_rate_grace_s`, a body must arrive at this average rate
    # (bytes/s; 0: no minimum). Kestrel's defaults.
    min_body_rate: float = 240.0
    body_rate_grace_s: float = 5.0
    # Longest silence between two requests on one connection.
    keepalive_timeout_s: float = 20.0
    # A client that reads nothing of its response for this long is dropped.
    send_timeout_s: float = 60.0
    # After an error answer, how long input is read and discarded before
    # closing, so the client sees the answer and not a reset (nginx's lingering close).
    linger_s: float = 5.0
    # At this many connections, the oldest one with no request in progress
    # is closed to make room; with none, the new one gets 503.
    max_connections: int = 2048
    # Pipelined bytes buffered while a handler runs before reading pauses.
    pipeline_buffer_bytes: int = 64 * 1024


class ClientDisconnected(ConnectionError):
    """The client went away (or stopped reading) before its response was sent."""


class ResponseAborted(Exception):
    """Raised by a handler to drop the connection mid-response (the source failed).

    The client then sees a truncated body rather than a false end.
    """


def _reason(status: int) -> bytes:
    return REASONS.get(status, b"")


def _canned(status: int, message: str) -> bytes:
    """A complete response that ends the connection.

    Used where h11 has no request to answer (a timeout or an error before
    the request head was complete) and the connection is closed right after.
    """
    body = json.dumps({"error": message}).encode("utf-8")
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (
        status,
        _reason(status),
        len(body),
    )
    return head + body


class Phase(enum.Enum):
    """Where a connection is; each phase has its own deadline."""

    HEAD = "head"  # a request head is awaited or arriving: header_timeout_s
    BODY = "body"  # its body is arriving: body_timeout_s and min_body_rate
    HANDLER = "handler"  # a handler runs: no deadline (the response has its own)
    IDLE = "idle"  # kept alive between requests: keepalive_timeout_s
    LINGER = "linger"  # answered an error, discarding input: linger_s
    CLOSED = "closed"


class _Exchange:
    """One request's state on a connection, from its head to its response."""

    __slots__ = (
        "head",
        "raw_head",
        "h11_read_head",
        "plain",
        "ours",
        "handler",
        "early",
        "body",
        "body_bytes",
        "body_started",
        "head_sent",
        "responded",
        "pending_head",
        "first_body_at",
        "bytes_out",
    )

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.raw_head = b""  # the head's bytes, as the framer handed them out
        # False while h11 has not been given the head (it was known: see known_heads.py)
        self.h11_read_head = True
        self.plain = False  # a plain request (see the module docstring): its body is the framer's
        self.ours = False  # the response head was written here, not by h11 (chunks too)
        self.handler: Handler | None = None
        self.early: Response | None = None  # a 404/405 sent once the body is read
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.body_started = 0.0
        self.head_sent = False  # the response head was written (maybe still held, below)
        self.responded: Response | None = None  # sent whole by `respond`, before the handler returned
        # A streamed response's head, held until the end of the loop turn.
        self.pending_head = b""
        # time.monotonic() when a streamed response's first body piece was written.
        self.first_body_at: float | None = None
        self.bytes_out = 0  # body bytes of the response given to the transport

    def take_pending_head(self) -> bytes:
        """The held stream head (empty once it went out); it goes out with what is written next."""
        head, self.pending_head = self.pending_head, b""
        return head


class HTTPServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._limits = limits = server.limits
        self._loop = asyncio.get_running_loop()
        # The current request's h11 connection, made when first needed: a
        # plain request whose head was read before needs none (see `_conn`).
        self._h11: h11.Connection | None = None
        self._framer = RequestFramer(limits.max_header_bytes, limits.max_body_bytes, server.known_heads)
        self._transport: asyncio.Transport | None = None
        self._flow: FlowControl | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer = Deadline(self._loop, self._on_timeout)
        self.phase = Phase.HEAD
        # True once the current head's deadline is set (from accept, for the first).
        self._head_due = True
        self._ex = _Exchange()

    @property
    def head_sent(self) -> bool:
        """True once the current request's response has begun (then no other answer can be sent)."""
        return self._ex.head_sent

    @property
    def first_body_at(self) -> float | None:
        return self._ex.first_body_at

    @property
    def body_bytes_sent(self) -> int:
        return self._ex.bytes_out

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._flow = FlowControl(transport)
        if not self._server.admit(self):
            self.phase = Phase.CLOSED
            transport.write(_canned(503, "too many connections"))
            transport.close()
            return
        # Counted from accept: a client that connects and says nothing is
        # held no longer than one that sends its head slowly.
        self._server.first_heads.add(self)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.LINGER or phase is Phase.CLOSED:
            return  # discarded
        self._framer.feed(data)
        if phase is Phase.IDLE:
            # The head deadline is armed only if this turns out to be part of a head.
            self.phase = Phase.HEAD
            self._head_due = False
        if self._task is None:
            self._process()
        elif self._framer.buffered > self._limits.pipeline_buffer_bytes:
            assert self._flow is not None
            self._flow.pause_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone: returning None lets
        # asyncio close the transport, and connection_lost cancels the handler.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self._timer.cancel()
        self._server.forget(self)
        self._framer.discard()
        if self._flow is not None:
            self._flow.connection_lost()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        assert self._flow is not None
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        assert self._flow is not None
        self._flow.resume_writing()

    # -- reading -----------------------------------------------------------

    @property
    def _conn(self) -> h11.Connection:
        conn = self._h11
        if conn is None:
            # h11 sees only whole heads from the framer; its own bound is a backstop.
            conn = self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
        return conn

    def _process(self) -> None:
        """Handle every request ready, until a handler must run or more data is needed."""
        framer = self._framer
        try:
            if not self._ex.plain:
                # Handed over before asking h11, which would only say NEED_DATA.
                piece = framer.next_piece()
                if piece is not None:
                    self._give(piece)
            while self.phase is not Phase.CLOSED:
                ex = self._ex
                if ex.plain:  # the body comes from the framer; h11 has done its part
                    piece = framer.next_piece()
                    if piece is not None:
                        ex.body_bytes += len(piece)
                        if ex.handler is not None:
                            ex.body.append(piece)
                    if framer.state is FramerState.DONE:
                        if not self._request_read():
                            return
                    elif piece is None:
                        self._arm_body_deadline()
                        return
                    continue
                conn = self._conn
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    piece = framer.next_piece()
                    if piece is None:
                        # Waiting for more: only now is a deadline worth arming
                        # (a request that arrives whole never touches the timer).
                        if self.phase is Phase.BODY:
                            self._arm_body_deadline()
                        elif not self._head_due and framer.buffered:
                            self._head_due = True
                            self._timer.set(self._limits.header_timeout_s)
                        return
                    self._give(piece)
                    continue
                kind = type(event)
                if kind is h11.Data:
                    data = cast(h11.Data, event).data
                    ex.body_bytes += len(data)
                    if ex.handler is not None:
                        ex.body.append(data)
                elif kind is h11.Request:
                    head = cast(h11.Request, event)
                    length, chunked, plain = check_head(head, self._limits.max_body_bytes)
                    if plain:
                        self._server.known_heads.put(self._ex.raw_head, head, length)
                    self._on_head(head, length, chunked, plain)
                elif kind is h11.EndOfMessage:
                    if not self._request_read():
                        return
                elif kind is h11.ConnectionClosed:
                    self._close()
                    return
                else:  # PAUSED cannot happen while no handler runs; stop to be safe.
                    return
        except FramingError as exc:
            self._fail(exc.status, exc.message)
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc) or "malformed request")

    def _request_read(self) -> bool:
        """The request is read whole: answer it; True when the next one may be read now."""
        self._timer.clear()
        early = self._ex.early
        if early is not None:
            self._send_complete(early)
            return self._next_cycle()
        self._dispatch()
        return False

    def _give(self, piece: bytes) -> None:
        """Pass on a piece from the framer: a head read before is taken as h11 read it, all else goes to h11."""
        if self._framer.state is FramerState.PARSING:  # the piece is a request head
            ex = self._ex
            ex.raw_head = piece
            known = self._framer.known
            if known is not None:
                ex.h11_read_head = False
                head, length = known
                self._on_head(head, length, False, True)
                return
        self._conn.receive_data(piece)

    def _h11_answering(self) -> h11.Connection:
        """h11, to write an answer: a known head it was not given, it reads first (as it did before)."""
        conn = self._conn
        ex = self._ex
        if not ex.h11_read_head:
            ex.h11_read_head = True
            conn.receive_data(ex.raw_head)
            event = conn.next_event()
            assert type(event) is h11.Request, event
        return conn

    def _on_head(self, head: RequestHead, length: int, chunked: bool, plain: bool) -> None:
        self._server.first_heads.discard(self)
        framer = self._framer
        framer.start_body(length, chunked)
        ex = self._ex
        ex.head = head
        ex.plain = plain
        if not plain:
            piece = framer.next_piece()  # what of the body has arrived, at once
            if piece is not None:
                self._conn.receive_data(piece)
        path, _, _query = head.target.partition(b"?")
        found = self._server.router.resolve(head.method.decode("ascii"), path.decode("latin-1"))
        if isinstance(found, Response):
            ex.early = found
        else:
            ex.handler = found
            if not plain and self._conn.they_are_waiting_for_100_continue:  # plain: no Expect
                self._write(self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        if length or chunked:
            self.phase = Phase.BODY
            ex.body_started = self._loop.time()

    def _arm_body_deadline(self) -> None:
        """The body's deadline: `body_timeout_s` of silence, or too slow on average after the grace."""
        limits = self._limits
        ex = self._ex
        now = self._loop.time()
        deadline = now + limits.body_timeout_s
        if limits.min_body_rate > 0:
            # The moment the average rate would fall below the minimum if nothing more came.
            due = ex.body_started + max(limits.body_rate_grace_s, ex.body_bytes / limits.min_body_rate)
            deadline = min(deadline, due)
        self._timer.set(deadline - now)

    def _dispatch(self) -> None:
        ex = self._ex
        head = ex.head
        handler = ex.handler
        assert head is not None and handler is not None
        path, _, query = head.target.partition(b"?")
        request = Request(
            head.method.decode("ascii"),
            path.decode("latin-1"),
            query.decode("latin-1"),
            head.headers,
            b"".join(ex.body),  # bytes, even from h11's single bytearray piece
            head.http_version.decode("ascii"),
            self,
        )
        ex.body = []
        self.phase = Phase.HANDLER
        self._task = self._loop.create_task(self._run(handler, request))

    # -- handling ----------------------------------------------------------

    async def _run(self, handler: Handler, request: Request) -> None:
        try:
            try:
                result = await handler(request)
            except HTTPError as exc:
                result = exc.to_response()
            if isinstance(result, Response):
                if result is not self._ex.responded:
                    if self.head_sent:
                        raise RuntimeError("handler returned a Response after starting a StreamResponse")
                    self._send_complete(result)
            elif isinstance(result, StreamResponse):
                if not result.prepared:
                    raise RuntimeError("handler returned a StreamResponse it never prepared")
                await result.write_eof()
            else:
                raise TypeError(f"handler returned {type(result).__name__}, not a Response")
        except (asyncio.CancelledError, ClientDisconnected):
            # The client went away (or the server is stopping): nobody to answer.
            self._task = None
            self._abort()
            return
        except ResponseAborted as exc:
            log.debug("response to %s %s aborted: %s", request.method, request.path, exc)
            self._task = None
            if not self.head_sent:
                self._send_complete(json_response({"error": str(exc) or "response aborted"}, status=502))
                self._close()
            else:
                self._abort()
            return
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            self._task = None
            if self._ex.responded is not None:
                pass  # the client has its whole answer: the connection is fine
            elif self.head_sent:
                self._abort()  # the client sees a truncated body, never a false end
                return
            else:
                self._send_complete(json_response({"error": "internal server error"}, status=500))
        self._task = None
        if self._next_cycle() and self._framer.buffered:
            self._process()  # pipelined bytes are waiting

    # -- writing -----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def _send_complete(self, response: Response) -> None:
        body = response.body
        ex = self._ex
        if ex.plain:
            head = response_head(response.status, response.headers, b"content-length: %d\r\n" % len(body))
            if head is not None:
                ex.ours = ex.head_sent = True
                ex.bytes_out = len(body)
                if len(body) < 16384:
                    self._write(head + body)
                else:
                    assert self._transport is not None
                    self._transport.writelines((head, body))
                return
        conn = self._h11_answering()
        headers = response.headers + [(b"content-length", b"%d" % len(body))]
        out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        assert out is not None
        request = ex.head
        if body and request is not None and request.method != b"HEAD":
            data = conn.send(h11.Data(data=body))
            assert data is not None
            out += data
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        self._write(out + end)
        ex.head_sent = True
        ex.bytes_out = len(body)

    def respond(self, response: Response) -> None:
        """Send a complete response now; the handler then returns it (see `Request.respond`)."""
        if self.phase is Phase.CLOSED:
            raise ClientDisconnected("client disconnected")
        if self.head_sent:
            raise RuntimeError("a response was already started")
        self._send_complete(response)
        self._ex.responded = response

    async def start(self, status: int, headers: Headers) -> None:
        """Send a streamed response's head (called by `StreamResponse.prepare`)."""
        if self.phase is Phase.CLOSED:
            raise ClientDisconnected("client disconnected")
        ex = self._ex
        out = response_head(status, headers, b"Transfer-Encoding: chunked\r\n") if ex.plain else None
        if out is None:
            out = self._h11_answering().send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
            assert out is not None
        else:
            ex.ours = True
        # Held until the end of this loop turn: a body piece written before
        # then goes out with it in one send, which is what a model that
        # answers at once gets (head and first token in one packet).
        ex.pending_head = out
        ex.head_sent = True
        self._loop.call_soon(self._flush_head, ex)

    def _flush_head(self, ex: _Exchange) -> None:
        head = ex.take_pending_head()
        if head and self.phase is not Phase.CLOSED:
            self._write(head)

    async def writelines(self, pieces: Iterable[bytes]) -> None:
        """Send body pieces (each its own chunk) in one write, then wait while the client's socket is full."""
        if self.phase is Phase.CLOSED:
            raise ClientDisconnected("client disconnected")
        assert self._transport is not None and self._flow is not None
        ex = self._ex
        out = [ex.take_pending_head()]
        size = 0
        for data in pieces:
            if not data:
                continue  # an empty chunk would end the body
            size += len(data)
            if ex.ours:
                out += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                sent = self._conn.send_with_data_passthrough(h11.Data(data=data))
                assert sent is not None
                out += sent
        if size and ex.first_body_at is None:
            ex.first_body_at = time.monotonic()
        ex.bytes_out += size
        self._transport.writelines(out)
        try:
            await self._flow.drain(self._limits.send_timeout_s)
        except ConnectionResetError:
            raise ClientDisconnected("client disconnected") from None
        except TimeoutError:
            self._abort()
            raise ClientDisconnected(f"client read nothing for {self._limits.send_timeout_s:g} s") from None

    def finish(self) -> None:
        """End a streamed response's body."""
        if self.phase is Phase.CLOSED:
            raise ClientDisconnected("client disconnected")
        ex = self._ex
        end = b"0\r\n\r\n" if ex.ours else self._conn.send(h11.EndOfMessage())
        assert end is not None
        self._write(ex.take_pending_head() + end)

    # -- connection lifecycle ----------------------------------------------

    def _next_cycle(self) -> bool:
        """Get ready for the next request on this connection, or close it."""
        ex = self._ex
        self._ex = _Exchange()
        if self.phase is Phase.CLOSED:
            return False
        conn = self._h11
        # A plain request's body was never h11's: the framer has read it whole.
        if ex.ours or (conn is not None and conn.our_state is h11.DONE and (ex.plain or conn.their_state is h11.DONE)):
            self._h11 = None
            self._framer.next_request()
            assert self._flow is not None
            self._flow.resume_reading()
            if self._framer.buffered:
                self.phase = Phase.HEAD
                self._head_due = False
            else:
                self.phase = Phase.IDLE
                self._timer.set(self._limits.keepalive_timeout_s)
            return True
        self._close()
        return False

    def _fail(self, status: int, message: str) -> None:
        """Answer an unrecoverable request error, then close the connection lingering."""
        if self.phase is Phase.CLOSED:
            return
        if not self.head_sent:
            self._write(_canned(status, message))
        self._linger()

    def _linger(self) -> None:
        """Stop writing, discard input for a while, then close.

        Closing with unread input makes the kernel send a reset, and a reset
        can discard the error answer before the client reads it. Shutting
        down writing first lets the answer arrive; the client closes its
        side once it has read it, or `linger_s` runs out.
        """
        transport = self._transport
        assert transport is not None and self._flow is not None
        self._framer.discard()
        if not transport.can_write_eof():  # TLS: no half-close
            self._close()
            return
        self.phase = Phase.LINGER
        self._flow.resume_reading()
        transport.write_eof()
        self._timer.set(self._limits.linger_s)

    def _close(self) -> None:
        self.phase = Phase.CLOSED
        self._timer.clear()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()  # flushes what is buffered first

    def _abort(self) -> None:
        self.phase = Phase.CLOSED
        self._timer.clear()
        if self._transport is not None:
            self._transport.abort()

    def evict(self) -> bool:
        """Close now unless a request is being handled (the server needs the room)."""
        if self._task is not None:
            return False
        self._abort()
        return True

    def close_if_idle(self) -> bool:
        """Close the connection now if no request is in progress (server shutdown)."""
        if self._task is None:
            self._close()
            return True
        return False

    @property
    def busy(self) -> bool:
        return self._task is not None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # -- timers --------------------------------------------------------------

    def first_head_overdue(self) -> None:
        """The connection's first head has not come within `header_timeout_s` of accept."""
        if self.phase is Phase.HEAD:
            self._on_timeout()

    def _on_timeout(self) -> None:
        phase = self.phase
        if phase is Phase.HEAD:
            if self._framer.buffered:
                self._fail(408, "request head not received in time")
            else:
                self._close()  # nothing was said: nothing to answer
        elif phase is Phase.BODY:
            ex = self._ex
            elapsed = self._loop.time() - ex.body_started
            self._fail(408, f"request body too slow: {ex.body_bytes} bytes in {elapsed:.1f} s")
        elif phase is Phase.IDLE or phase is Phase.LINGER:
            self._close()


class HTTPServer:
    """Listens, builds one protocol per connection, and shuts down gracefully."""

    def __init__(self, routes: Iterable[Route], limits: ServerLimits | None = None) -> None:
        self.router = Router(routes)
        self.limits = limits or ServerLimits()
        # Request heads h11 has read, for the next ones that differ only in length.
        self.known_heads = KnownHeads()
        # Each new connection's first head is due `header_timeout_s` after accept.
        self.first_heads: FixedDeadlines[HTTPServerProtocol] = FixedDeadlines(
            self.limits.header_timeout_s, HTTPServerProtocol.first_head_overdue
        )
        # Insertion-ordered: the oldest connection comes first.
        self.connections: dict[HTTPServerProtocol, None] = {}
        self._listener: Listener | None = None  # plain TCP
        self._server: asyncio.Server | None = None  # TLS, on asyncio's server

    def admit(self, conn: HTTPServerProtocol) -> bool:
        """Count a new connection in, closing the oldest one not handling a request if full."""
        connections = self.connections
        if len(connections) >= self.limits.max_connections:
            for victim in connections:
                if victim.evict():
                    del connections[victim]
                    break
            else:
                return False
        connections[conn] = None
        return True

    def forget(self, conn: HTTPServerProtocol) -> None:
        self.connections.pop(conn, None)
        self.first_heads.discard(conn)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on `host`:`port` (port 0: any free one); TLS when given a context."""
        if ssl_context is None:
            self._listener = await Listener.open(host, port, lambda: HTTPServerProtocol(self), backlog=1024)
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HTTPServerProtocol(self),
            host,
            port,
            ssl=ssl_context,
            backlog=1024,
            reuse_address=True,
        )

    @property
    def port(self) -> int:
        """The port listened on (the first socket's)."""
        if self._listener is not None:
            sockets: Sequence[Any] = self._listener.sockets
        else:
            assert self._server is not None
            sockets = self._server.sockets
        port: int = sockets[0].getsockname()[1]
        return port

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let running requests finish for `grace_s`, then cancel them."""
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = asyncio.get_running_loop().time() + grace_s
        while any(c.busy for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.cancel()
            conn.close_if_idle()
        await asyncio.sleep(0)
        self.first_heads.close()
