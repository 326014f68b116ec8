"""The server's own accept and socket transport, for plain TCP.

asyncio's server hands each accepted socket to a task that builds its
transport, and the transport calls `connection_made` and starts reading in
the turns after that: three turns of the event loop before a protocol sees
the request a client sent right after connecting, each a trip through the
selector on a core that is cold after an idle gap. Here the accept callback
builds the transport, which calls `connection_made` and reads what has
already arrived, all in the same turn; when a request was there, the
socket is registered for more reads in the turn after, once the request
is on its way.

`SocketTransport` keeps asyncio's contract for what the server uses: writes
are sent at once and the rest buffered (without copying a large body),
`pause_writing` past the high-water mark and `resume_writing` under the
low one, read pausing, the half-close the server's linger needs
(`write_eof`), `close` after the buffer is flushed, `abort`, and
`connection_lost` called once, in a later turn, as asyncio does. TLS
connections keep asyncio's server: its SSL protocol needs its transports.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("pyworker.http")

# Bytes asked of one recv: asyncio's. Fewer, larger pieces of a large body
# leave the heap less fragmented (with 64 KiB reads a 64 MB body left 24 MB
# behind, against 2-4 MB). recv allocates the whole size before shrinking
# it to what came; the worker's fixed mmap threshold (`process.py`) keeps
# that allocation on the heap.
READ_SIZE = 256 * 1024
# asyncio's default write-buffer marks.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# Out of file descriptors or memory: accepting stops this long (asyncio's delay).
ACCEPT_RETRY_S = 1.0
_RESOURCE_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Linux gives an accepted socket the listening socket's TCP_NODELAY: set
# once there, it costs no system call a connection.
NODELAY_INHERITED = sys.platform.startswith("linux")
# Buffers given to one sendmsg (the kernel takes at most IOV_MAX, 1024 on Linux).
_MAX_IOV = 64
# At most this many bytes in pieces are joined before a write; larger ones go out as they are.
_JOIN_BYTES = 64 * 1024


class SocketTransport(asyncio.Transport):
    """One accepted, non-blocking TCP socket, driven by the event loop's selector."""

    __slots__ = (
        "_loop",
        "_sock",
        "_fd",
        "_protocol",
        "_buffer",
        "_buffered",
        "_reading",
        "_registered",
        "_closing",
        "_lost",
        "_writing_paused",
        "_eof",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.Protocol,
        peername: Any = None,
    ) -> None:
        super().__init__({"peername": peername, "socket": sock})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        # What the socket has not taken yet, in order; `_buffered` bytes in all.
        self._buffer: list[memoryview] = []  # a list: 56 bytes empty, where a deque takes 600
        self._buffered = 0
        self._reading = True  # the protocol wants data (not paused, no EOF yet)
        self._registered = False  # the selector watches the socket for reads
        self._closing = False
        self._lost = False  # connection_lost is scheduled (or done)
        self._writing_paused = False
        self._eof = False  # write_eof was called: the write side shuts once the buffer is sent
        protocol.connection_made(self)
        if self._reading and not self._closing:
            self._first_read()

    # -- asyncio.BaseTransport ----------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname" and self._sock.fileno() >= 0:
            return self._sock.getsockname()
        return super().get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, and end the connection once what is buffered has been sent."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._buffered:
            self._schedule_lost(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- asyncio.ReadTransport ------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self.is_reading():
            self._stop_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._register()

    def _stop_reading(self) -> None:
        self._reading = False
        if self._registered:
            self._registered = False
            self._loop.remove_reader(self._fd)

    def _register(self) -> None:
        if self._reading and not self._closing and not self._registered:
            self._registered = True
            self._loop.add_reader(self._fd, self._read_ready)

    def _first_read(self) -> None:
        """Read what the client sent with its connect; register the socket for more after.

        Registering (a system call, and three exceptions raised and caught
        inside asyncio's selector for a new socket) costs about 40 µs on a
        core cold from an idle gap. When the request is here already, it
        waits for the next turn, after the step of the request's handler
        that this one schedules (forwarding it to the model, say).
        """
        self._read_ready()
        if not self._registered:  # something came (nothing: `_read_ready` registered it)
            self._loop.call_soon(self._register)

    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            self._register()  # nothing yet, after the accept: wait for it
            return
        except OSError as exc:
            self._force_close(exc)
            return
        try:
            if data:
                self._protocol.data_received(data)
                return
            self._stop_reading()
            if not self._protocol.eof_received():
                self.close()
        except Exception as exc:
            self._protocol_failed(exc, "data_received" if data else "eof_received")

    # -- asyncio.WriteTransport -----------------------------------------------

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW_WATER, HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raise NotImplementedError("this transport keeps asyncio's default marks")

    def can_write_eof(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof:
            raise RuntimeError("write after write_eof")
        if data and not self._lost:
            self._send([data])

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._eof:
            raise RuntimeError("write after write_eof")
        pieces = [piece for piece in list_of_data if piece]
        if len(pieces) > 1 and (len(pieces) > _MAX_IOV or sum(map(len, pieces)) <= _JOIN_BYTES):
            # Small pieces (a stream's chunks): one copy is cheaper than a scatter list.
            # A head and a large body are sent from where they are, never joined.
            pieces = [b"".join(pieces)]
        if pieces and not self._lost:
            self._send(pieces)

    def _send(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        """Send what the socket takes now (nothing while earlier bytes wait), and hold the rest."""
        sent = 0
        if not self._buffered:
            try:
                sent = self._sock.send(pieces[0]) if len(pieces) == 1 else self._sock.sendmsg(pieces)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._force_close(exc)
                return
        rest = []
        for piece in pieces:
            size = len(piece)
            if sent >= size:
                sent -= size
                continue
            rest.append(memoryview(piece)[sent:])
            sent = 0
        if rest:
            self._hold(rest)

    def write_eof(self) -> None:
        """Shut the write side once what is buffered has been sent (reading goes on)."""
        if self._eof or self._lost:
            return
        self._eof = True
        if not self._buffered:
            self._shutdown_writing()

    def _shutdown_writing(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._force_close(exc)

    def abort(self) -> None:
        self._force_close(None)

    def _hold(self, views: list[memoryview]) -> None:
        """Buffer what the socket did not take, and send it when it can take more."""
        was_empty = not self._buffered
        self._buffer.extend(views)
        self._buffered += sum(view.nbytes for view in views)
        if was_empty:
            self._loop.add_writer(self._fd, self._write_ready)
        self._check_high_water()

    def _write_ready(self) -> None:
        buffer = self._buffer
        try:
            if len(buffer) == 1:
                sent = self._sock.send(buffer[0])
            else:
                sent = self._sock.sendmsg(buffer[:_MAX_IOV])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._force_close(exc)
            return
        self._buffered -= sent
        done = 0  # pieces sent whole
        while sent:
            first = buffer[done]
            if first.nbytes <= sent:
                sent -= first.nbytes
                done += 1
            else:
                buffer[done] = first[sent:]
                sent = 0
        del buffer[:done]
        if self._writing_paused and self._buffered <= LOW_WATER:
            self._writing_paused = False
            try:
                self._protocol.resume_writing()
            except Exception as exc:
                self._protocol_failed(exc, "resume_writing")
                return
        if not self._buffered:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._schedule_lost(None)
            elif self._eof:
                self._shutdown_writing()

    def _check_high_water(self) -> None:
        if not self._writing_paused and self._buffered > HIGH_WATER:
            self._writing_paused = True
            try:
                self._protocol.pause_writing()
            except Exception as exc:
                self._protocol_failed(exc, "pause_writing")

    # -- the end ----------------------------------------------------------------

    def _protocol_failed(self, exc: Exception, call: str) -> None:
        self._loop.call_exception_handler(
            {
                "message": f"protocol.{call}() failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            }
        )
        self._force_close(exc)

    def _force_close(self, exc: Exception | None) -> None:
        """End the connection now, dropping what is buffered."""
        if self._lost:
            return
        if self._buffered:
            self._buffer.clear()
            self._buffered = 0
            self._loop.remove_writer(self._fd)
        self._closing = True
        self._stop_reading()
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class Listener:
    """Listening sockets whose connections get a `SocketTransport` in the turn they are accepted."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = protocol_factory
        self._closed = False
        for sock in sockets:
            self._watch(sock)

    @classmethod
    async def open(
        cls, host: str | None, port: int, protocol_factory: Callable[[], asyncio.Protocol], backlog: int = 1024
    ) -> Listener:
        """Listen on every address `host` names (all of them for None or ""), as asyncio's create_server does."""
        loop = asyncio.get_running_loop()
        try:
            # An address needs no resolver (as asyncio does, no thread for it): the
            # listener is up in this turn, as the worker's side listeners expect.
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        seen = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # One socket per family, as asyncio binds them.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"error while attempting to bind on address {address!r}: {exc.strerror}"
                    ) from None
                if NODELAY_INHERITED:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return cls(loop, sockets, protocol_factory)

    def _watch(self, listening: socket.socket) -> None:
        # The family and type as plain ints, read once: `socket.accept()` reads
        # them as enums on every call, a dozen lines of enum code on a cold core.
        kind = (int(listening.family), int(listening.type), listening.proto)
        self._loop.add_reader(listening.fileno(), self._accept, listening, kind)

    def _accept(self, listening: socket.socket, kind: tuple[int, int, int]) -> None:
        # One connection a call: the selector reports the socket again while
        # others are queued, and a second accept that finds none would raise
        # (an exception on a cold core) before the first one's request moves on.
        try:
            # What socket.accept() does, but for the enums (see `_watch`).
            fd, peername = listening._accept()  # type: ignore[attr-defined]
            sock = socket.socket(*kind, fileno=fd)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # none after all, or that client gave up while queued
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            # Retrying at once would spin: wait for connections to end.
            log.error("cannot accept connections (%s): trying again in %g s", exc.strerror, ACCEPT_RETRY_S)
            self._loop.remove_reader(listening.fileno())
            self._loop.call_later(ACCEPT_RETRY_S, self._resume, listening)
            return
        try:
            sock.setblocking(False)
            if not NODELAY_INHERITED:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            SocketTransport(self._loop, sock, self._factory(), peername)
        except Exception:
            log.exception("could not take a connection from %s", peername)
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
            sock.close()

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed:
            self._watch(listening)

    def close(self) -> None:
        """Stop accepting; connections already made go on."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
