"""Admission and ordering of requests to one model server.

`admit()` decides at once, with no await between the estimate and the
booking, so a burst of simultaneous requests cannot all slip under the
`max_queue_time` limit. A ticket then waits its turn: parallel tickets start
at once, one-at-a-time tickets start in strict FIFO order.
"""

from __future__ import annotations

import asyncio
from collections import deque

# The estimate divides by throughput; this floor avoids dividing by zero.
MIN_PERF = 1e-5


class QueueFull(Exception):
    """The estimated wait is over the route's `max_queue_time`."""

    def __init__(self, wait_s: float, limit_s: float) -> None:
        super().__init__(f"estimated wait {wait_s:.1f} s is over the limit of {limit_s:g} s")
        self.wait_s = wait_s
        self.limit_s = limit_s


class WorkQueue:
    """Workload admitted to one model server and the FIFO of one-at-a-time requests.

    `max_perf` is the model's throughput in workload units per second, from
    the benchmark; while it is 0 (not measured yet) nothing is refused.
    """

    def __init__(self, max_perf: float = 0.0) -> None:
        self.max_perf = max_perf
        self.load = 0.0  # workload admitted and not finished (queued and running)
        self.queued = 0  # tickets waiting for their turn
        self.running = 0
        self._serial_busy = False
        self._serial_waiters: deque[asyncio.Future[None]] = deque()

    def estimated_wait(self) -> float:
        """Seconds until the work already admitted is done, at benchmark speed."""
        if self.max_perf <= 0:
            return 0.0
        return self.load / max(self.max_perf, MIN_PERF)

    def admit(self, workload: float, max_queue_time: float, parallel: bool) -> Ticket:
        """Book `workload`, or raise `QueueFull` if the wait would be too long."""
        wait = self.estimated_wait()
        if wait > max_queue_time:
            raise QueueFull(wait, max_queue_time)
        self.load += workload
        return Ticket(self, workload, parallel)

    def _acquire_serial(self) -> asyncio.Future[None] | None:
        """None when the caller may run now, else a future set when its turn comes."""
        if not self._serial_busy and not self._serial_waiters:
            self._serial_busy = True
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._serial_waiters.append(waiter)
        return waiter

    def _release_serial(self) -> None:
        """Hand the turn to the oldest waiter still waiting, or free it."""
        while self._serial_waiters:
            waiter = self._serial_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return  # the turn passes on; _serial_busy stays True
        self._serial_busy = False


class Ticket:
    """One admitted request: `async with ticket:` waits for its turn and frees it."""

    __slots__ = ("_queue", "workload", "parallel", "_state")

    _WAITING, _RUNNING, _DONE = range(3)

    def __init__(self, queue: WorkQueue, workload: float, parallel: bool) -> None:
        self._queue = queue
        self.workload = workload
        self.parallel = parallel
        self._state = Ticket._WAITING
        queue.queued += 1

    async def wait_turn(self) -> None:
        queue = self._queue
        if not self.parallel:
            waiter = queue._acquire_serial()
            if waiter is not None:
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled():
                        # The turn was handed to us just as we were cancelled: pass it on.
                        queue._release_serial()
                    else:
                        waiter.cancel()  # _release_serial skips it
                    self.release()
                    raise
        self._start()

    def _start(self) -> None:
        queue = self._queue
        queue.queued -= 1
        queue.running += 1
        self._state = Ticket._RUNNING

    def book(self, workload: float) -> None:
        """Add `workload` to what this ticket holds (admitted before its count was known)."""
        if self._state != Ticket._DONE:
            self.workload += workload
            self._queue.load += workload

    def release(self) -> None:
        """Give back the workload and the turn; safe to call more than once."""
        state = self._state
        if state == Ticket._DONE:
            return
        queue = self._queue
        self._state = Ticket._DONE
        queue.load -= self.workload
        if queue.load < 1e-9:
            queue.load = 0.0  # no float dust once idle
        if state == Ticket._RUNNING:
            queue.running -= 1
            if not self.parallel:
                queue._release_serial()
        else:
            queue.queued -= 1

    @property
    def started(self) -> bool:
        return self._state != Ticket._WAITING

    async def __aenter__(self) -> Ticket:
        if self.parallel:  # never waits: no coroutine for it
            self._start()
        else:
            await self.wait_turn()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
