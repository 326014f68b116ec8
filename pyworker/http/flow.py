"""Write-side flow control for one transport, shared by server and client."""

from __future__ import annotations

import asyncio


class WriteFlow:
    """Turns asyncio's pause_writing/resume_writing callbacks into `await drain()`.

    A writer calls `drain()` after each write; it returns at once unless the
    transport's buffer is over its high-water mark, so memory per connection
    stays bounded by that mark whatever the body size.
    """

    __slots__ = ("_transport", "_paused", "_waiter", "_lost")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._lost = False

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

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("connection lost")
        if not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        await waiter
