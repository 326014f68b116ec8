"""End to end with the autoscaler: real processes for the stand-in autoscaler,
the stand-in model and the worker, signatures on, reports checked."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Any

from pyworker.dev.ports import free_port
from tests.support import (
    STATUS_FIELDS,
    AutoscalerProcess,
    ModelProcess,
    WorkerProcess,
    post_json,
    reporting_stack,
    wait_for,
)

WORKER_ID = 41


def request(auth: dict[str, Any], prompt: str = "hello there", tokens: int = 4) -> dict[str, Any]:
    return {"auth_data": auth, "payload": {"prompt": prompt, "max_response_tokens": tokens}}


class Stack(unittest.TestCase):
    """An autoscaler, a model that takes 3 s to load, and a worker reporting to the autoscaler."""

    tmp: tempfile.TemporaryDirectory[str]
    first_history: list[dict[str, Any]]
    autoscaler: AutoscalerProcess
    model: ModelProcess
    worker: WorkerProcess

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        cls.autoscaler = AutoscalerProcess(os.path.join(cls.tmp.name, "key.json"))
        # The model's load starts before the worker does (the test waits for its port first), so
        # the worker's loadtime is the load less that head start: 3 s leaves room for it.
        cls.model = ModelProcess("--load-time", "3")
        port = free_port()
        env = WorkerProcess.reporting_to(cls.autoscaler, WORKER_ID, cls.tmp.name, port)
        cls.worker = WorkerProcess("workers.hello_world", cls.model.url, cls.model.log, env, port=port)
        wait_for(lambda: (cls.status() or {}).get("ready"), 60, "the worker to report itself ready")
        # Kept now: a test below restarts the autoscaler, which forgets the history.
        cls.first_history = (cls.status() or {})["history"]

    @classmethod
    def tearDownClass(cls) -> None:
        for child in (cls.worker, cls.model, cls.autoscaler):
            child.stop()
        cls.tmp.cleanup()

    @classmethod
    def status(cls) -> dict[str, Any] | None:
        return cls.autoscaler.worker(WORKER_ID)

    def records(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.autoscaler.get("/records")["records"]
        return found


class Lifecycle(Stack):
    def test_reports_say_loading_then_loadtime_once_and_max_perf(self) -> None:
        history = self.first_history
        self.assertEqual(history[0]["max_perf"], 0, "the first report comes while the model loads")
        self.assertEqual(history[0]["loadtime"], 0)
        with_loadtime = [h for h in history if h["loadtime"]]
        self.assertEqual(len(with_loadtime), 1, "loadtime is reported once")
        self.assertGreater(with_loadtime[0]["loadtime"], 2.0, "ready only after the model loaded")
        self.assertGreater(with_loadtime[0]["max_perf"], 0)
        status = self.status() or {}
        self.assertEqual(status["url"], f"http://127.0.0.1:{self.worker.port}")
        self.assertEqual(status["error_msg"], "")
        for key in STATUS_FIELDS:
            self.assertIn(key, status)

    def test_signed_requests_served_once_each_in_the_records(self) -> None:
        served = []
        for i in range(5):
            auth = self.autoscaler.route(cost=5)
            status, answer = post_json(self.worker.port, "/generate", request(auth, f"signed {i}"))
            self.assertEqual(status, 200, answer)
            served.append(auth["request_idx"])
        records = wait_for(
            lambda: (
                [r for r in self.records() if r["request_idx"] in served]
                if len([r for r in self.records() if r["request_idx"] in served]) >= 5
                else None
            ),
            10,
            "the finished requests to be reported",
        )
        self.assertEqual(sorted(r["request_idx"] for r in records), sorted(served), "each exactly once")
        self.assertTrue(all(r["status"] == "Success" and r["success"] for r in records))
        self.assertTrue(all(r["entered_queue_at"] <= r["work_started_at"] <= r["work_completed_at"] for r in records))

    def test_unsigned_and_tampered_requests_are_401(self) -> None:
        auth = self.autoscaler.route()
        cases = {
            "no signature": dict(auth, signature=""),
            "garbage base64": dict(auth, signature="@@@@"),
            "other signature": dict(auth, signature=base64.b64encode(os.urandom(256)).decode()),
            "tampered url": dict(auth, url=auth["url"] + "0"),
        }
        for name, bad in cases.items():
            with self.subTest(name):
                status, answer = post_json(self.worker.port, "/generate", request(bad))
                self.assertEqual(status, 401, answer)
                self.assertIn("error", answer)
        # The genuine one still works, and the refused ones left no trace.
        self.assertEqual(post_json(self.worker.port, "/generate", request(auth))[0], 200)
        time.sleep(1.5)
        self.assertEqual(len([r for r in self.records() if r["request_idx"] == auth["request_idx"]]), 1)

    def test_autoscaler_outage_loses_no_record(self) -> None:
        auths = [self.autoscaler.route() for _ in range(6)]
        self.autoscaler.stop()
        try:
            for i, auth in enumerate(auths):
                status, _ = post_json(self.worker.port, "/generate", request(auth, f"during outage {i}"))
                self.assertEqual(status, 200, "requests are served while the autoscaler is down")
            time.sleep(2.5)  # reports fail meanwhile
        finally:
            type(self).autoscaler = AutoscalerProcess(self.autoscaler.key_path, self.autoscaler.port)
        wanted = {a["request_idx"] for a in auths}
        records = wait_for(
            lambda: (lambda got: got if {r["request_idx"] for r in got} >= wanted else None)(
                [r for r in self.records() if r["request_idx"] in wanted]
            ),
            30,
            "the records kept during the outage",
        )
        self.assertEqual(len(records), len(wanted), "each record exactly once")
        # The new autoscaler knows the worker again by its next status report
        # (at the latest 10 s later); the tests after this one route to it.
        wait_for(lambda: (self.status() or {}).get("ready"), 20, "the worker to report to the new autoscaler")


class ModelErrors(unittest.TestCase):
    def test_model_log_error_line_reaches_error_msg(self) -> None:
        with reporting_stack(7) as stack:
            wait_for(lambda: (stack.status() or {}).get("ready"), 60, "ready")
            with open(stack.model.log, "a") as log:
                log.write("Traceback ...\nException: corrupted model file (shard 3)\n")
            status = wait_for(
                lambda: (lambda s: s if s and "corrupted model file" in s["error_msg"] else None)(stack.status()),
                15,
                "the error line in error_msg",
            )
            self.assertFalse(status["ready"])


class Restarts(unittest.TestCase):
    def test_loaded_line_twice_benchmarks_once_and_a_restart_reuses_the_result(self) -> None:
        with reporting_stack(8) as stack:
            first = wait_for(lambda: (lambda s: s if s and s["ready"] else None)(stack.status()), 60, "ready")
            with open(stack.model.log, "a") as log:
                log.write("infer server has started\n")
            time.sleep(1.0)
            self.assertEqual(stack.worker.output().count("benchmark round 1/"), 1, "one benchmark")
            worker = stack.restart_worker()
            wait_for(lambda: "worker ready" in worker.output(), 30, "the restarted worker to be ready")
            self.assertIn("already measured", worker.output())
            self.assertNotIn("benchmark round", worker.output())
            wait_for(lambda: (stack.status() or {}).get("max_perf") == first["max_perf"], 10, "the same max_perf")


class StartFailures(unittest.TestCase):
    def test_worker_that_cannot_listen_keeps_reporting_why_and_stops_on_sigterm(self) -> None:
        with tempfile.TemporaryDirectory() as tmp, socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            autoscaler = AutoscalerProcess(os.path.join(tmp, "key.json"))
            env = WorkerProcess.reporting_to(autoscaler, 9, tmp, port)
            env["WORKER_HOST"] = "127.0.0.1"
            worker = WorkerProcess("workers.hello_world", "http://127.0.0.1:1", "/dev/null", env, wait=False, port=port)
            try:
                status = wait_for(
                    lambda: (lambda s: s if s and s["error_msg"] else None)(autoscaler.worker(9)), 20, "an error report"
                )
                self.assertIn("cannot listen", status["error_msg"])
                self.assertEqual(status["max_perf"], 0)
                worker.proc.send_signal(signal.SIGTERM)
                worker.proc.wait(10)
                self.assertNotIn("Traceback", worker.output())
            finally:
                worker.stop()
                autoscaler.stop()


class Shutdown(unittest.TestCase):
    def test_sigterm_lets_a_request_in_progress_finish_and_reports_it(self) -> None:
        with reporting_stack(5, "--token-delay", "0.005", env={"PYWORKER_BENCHMARK_CONCURRENCY": "2"}) as stack:
            wait_for(lambda: (stack.status() or {}).get("ready"), 90, "ready")
            auth = stack.autoscaler.route()
            conn = http.client.HTTPConnection("127.0.0.1", stack.worker.port, timeout=20)
            conn.request("POST", "/generate", body=json.dumps(request(auth, tokens=200)))  # about 1 s
            time.sleep(0.3)
            stack.worker.proc.send_signal(signal.SIGTERM)
            res = conn.getresponse()
            self.assertEqual(res.status, 200)
            self.assertIn("generated_text", json.loads(res.read()))
            conn.close()
            self.assertEqual(stack.worker.proc.wait(15), 0)
            records = [
                r for r in stack.autoscaler.get("/records")["records"] if r["request_idx"] == auth["request_idx"]
            ]
            self.assertEqual([r["status"] for r in records], ["Success"], "the final report carried it")


class TLS(unittest.TestCase):
    def test_use_ssl_serves_https_with_the_instance_certificate(self) -> None:
        import ssl

        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "instance.crt"), os.path.join(tmp, "instance.key")
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    key,
                    "-out",
                    cert,
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ],
                check=True,
                capture_output=True,
            )
            model = ModelProcess()
            worker = WorkerProcess(
                "workers.hello_world",
                model.url,
                "/dev/null",
                {"USE_SSL": "true", "PYWORKER_SSL_CERT": cert, "PYWORKER_SSL_KEY": key},
            )
            try:
                context = ssl.create_default_context(cafile=cert)
                conn = http.client.HTTPSConnection("127.0.0.1", worker.port, timeout=10, context=context)
                conn.request("GET", "/ping")
                res = conn.getresponse()
                self.assertEqual((res.status, res.read()), (200, b"pong"))
                conn.close()
                with self.assertRaises(http.client.RemoteDisconnected):
                    plain = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=5)
                    plain.request("GET", "/ping")
                    plain.getresponse()
            finally:
                worker.stop()
                model.stop()

    def test_missing_certificate_is_one_line(self) -> None:
        model_log = "/dev/null"
        result = subprocess.run(
            [sys.executable, "-m", "pyworker", "workers.hello_world"],
            env={
                **os.environ,
                "PYTHONPATH": os.getcwd(),
                "WORKER_PORT": str(free_port()),
                "MODEL_LOG": model_log,
                "UNSECURED": "true",
                "REPORT_ADDR": "off",
                "USE_SSL": "true",
                "PYWORKER_SSL_CERT": "/nonexistent.crt",
            },
            capture_output=True,
            text=True,
            timeout=20,
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("/nonexistent.crt", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
    unittest.main()
