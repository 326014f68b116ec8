"""The healthcheck: ready after the first healthy answer, errored after several failures, recovered after one."""

from __future__ import annotations

import asyncio
import unittest

from pyworker.health import ERROR_SOURCE, HealthMonitor
from pyworker.http import HTTPServer, Request, Response, get, json_response
from pyworker.status import WorkerStatus


class Health(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.healthy = False

        async def health(_: Request) -> Response:
            return json_response({"ok": self.healthy}, status=200 if self.healthy else 503)

        self.server = HTTPServer([get("/health", health)])
        await self.server.start("127.0.0.1", 0)
        self.status = WorkerStatus()
        self.monitor = HealthMonitor(
            f"http://127.0.0.1:{self.server.port}", "/health", self.status, interval_s=0.05, failures_to_error=3
        )

    async def asyncTearDown(self) -> None:
        self.monitor.pool.close()
        await self.server.shutdown(0.1)

    async def test_one_or_two_failures_are_not_an_error_three_are(self) -> None:
        with self.assertLogs("pyworker.health", "WARNING"):
            for _ in range(2):
                self.assertFalse(await self.monitor.check_once())
        self.assertEqual(self.status.error_msg, "")
        with self.assertLogs("pyworker", "WARNING"):
            self.assertFalse(await self.monitor.check_once())
        self.assertIn(ERROR_SOURCE, self.status.error_msg)
        self.assertIn("503", self.status.error_msg)
        self.assertFalse(self.monitor.healthy_once.is_set())

    async def test_a_healthy_answer_clears_the_error_and_marks_readiness(self) -> None:
        with self.assertLogs("pyworker", "WARNING"):
            for _ in range(3):
                await self.monitor.check_once()
        self.healthy = True
        self.assertTrue(await self.monitor.check_once())
        self.assertEqual(self.status.error_msg, "")
        self.assertTrue(self.monitor.healthy_once.is_set())

    async def test_a_hung_health_route_fails_within_one_interval(self) -> None:
        async def hang(_: Request) -> Response:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        hung = HTTPServer([get("/health", hang)])
        await hung.start("127.0.0.1", 0)
        monitor = HealthMonitor(f"http://127.0.0.1:{hung.port}", "/health", self.status, interval_s=0.2)
        try:
            with self.assertLogs("pyworker.health", "WARNING") as logs:
                self.assertFalse(await asyncio.wait_for(monitor.check_once(), 1.0))
            self.assertIn("sent nothing for 0.2 s", "".join(logs.output))
        finally:
            monitor.pool.close()
            await hung.shutdown(0.1)

    async def test_unreachable_model_counts_as_a_failure(self) -> None:
        await self.server.shutdown(0.1)
        with self.assertLogs("pyworker.health", "WARNING"):
            self.assertFalse(await self.monitor.check_once())
        self.assertEqual(self.monitor.failures, 1)


if __name__ == "__main__":
    unittest.main()
