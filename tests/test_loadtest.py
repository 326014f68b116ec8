"""The load test: against the real local stack, its arrival schedule, Ctrl-C, and errors by kind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path
from typing import Any

from pyworker.dev.ports import free_port
from pyworker.http import HTTPServer, Request, Response, json_response, post
from pyworker.loadtest import LoadTest
from tests.support import ROOT, Child, wait_for
from workers.hello_world.test_load import make_payload


class LocalStack(unittest.TestCase):
    """`python -m pyworker.dev --workers 2`, then `scripts/loadtest.py` against it, as the README says."""

    stack: Child
    scaler_port: int

    @classmethod
    def setUpClass(cls) -> None:
        cls.scaler_port = free_port()
        cls.stack = Child(
            [
                "-m",
                "pyworker.dev",
                "workers.hello_world",
                "--workers",
                "2",
                "--worker-port",
                "0",
                "--autoscaler-port",
                str(cls.scaler_port),
                "--load-time",
                "0.2",
            ]
        )
        wait_for(lambda: "ready. Try:" in cls.stack.output() or cls.stack.proc.poll() is not None, 120, "the stack")
        if cls.stack.proc.poll() is not None:
            raise AssertionError("the stack exited:\n" + cls.stack.output())

    @classmethod
    def tearDownClass(cls) -> None:
        cls.stack.proc.send_signal(signal.SIGINT)
        cls.stack.proc.wait(30)
        cls.stack.stop()

    def loadtest(self, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "summary.json")
            result = subprocess.run(
                [
                    sys.executable,
                    "scripts/loadtest.py",
                    "--autoscaler",
                    f"http://127.0.0.1:{self.scaler_port}",
                    "--json",
                    out,
                    *args,
                ],
                cwd=str(ROOT),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            summary = json.loads(Path(out).read_text()) if os.path.exists(out) else {}
        return result, summary

    def test_load_test_succeeds_and_spreads_over_the_workers(self) -> None:
        result, summary = self.loadtest("-n", "60", "-rps", "20")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual((summary["sent"], summary["succeeded"], summary["failed"]), (60, 60, 0))
        self.assertEqual(len(summary["workers"]), 2, summary["workers"])
        self.assertTrue(all(n >= 10 for n in summary["workers"].values()), summary["workers"])
        self.assertIsNotNone(summary["latency_ms"]["p99"])
        self.assertIn("succeeded 60", result.stdout)

    def test_arrivals_keep_to_the_schedule(self) -> None:
        # Open loop: never faster than asked, every arrival measured against
        # its slot. (How late a slow machine is does not decide the test.)
        result, summary = self.loadtest("-n", "100", "-rps", "50")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((summary["sent"], summary["succeeded"]), (100, 100))
        self.assertLessEqual(summary["achieved_rps"], 50 * 1.01)
        self.assertGreaterEqual(summary["arrival_lag_ms"]["p50"], 0)
        self.assertLessEqual(summary["arrival_lag_ms"]["p50"], summary["arrival_lag_ms"]["p99"])

    def test_streams_report_time_to_first_byte(self) -> None:
        result, summary = self.loadtest("-n", "6", "-rps", "6", "--route", "/generate_stream", "--stream")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertLessEqual(summary["ttfb_ms"]["p50"], summary["latency_ms"]["p50"])

    def test_sessions_pin_their_requests_to_one_worker(self) -> None:
        result, summary = self.loadtest("-n", "40", "-rps", "40", "--session", "5", "--session-cost", "3")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual((summary["sent"], summary["succeeded"], summary["failed"]), (40, 40, 0), summary["errors"])
        self.assertEqual(summary["sessions"], {"size": 5, "opened": 8, "ended": 8, "end_errors": {}})
        # Every session's 5 requests went to the worker that opened it.
        self.assertTrue(all(n % 5 == 0 for n in summary["workers"].values()), summary["workers"])
        self.assertIn("sessions   of 5 requests: opened 8  ended 8", result.stdout)
        scaler = f"http://127.0.0.1:{self.scaler_port}"

        def idle() -> bool:
            with urllib.request.urlopen(scaler + "/status", timeout=10) as res:
                workers = json.loads(res.read())["workers"]
            return all(w.get("num_requests_working") == 0 for w in workers)

        wait_for(idle, 20, "the workers to report no session open")

    def test_ctrl_c_stops_arrivals_and_still_prints_the_summary(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "summary.json")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "scripts/loadtest.py",
                    "--autoscaler",
                    f"http://127.0.0.1:{self.scaler_port}",
                    "-n",
                    "1000",
                    "-rps",
                    "10",
                    "--json",
                    out,
                ],
                cwd=str(ROOT),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert proc.stderr is not None
                self.assertIn("loadtest:", proc.stderr.readline())  # printed as arrivals begin
                time.sleep(1.0)
                proc.send_signal(signal.SIGINT)
                stdout, _ = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
            summary = json.loads(Path(out).read_text())
        self.assertEqual(proc.returncode, 130, stdout)
        self.assertIn("stopped early", stdout)
        self.assertTrue(summary["stopped_early"])
        self.assertLess(summary["sent"], 1000)
        self.assertEqual(summary["succeeded"], summary["sent"], "requests in flight were waited for")


class ErrorKinds(unittest.IsolatedAsyncioTestCase):
    async def test_route_and_worker_errors_are_counted_by_kind(self) -> None:
        calls = 0

        async def worker_ok(_: Request) -> Response:
            return json_response({"ok": True})

        async def worker_busy(_: Request) -> Response:
            return json_response({"error": "queue full"}, status=429)

        ok = HTTPServer([post("/generate", worker_ok)])
        busy = HTTPServer([post("/generate", worker_busy)])
        await ok.start("127.0.0.1", 0)
        await busy.start("127.0.0.1", 0)
        dead = f"http://127.0.0.1:{free_port()}"

        async def route(_: Request) -> Response:
            nonlocal calls
            calls += 1
            kind = calls % 4
            if kind == 0:
                return json_response({"error": "no ready worker"}, status=503)
            url = {1: f"http://127.0.0.1:{ok.port}", 2: f"http://127.0.0.1:{busy.port}", 3: dead}[kind]
            return json_response(
                {"url": url, "signature": "", "reqnum": calls, "request_idx": calls, "cost": "1", "endpoint": "e"}
            )

        scaler = HTTPServer([post("/route/", route)])
        await scaler.start("127.0.0.1", 0)
        try:
            test = LoadTest(f"http://127.0.0.1:{scaler.port}", "e", "k", "/generate", make_payload, total=40, rps=200)
            stats = await test.run(asyncio.Event())
        finally:
            for server in (ok, busy, scaler):
                await server.shutdown(0.1)
        self.assertEqual(stats.done, 10)
        self.assertEqual(
            dict(stats.errors),
            {"route error 503": 10, "worker error 429": 10, "worker connection error": 10},
        )
        self.assertEqual(stats.summary()["failed"], 30)


if __name__ == "__main__":
    unittest.main()
