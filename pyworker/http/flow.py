"""Write-side flow control for one transport, shared by server and client."""

from __future__ import annotations

import asyncio
from typing import Callable


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


class Deadline:
    """A timer that is cheap to move, for timeouts re-armed on every request.

    `set()` to a later time only records it: the callback already scheduled
    re-schedules itself when it fires early. Timeouts on a busy keep-alive
    connection move on every request and almost never fire, so this saves
    a `call_later` and a `cancel` each time.
    """

    __slots__ = ("_loop", "_callback", "_when", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def set(self, delay_s: float) -> None:
        when = self._loop.time() + delay_s
        self._when = when
        handle = self._handle
        if handle is None or handle.when() > when:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        self._when = None

    def cancel(self) -> None:
        self._when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None:
            return
        if self._loop.time() < when:
            self._handle = self._loop.call_at(when, self._fire)
            return
        self._when = None
        self._callback()
