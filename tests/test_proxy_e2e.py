"""End to end: real worker and stand-in model processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

from pyworker.dev.ports import free_port
from tests.support import ROOT, ModelProcess, WorkerProcess, body, http_call, post_bytes


def model_stats(model: ModelProcess) -> Any:
    return json.loads(http_call(model.port, "GET", "/stats")[2])


class HelloWorldThroughWorker(unittest.TestCase):
    model: ModelProcess
    worker: WorkerProcess

    @classmethod
    def setUpClass(cls) -> None:
        cls.model = ModelProcess("--token-delay", "0.25")
        # The worker follows an empty log: it never sees "loaded", so no benchmark
        # runs beside these tests (readiness is tested in test_autoscaler_e2e).
        cls.worker = WorkerProcess("workers.hello_world", cls.model.url, "/dev/null")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.stop()
        cls.model.stop()

    def test_json_answer_is_the_models_answer(self) -> None:
        data = body("say something", max_response_tokens=0)
        direct = http_call(
            self.model.port,
            "POST",
            "/generate",
            json.dumps({"prompt": "say something", "max_response_tokens": 0}).encode(),
        )
        status, headers, answer = http_call(self.worker.port, "POST", "/generate", data)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(answer), json.loads(direct[2]))

    def test_stream_chunks_reach_the_client_while_the_model_is_still_producing(self) -> None:
        data = body("stream please", max_response_tokens=4)
        sock = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        sock.sendall(post_bytes("/generate_stream", data))
        start = time.monotonic()
        buf = b""
        arrivals: list[float] = []  # when each token event arrived
        while b"data: [DONE]" not in buf:
            piece = sock.recv(65536)
            self.assertTrue(piece, "worker closed the stream early")
            before = buf.count(b'"token"')
            buf += piece
            arrivals += [time.monotonic() - start] * (buf.count(b'"token"') - before)
        sock.close()
        head, _, _ = buf.partition(b"\r\n\r\n")
        self.assertIn(b"200", head.split(b"\r\n")[0])
        self.assertIn(b"text/event-stream", head)
        self.assertEqual(len(arrivals), 4)
        # The model writes a token every 0.25 s; each must arrive on its own,
        # not held back until the next one or the end (with room for a busy machine's stall).
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        self.assertTrue(all(g > 0.12 for g in gaps), f"arrivals {arrivals}")
        self.assertLess(arrivals[0], 0.2, f"first token late: {arrivals}")

    def test_invalid_json_is_422(self) -> None:
        status, _, answer = http_call(self.worker.port, "POST", "/generate", b"{not json")
        self.assertEqual(status, 422)
        self.assertTrue(json.loads(answer)["error"].startswith("invalid JSON: Expecting property name"), answer)

    def test_missing_and_mistyped_fields_are_422_naming_each(self) -> None:
        data = json.dumps({"auth_data": {"cost": "1"}, "payload": {"max_response_tokens": "ten"}}).encode()
        status, _, answer = http_call(self.worker.port, "POST", "/generate", data)
        errors = json.loads(answer)
        self.assertEqual(status, 422)
        self.assertEqual(set(errors["auth_data"]), {"endpoint", "reqnum", "request_idx", "signature", "url"})
        self.assertEqual(errors["payload"]["prompt"], "missing parameter")
        self.assertIn("max_response_tokens", errors["payload"])

    def test_ping_and_forwarded_healthcheck(self) -> None:
        self.assertEqual(http_call(self.worker.port, "GET", "/ping")[::2], (200, b"pong"))
        status, _, answer = http_call(self.worker.port, "GET", "/healthcheck")
        self.assertEqual((status, json.loads(answer)), (200, {"status": "ok"}))

    def test_client_leaving_mid_stream_stops_the_model_request(self) -> None:
        data = body("long stream", max_response_tokens=200)
        sock = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        sock.sendall(post_bytes("/generate_stream", data))
        self.assertIn(b'"token"', sock.recv(65536) + sock.recv(65536))
        self.assertEqual(model_stats(self.model)["active"], 1)
        sock.close()
        deadline = time.monotonic() + 3
        while model_stats(self.model)["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(model_stats(self.model)["active"], 0, "the worker kept the model request open")


class BurstThroughWorker(unittest.TestCase):
    """A model that flushes many events in one send (a batching server): the chunk scanner's path."""

    def test_a_burst_arrives_whole_and_in_order(self) -> None:
        model = ModelProcess("--events-per-write", "50")
        worker = WorkerProcess("workers.hello_world", model.url, "/dev/null")
        try:
            # One event per write, straight from the model: what the burst must read as.
            one = {"prompt": "burst", "max_response_tokens": 300, "events_per_write": 1}
            status, _, expected = http_call(model.port, "POST", "/generate_stream", json.dumps(one).encode())
            self.assertEqual((status, expected.count(b"data: ")), (200, 301))
            for flush in (50, 50, 7):  # again on a kept-alive model connection; then as the bench sets it
                if flush != 50:
                    setting = json.dumps({"events_per_write": flush}).encode()
                    self.assertEqual(http_call(model.port, "POST", "/admin/events_per_write", setting)[0], 200)
                status, headers, answer = http_call(
                    worker.port, "POST", "/generate_stream", body("burst", max_response_tokens=300)
                )
                self.assertEqual((status, headers.get("transfer-encoding")), (200, "chunked"))
                self.assertEqual(answer, expected)
            for bad in (0, "7", True):
                setting = json.dumps({"events_per_write": bad}).encode()
                self.assertEqual(http_call(model.port, "POST", "/admin/events_per_write", setting)[0], 422)
        finally:
            worker.stop()
            model.stop()


