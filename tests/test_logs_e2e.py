"""The worker's log end to end: JSON lines that parse, one access line a request, no secrets."""

from __future__ import annotations

import json
import unittest
from typing import Any

from tests.support import AUTH, ModelProcess, WorkerProcess, http_call, wait_for

SECRET_PROMPT = "my-secret-prompt-words"
SECRET_SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZQ=="


def request(request_idx: int, **payload: Any) -> bytes:
    auth = dict(AUTH, request_idx=request_idx, signature=SECRET_SIGNATURE)
    return json.dumps({"auth_data": auth, "payload": {"prompt": SECRET_PROMPT, **payload}}).encode()


class Logs(unittest.TestCase):
    def run_worker(self, fmt: str) -> tuple[ModelProcess, WorkerProcess]:
        model = ModelProcess()
        env = {"PYWORKER_LOG_LEVEL": "INFO", "PYWORKER_LOG_FORMAT": fmt}
        worker = WorkerProcess("workers.hello_world", model.url, model.log, env)
        self.addCleanup(model.stop)
        self.addCleanup(worker.stop)
        return model, worker

    def test_json_lines_with_one_access_line_a_request_and_no_secrets(self) -> None:
        model, worker = self.run_worker("json")
        self.assertEqual(http_call(worker.port, "POST", "/generate", request(41, max_response_tokens=3))[0], 200)
        status, _, raw = http_call(worker.port, "POST", "/generate_stream", request(42, max_response_tokens=3))
        self.assertEqual(status, 200)
        self.assertEqual(http_call(worker.port, "POST", "/generate", b"[1, 2")[0], 422)

        def access_lines() -> list[dict[str, Any]]:
            found = []
            for line in worker.output().splitlines():
                entry = json.loads(line)  # every line is one JSON object
                if entry["logger"] == "pyworker.access":
                    found.append(entry)
            return found if len(found) >= 3 else []

        lines = wait_for(access_lines, 10, "three access lines")
        by_idx = {entry["request_idx"]: entry for entry in lines}
        plain = by_idx[41]
        self.assertEqual(
            (plain["route"], plain["status"], plain["outcome"], plain["level"]), ("/generate", 200, "success", "INFO")
        )
        self.assertGreater(plain["workload"], 0)
        self.assertGreater(plain["bytes"], 0)
        for key in ("queue_ms", "model_ms", "ms", "time"):
            self.assertIn(key, plain)
        stream = by_idx[42]
        self.assertEqual((stream["route"], stream["status"], stream["outcome"]), ("/generate_stream", 200, "success"))
        self.assertEqual(stream["bytes"], len(raw), "the stream's body bytes")
        refused = by_idx[None]
        self.assertEqual((refused["status"], refused["outcome"]), (422, "refused"))
        output = worker.output()
        self.assertNotIn(SECRET_PROMPT, output)
        self.assertNotIn(SECRET_SIGNATURE, output)

    def test_text_access_lines(self) -> None:
        model, worker = self.run_worker("text")
        self.assertEqual(http_call(worker.port, "POST", "/generate", request(7, max_response_tokens=2))[0], 200)
        line = wait_for(
            lambda: next((ln for ln in worker.output().splitlines() if "pyworker.access" in ln), None),
            10,
            "access line",
        )
        self.assertRegex(line, r"INFO pyworker.access: route=/generate status=200 outcome=success request_idx=7 ")
        self.assertNotIn(SECRET_PROMPT, worker.output())


if __name__ == "__main__":
    unittest.main()
