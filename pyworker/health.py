"""Polling the model server's health route.

The worker becomes ready only after the first healthy answer. One failed
check is noise; `FAILURES_TO_ERROR` in a row mark the worker errored and
declare the model down (see `Backend.declare_model_down`), and the next
healthy answer clears both. Checks start every `interval_s` whatever each
one took, and each may take at most that long (at most `TIMEOUT_S`), so a
model that hangs is declared down within (FAILURES_TO_ERROR + 1) intervals:
40 s with the defaults.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .http import ClientLimits, ConnectionPool, UpstreamError
from .status import WorkerStatus

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("pyworker.health")

INTERVAL_S = 10.0
TIMEOUT_S = 10.0
FAILURES_TO_ERROR = 3
ERROR_SOURCE = "model healthcheck"


class HealthMonitor:
    """Checks the model's health route on a fixed cadence and tells the backend when it is down."""

    def __init__(
        self,
        model_url: str,
        path: str,
        status: WorkerStatus,
        interval_s: float = INTERVAL_S,
        failures_to_error: int = FAILURES_TO_ERROR,
        backend: Backend | None = None,
    ) -> None:
        timeout_s = min(TIMEOUT_S, interval_s)
        limits = ClientLimits(connect_timeout_s=timeout_s, read_timeout_s=timeout_s, max_idle_connections=1)
        self.pool = ConnectionPool(model_url, limits)
        self.path = path
        self.status = status
        self.interval_s = interval_s
        self.failures_to_error = failures_to_error
        self.backend = backend
        self.failures = 0
        self.healthy_once = asyncio.Event()

    async def check(self) -> str | None:
        """None when healthy, else what was wrong."""
        try:
            async with await self.pool.request("GET", self.path) as res:
                await res.read(64 * 1024)
                return None if 200 <= res.status < 300 else f"{self.path} answered {res.status}"
        except UpstreamError as exc:
            return str(exc)

    async def check_once(self) -> bool:
        problem = await self.check()
        if problem is None:
            self.failures = 0
            self.status.clear_error(ERROR_SOURCE)
            self.healthy_once.set()
            if self.backend is not None:
                self.backend.declare_model_up()
            return True
        self.failures += 1
        log.warning("healthcheck %d failed: %s", self.failures, problem)
        if self.failures >= self.failures_to_error:
            reason = f"{self.failures} checks in a row failed, the last: {problem}"
            self.status.set_error(ERROR_SOURCE, reason)
            if self.backend is not None and self.healthy_once.is_set():
                self.backend.declare_model_down(reason, self.interval_s)
        return False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.check_once()
            await asyncio.sleep(max(0.0, started + self.interval_s - loop.time()))
