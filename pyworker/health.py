"""Polling the model server's health route.

The worker becomes ready only after the first healthy answer. One failed
check is noise; `FAILURES_TO_ERROR` in a row mark the worker errored, and
the next healthy answer clears that.
"""

from __future__ import annotations

import asyncio
import logging

from .http import ConnectionPool, UpstreamError
from .status import WorkerStatus

log = logging.getLogger("pyworker.health")

INTERVAL_S = 10.0
FAILURES_TO_ERROR = 3
ERROR_SOURCE = "model healthcheck"


class HealthMonitor:
    def __init__(
        self,
        session: ConnectionPool,
        path: str,
        status: WorkerStatus,
        interval_s: float = INTERVAL_S,
        failures_to_error: int = FAILURES_TO_ERROR,
    ) -> None:
        self.session = session
        self.path = path
        self.status = status
        self.interval_s = interval_s
        self.failures_to_error = failures_to_error
        self.failures = 0
        self.healthy_once = asyncio.Event()

    async def check(self) -> str | None:
        """None when healthy, else what was wrong."""
        try:
            async with await self.session.request("GET", self.path) as res:
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
            return True
        self.failures += 1
        log.warning("healthcheck %d failed: %s", self.failures, problem)
        if self.failures >= self.failures_to_error:
            self.status.set_error(ERROR_SOURCE, f"{self.failures} checks in a row failed, the last: {problem}")
        return False

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)