class ModelFailures(unittest.TestCase):
    def test_dead_model_server_is_502(self) -> None:
        worker = WorkerProcess("workers.hello_world", f"http://127.0.0.1:{free_port()}", "/dev/null")
        try:
            status, _, answer = http_call(worker.port, "POST", "/generate", body())
            self.assertEqual(status, 502)
            self.assertIn("cannot connect", json.loads(answer)["error"])
            self.assertEqual(http_call(worker.port, "GET", "/healthcheck")[0], 502)
        finally:
            worker.stop()

    def test_slow_model_server_is_504(self) -> None:
        model = ModelProcess("--first-token", "3")
        worker = WorkerProcess("workers.hello_world", model.url, "/dev/null", {"MODEL_READ_TIMEOUT_S": "0.3"})
        try:
            status, _, answer = http_call(worker.port, "POST", "/generate", body())
            self.assertEqual(status, 504)
            self.assertIn("nothing for 0.3 s", json.loads(answer)["error"])
        finally:
            worker.stop()
            model.stop()


class Configuration(unittest.TestCase):
    def run_worker(
        self, env: dict[str, str], module: str = "workers.hello_world", path: str = ""
    ) -> subprocess.CompletedProcess[str]:
        full = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p),
            "WORKER_PORT": str(free_port()),
            "UNSECURED": "true",
            "REPORT_ADDR": "off",
            **env,
        }
        return subprocess.run(
            [sys.executable, "-m", "pyworker", module],
            cwd=str(ROOT),
            env=full,
            capture_output=True,
            text=True,
            timeout=20,
        )

    def assert_one_line(self, result: subprocess.CompletedProcess[str], names: str) -> None:
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn(names, result.stderr)

    def test_missing_model_log_is_one_line_naming_it(self) -> None:
        # Only a backend without a healthcheck_url needs the log to know the model is loaded.
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "no_health_worker.py").write_text(
                "from pyworker import Backend\n"
                "from workers.hello_world.server import GenerateHandler\n"
                "backend = Backend(model_server_url='http://127.0.0.1:5001', benchmark_handler=GenerateHandler())\n"
                "routes = []\n"
            )
            result = self.run_worker({}, "no_health_worker", tmp)
        self.assert_one_line(result, "MODEL_LOG is not set")
        self.assertIn("no healthcheck_url", result.stderr)

    def test_malformed_setting_is_one_line_naming_it(self) -> None:
        result = self.run_worker({"MODEL_LOG": "/dev/null", "WORKER_PORT": "three thousand"})
        self.assert_one_line(result, "pyworker: WORKER_PORT must be a whole number, not 'three thousand'")

    def test_unknown_worker_module_is_one_line(self) -> None:
        full = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-m", "pyworker", "workers.nope"],
            cwd=str(ROOT),
            env=full,
            capture_output=True,
            text=True,
            timeout=20,
        )
        self.assert_one_line(result, "workers.nope")


if __name__ == "__main__":
    unittest.main()
