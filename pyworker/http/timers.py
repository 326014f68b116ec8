"""Timeouts that are re-armed on every request, kept cheap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
