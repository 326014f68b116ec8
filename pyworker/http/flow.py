"""Flow control for one transport, both directions, shared by server and client."""

from __future__ import annotations

import asyncio


class FlowControl:
    """Read pausing, and asyncio's pause_writing/resume_writing turned into `await drain()`.

    A writer calls `drain()` after each write; it returns at once unless the
    transport's buffer is over its high-water mark, so memory per connection
    stays bounded by that mark whatever the body size. A reader calls
    `pause_reading()` when it holds as much unread data as it will, and
    `resume_reading()` once it has consumed it; both may be called again
    in the state they set.
    """

    __slots__ = ("_transport", "_paused", "_waiter", "_lost", "read_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False
        self.read_paused = False

    # -- reading -------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.read_paused and not self._lost:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self._lost:
            self.read_paused = False
            self._transport.resume_reading()

    # -- writing -------------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(None)

    def connection_lost(self) -> None:
        self._lost = True
        self._wake(ConnectionResetError("connection lost"))

    def _wake(self, exc: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)
        self._waiter = None

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait while the peer is not reading; `TimeoutError` after `timeout_s` of that."""
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._paused:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        if timeout_s is None:
            await waiter
            return
        stall = loop.call_later(timeout_s, self._stalled, waiter, timeout_s)
        try:
            await waiter
        finally:
            stall.cancel()

    def _stalled(self, waiter: asyncio.Future[None], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError(f"peer read nothing for {timeout_s:g} s"))
        if self._waiter is waiter:
            self._waiter = None
