"""Timeouts that are re-armed on every request, kept cheap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

log = logging.getLogger("pyworker.http")


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


class FixedDeadlines(Generic[K]):
    """Deadlines of one length for many keys, on a single timer.

    Set in order and all as long, they fall due in the order they were set:
    the timer waits for the oldest, and when it fires it expires what is due
    and waits for the next. So `add` costs a clock read and a dict insert,
    and `discard` a dict pop, where a timer per key would cost a timer
    handle and a heap push (a new connection's head deadline: most heads
    arrive in the accept's own turn, and the deadline is dropped at once).
    """

    __slots__ = ("_delay_s", "_expire", "_due", "_loop", "_handle")

    def __init__(self, delay_s: float, expire: Callable[[K], None]) -> None:
        self._delay_s = delay_s
        self._expire = expire
        self._due: dict[K, float] = {}  # insertion order is deadline order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def add(self, key: K) -> None:
        """`expire(key)` in `delay_s` unless discarded first (a key added again: from now)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        when = loop.time() + self._delay_s
        due = self._due
        due.pop(key, None)  # to the end, where the latest deadline belongs
        due[key] = when
        if self._handle is None:
            self._handle = loop.call_at(when, self._fire)

    def discard(self, key: K) -> None:
        self._due.pop(key, None)

    def close(self) -> None:
        """Drop every deadline and the timer (the next `add` may be on another loop)."""
        self._due.clear()
        self._loop = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired: list[K] = []
        for key, when in self._due.items():
            if when > now:
                self._handle = loop.call_at(when, self._fire)
                break
            expired.append(key)
        for key in expired:
            del self._due[key]
        for key in expired:
            try:
                self._expire(key)
            except Exception:  # one key's failure must not leave the others without a deadline
                log.exception("deadline callback failed")
