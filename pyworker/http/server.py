"""HTTP/1.1 server on h11 and asyncio protocols.

One `HTTPServerProtocol` owns one `h11.Connection`. Bytes come in through
`data_received`, are framed by h11, and a whole request (head and body,
bounded) is handed to its route's handler in a task. Requests on one
connection are answered strictly in order: while a handler runs, pipelined
bytes wait in h11's buffer, and reading pauses once that buffer is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Iterable, cast

import h11

from .flow import WriteFlow
from .timers import Deadline
from .messages import Headers, HTTPError, Request, Response, StreamResponse, json_response
from .routing import Handler, Route, Router

log = logging.getLogger("pyworker.http")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds that keep one client from holding memory or connections forever."""

    max_header_bytes: int = 16 * 1024
    # Image payloads arrive base64-encoded in JSON; 64 MiB leaves room for several.
    max_body_bytes: int = 64 * 1024 * 1024
    # From a request's first byte until its head is complete.
    header_timeout_s: float = 10.0
    # Longest silence while a request body is arriving.
    body_timeout_s: float = 30.0
    # Longest silence between two requests on one connection.
    keepalive_timeout_s: float = 20.0
    max_connections: int = 2048
    # Pipelined bytes buffered while a handler runs before reading pauses.
    pipeline_buffer_bytes: int = 64 * 1024


class ClientDisconnected(ConnectionError):
    """The client went away before its response was sent."""


class ResponseAborted(Exception):
    """Raised by a handler to drop the connection mid-response (the source failed).

    The client then sees a truncated body rather than a false end.
    """


