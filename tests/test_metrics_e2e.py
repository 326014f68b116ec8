"""/metrics end to end: a real worker, parsed by prometheus_client's own text parser."""

from __future__ import annotations

import json
import unittest
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pyworker.dev.ports import free_port, wait_port
from tests.support import ModelProcess, WorkerProcess, body, http_call, wait_for


class Metrics(unittest.TestCase):
    model: ModelProcess
    worker: WorkerProcess
    metrics_port: int

    @classmethod
    def setUpClass(cls) -> None:
        cls.model = ModelProcess()
        cls.metrics_port = free_port()
        env = {"PYWORKER_METRICS_PORT": str(cls.metrics_port)}
        cls.worker = WorkerProcess("workers.hello_world", cls.model.url, cls.model.log, env)
        wait_port(cls.metrics_port, 30)  # it listens just after the main port

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.stop()
        cls.model.stop()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, headers, raw = http_call(self.metrics_port, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        samples = {}
        for family in text_string_to_metric_families(raw.decode("utf-8")):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(self, samples: dict[Any, float], name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    def test_requests_outcomes_histograms_and_gauges(self) -> None:
        with open(self.model.log, "a") as f:
            f.write("infer server has started\n")
        wait_for(lambda: self.value(self.scrape(), "pyworker_ready") == 1.0, 30, "ready in /metrics")
        for _ in range(2):
            self.assertEqual(http_call(self.worker.port, "POST", "/generate", body(max_response_tokens=3))[0], 200)
        status, _, raw = http_call(self.worker.port, "POST", "/generate_stream", body(max_response_tokens=3))
        self.assertEqual((status, raw.endswith(b"data: [DONE]\n\n")), (200, True))
        self.assertEqual(http_call(self.worker.port, "POST", "/generate", b"{not json")[0], 422)
        no_prompt = json.dumps({"auth_data": json.loads(body())["auth_data"], "payload": {}}).encode()
        self.assertEqual(http_call(self.worker.port, "POST", "/generate", no_prompt)[0], 422)

        s = self.scrape()
        v = self.value
        self.assertEqual(v(s, "pyworker_requests_total", route="/generate", outcome="success"), 2)
        self.assertEqual(v(s, "pyworker_requests_total", route="/generate", outcome="refused"), 2)
        self.assertEqual(v(s, "pyworker_requests_total", route="/generate_stream", outcome="success"), 1)
        self.assertEqual(v(s, "pyworker_requests_in_flight"), 0)
        self.assertEqual(v(s, "pyworker_request_duration_seconds_count", route="/generate"), 2)
        self.assertEqual(v(s, "pyworker_request_duration_seconds_bucket", route="/generate", le="+Inf"), 2)
        self.assertEqual(v(s, "pyworker_stream_first_byte_seconds_count", route="/generate_stream"), 1)
        self.assertEqual(v(s, "pyworker_queue_wait_seconds_count"), 3)
        served = v(s, "pyworker_workload_total", kind="served")
        self.assertEqual(served, v(s, "pyworker_workload_total", kind="admitted"))
        self.assertGreater(served or 0, 0)
        self.assertGreater(v(s, "pyworker_benchmark_max_perf") or 0, 0)
        self.assertEqual(v(s, "pyworker_model_down"), 0)
        # Buckets are cumulative.
        buckets = sorted(
            (float(dict(labels)["le"]), n)
            for (name, labels), n in s.items()
            if name == "pyworker_request_duration_seconds_bucket" and dict(labels)["route"] == "/generate"
        )
        self.assertEqual([n for _, n in buckets], sorted(n for _, n in buckets))

    def test_model_errors_are_counted_by_kind(self) -> None:
        before = self.value(self.scrape(), "pyworker_model_errors_total", kind="unavailable") or 0
        dead = WorkerProcess(
            "workers.hello_world",
            f"http://127.0.0.1:{free_port()}",
            self.model.log,
            {"PYWORKER_METRICS_PORT": str(port := free_port())},
        )
        try:
            self.assertEqual(http_call(dead.port, "POST", "/generate", body())[0], 502)
            wait_port(port, 30)
            status, _, raw = http_call(port, "GET", "/metrics")
            families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
            errors = {s.labels["kind"]: s.value for s in families["pyworker_model_errors"].samples}
            self.assertEqual(errors.get("unavailable"), 1)
            self.assertEqual(before, 0, "the other worker's count is its own")
        finally:
            dead.stop()

    def test_the_public_port_does_not_serve_metrics(self) -> None:
        status, _, _ = http_call(self.worker.port, "GET", "/metrics")
        self.assertEqual(status, 404)


if __name__ == "__main__":
    unittest.main()