_REASONS = {int(s): s.phrase.encode("ascii") for s in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


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


def _measure_head(head: h11.Request) -> tuple[int, int]:
    """(size of the head in bytes, declared body length or 0), in one pass.

    h11 has checked Content-Length is a number. `raw_items()` is a plain
    list: cheaper to walk than h11's header sequence.
    """
    size = len(head.target)
    length = 0
    for name, value in head.headers.raw_items():
        size += len(name) + len(value) + 4
        if len(name) == 14 and name.lower() == b"content-length":
            length = int(value)
    return size, length


_TIMER_NONE, _TIMER_KEEPALIVE, _TIMER_HEADER, _TIMER_BODY = range(4)


class HTTPServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes)
        self._transport: asyncio.Transport | None = None
        self._flow: WriteFlow | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer = Deadline(self._loop, self._on_timeout)
        self._timer_kind = _TIMER_NONE
        self._lost = False
        self._read_paused = False
        self._pipelined_bytes = 0
        # Per-request state, reset by _reset_request().
        self._head: h11.Request | None = None
        self._handler: Handler | None = None
        self._early: Response | None = None
        self._body: list[bytes] = []
        self._body_bytes = 0
        self.head_sent = False
        self._pending_head = b""

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._flow = WriteFlow(transport)
        if len(self._server.connections) >= self._limits.max_connections:
            transport.write(_canned(503, "too many connections"))
            transport.close()
            return
        self._server.connections.add(self)
        self._arm_timer(_TIMER_KEEPALIVE)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        if self._task is None:
            self._process()
        elif not self._read_paused:
            self._pipelined_bytes += len(data)
            if self._pipelined_bytes > self._limits.pipeline_buffer_bytes:
                self._read_paused = True
                assert self._transport is not None
                self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone: returning None lets
        # asyncio close the transport, and connection_lost cancels the handler.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._timer.cancel()
        self._timer_kind = _TIMER_NONE
        self._server.connections.discard(self)
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

    def _process(self) -> None:
        """Handle every event h11 has ready, until a handler must run or h11 needs data."""
        conn = self._conn
        while not self._lost:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(exc.error_status_hint, str(exc) or "malformed request")
                return
            if event is h11.NEED_DATA:
                if conn.their_state is h11.SEND_BODY:
                    self._arm_timer(_TIMER_BODY)
                elif self._timer_kind != _TIMER_HEADER and conn.trailing_data[0]:
                    self._arm_timer(_TIMER_HEADER)
                return
            kind = type(event)
            if kind is h11.Data:
                if self._handler is not None:
                    data = cast(h11.Data, event).data
                    self._body_bytes += len(data)
                    if self._body_bytes > self._limits.max_body_bytes:
                        self._fail(413, f"request body over {self._limits.max_body_bytes} bytes")
                        return
                    self._body.append(data)
            elif kind is h11.Request:
                if not self._on_head(cast(h11.Request, event)):
                    return
            elif kind is h11.EndOfMessage:
                self._cancel_timer()
                if self._early is not None:
                    self._send_complete(self._early)
                    if not self._next_cycle():
                        return
                    continue
                self._dispatch()
                return
            elif kind is h11.ConnectionClosed:
                self._close()
                return
            else:  # PAUSED cannot happen while no handler runs; stop to be safe.
                return

    def _on_head(self, head: h11.Request) -> bool:
        self._cancel_timer()
        self._head = head
        # h11 bounds the head only while it is incomplete; one that arrived
        # whole in a single read is measured here.
        size, length = _measure_head(head)
        if size > self._limits.max_header_bytes:
            self._fail(431, f"request head over {self._limits.max_header_bytes} bytes")
            return False
        path, _, _query = head.target.partition(b"?")
        found = self._server.router.resolve(head.method.decode("ascii"), path.decode("latin-1"))
        if isinstance(found, Response):
            self._early = found
            return True
        if length > self._limits.max_body_bytes:
            self._fail(413, f"request body over {self._limits.max_body_bytes} bytes")
            return False
        self._handler = found
        if self._conn.they_are_waiting_for_100_continue:
            self._write(self._conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        return True

    def _dispatch(self) -> None:
        head = self._head
        handler = self._handler
        assert head is not None and handler is not None
        path, _, query = head.target.partition(b"?")
        request = Request(
            head.method.decode("ascii"),
            path.decode("latin-1"),
            query.decode("latin-1"),
            head.headers,
            b"".join(self._body),
            head.http_version.decode("ascii"),
            self,
        )
        self._body = []
        self._task = self._loop.create_task(self._run(handler, request))

    # -- handling ----------------------------------------------------------

    async def _run(self, handler: Handler, request: Request) -> None:
        try:
            try:
                result = await handler(request)
            except HTTPError as exc:
                result = exc.to_response()
            if isinstance(result, Response):
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
            if self.head_sent:
                self._abort()  # the client sees a truncated body, never a false end
                return
            self._send_complete(json_response({"error": "internal server error"}, status=500))
        self._task = None
        if self._next_cycle() and self._conn.trailing_data[0]:
            # Pipelined bytes wait in h11's buffer; with none, skip the
            # next_event() call that could only say NEED_DATA.
            self._process()

    # -- writing -----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def _send_complete(self, response: Response) -> None:
        conn = self._conn
        body = response.body
        headers = response.headers + [(b"content-length", b"%d" % len(body))]
        out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        assert out is not None
        head = self._head
        if body and head is not None and head.method != b"HEAD":
            data = conn.send(h11.Data(data=body))
            assert data is not None
            out += data
        end = conn.send(h11.EndOfMessage())
        assert end is not None
        self._write(out + end)
        self.head_sent = True

    async def start(self, status: int, headers: Headers) -> None:
        """Send a streamed response's head (called by `StreamResponse.prepare`)."""
        if self._lost:
            raise ClientDisconnected("client disconnected")
        out = self._conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        assert out is not None
        # Held until the end of this loop turn: a body piece written before
        # then goes out with it in one send, which is what a model that
        # answers at once gets (head and first token in one packet).
        self._pending_head = out
        self._loop.call_soon(self._flush_head)
        self.head_sent = True

    def _flush_head(self) -> None:
        head, self._pending_head = self._pending_head, b""
        if head and not self._lost:
            self._write(head)

    async def write(self, data: bytes) -> None:
        """Send one body piece, then wait while the client's socket is full."""
        if self._lost:
            raise ClientDisconnected("client disconnected")
        assert self._transport is not None and self._flow is not None
        pieces = self._conn.send_with_data_passthrough(h11.Data(data=data))
        assert pieces is not None
        if self._pending_head:
            pieces.insert(0, self._pending_head)
            self._pending_head = b""
        self._transport.writelines(pieces)
        try:
            await self._flow.drain()
        except ConnectionResetError:
            raise ClientDisconnected("client disconnected") from None

    def finish(self) -> None:
        """End a streamed response's body."""
        if self._lost:
            raise ClientDisconnected("client disconnected")
        end = self._conn.send(h11.EndOfMessage())
        assert end is not None
        if self._pending_head:
            end = self._pending_head + end
            self._pending_head = b""
        self._write(end)

    # -- connection lifecycle ----------------------------------------------

    def _next_cycle(self) -> bool:
        """Get ready for the next request on this connection, or close it."""
        conn = self._conn
        self._head = None
        self._handler = None
        self._early = None
        self._body = []
        self._body_bytes = 0
        self.head_sent = False
        self._pending_head = b""
        if self._lost:
            return False
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._pipelined_bytes = 0
            if self._read_paused:
                self._read_paused = False
                assert self._transport is not None
                self._transport.resume_reading()
            self._arm_timer(_TIMER_KEEPALIVE)
            return True
        self._close()
        return False

    def _fail(self, status: int, message: str) -> None:
        """Answer an unrecoverable request error and close the connection."""
        if not self.head_sent and not self._lost:
            self._write(_canned(status, message))
        self._close()

    def _close(self) -> None:
        self._cancel_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()  # flushes what is buffered first

    def _abort(self) -> None:
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

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

    def _arm_timer(self, kind: int) -> None:
        limits = self._limits
        if kind == _TIMER_KEEPALIVE:
            delay = limits.keepalive_timeout_s
        elif kind == _TIMER_HEADER:
            delay = limits.header_timeout_s
        else:
            delay = limits.body_timeout_s
        self._timer_kind = kind
        self._timer.set(delay)

    def _cancel_timer(self) -> None:
        self._timer.clear()
        self._timer_kind = _TIMER_NONE

    def _on_timeout(self) -> None:
        kind = self._timer_kind
        self._timer_kind = _TIMER_NONE
        if self._task is not None:
            return
        if kind == _TIMER_KEEPALIVE:
            self._close()  # an idle keep-alive connection ends silently
        elif kind == _TIMER_HEADER:
            self._fail(408, "request head not received in time")
        else:
            self._fail(408, "request body not received in time")


class HTTPServer:
    """Listens, builds one protocol per connection, and shuts down gracefully."""

    def __init__(self, routes: Iterable[Route], limits: ServerLimits | None = None) -> None:
        self.router = Router(routes)
        self.limits = limits or ServerLimits()
        self.connections: set[HTTPServerProtocol] = set()
        self._server: asyncio.Server | None = None

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HTTPServerProtocol(self),
            host,
            port,
            ssl=ssl_context,
            backlog=1024,
            reuse_address=True,
        )
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let running requests finish for `grace_s`, then cancel them."""
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
