"""A model server that accepts connections and never answers: reported, and its requests end promptly."""

from __future__ import annotations

import concurrent.futures
import json
import time
import unittest
import urllib.request
from typing import Any

from tests.support import post_json, reporting_stack, wait_for

WORKER_ID = 51
INTERVAL_S = 0.3


def generate(port: int, auth: dict[str, Any], **payload: Any) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, answer = post_json(port, "/generate", {"auth_data": auth, "payload": {"prompt": "hi", **payload}}, 30)
    return status, answer, time.monotonic() - started


def set_hang(model_url: str, hang: bool) -> None:
    req = urllib.request.Request(model_url + "/admin/hang", data=json.dumps({"hang": hang}).encode())
    with urllib.request.urlopen(req, timeout=5) as res:
        assert json.loads(res.read()) == {"hang": hang}


class HungModel(unittest.TestCase):
    def test_hang_is_reported_waiting_requests_get_503_and_recovery_clears_it(self) -> None:
        env = {"PYWORKER_HEALTH_INTERVAL_S": str(INTERVAL_S), "MODEL_READ_TIMEOUT_S": "300"}
        with reporting_stack(WORKER_ID, env=env) as stack, concurrent.futures.ThreadPoolExecutor(4) as pool:
            wait_for(lambda: (stack.status() or {}).get("ready"), 60, "ready")
            port = stack.worker.port

            # A slow but healthy model (2.4 s of tokens, 8 health intervals) is not declared down.
            status, answer, _ = generate(port, stack.autoscaler.route(), max_response_tokens=8, token_delay_s=0.3)
            self.assertEqual(status, 200, answer)
            self.assertEqual((stack.status() or {}).get("error_msg"), "")

            # Routed now: the autoscaler routes to no errored worker, and these arrive anyway.
            during = [stack.autoscaler.route(), stack.autoscaler.route()]
            set_hang(stack.model.url, True)
            waiting = pool.submit(generate, port, during[0], max_response_tokens=2)
            status, answer, took = waiting.result(timeout=20)
            # Three failed checks of at most one interval each, then the silent request ends.
            self.assertEqual(status, 503, answer)
            self.assertIn("model server is down", answer["error"])
            self.assertLess(took, 10 * INTERVAL_S + 2)
            reported = wait_for(
                lambda: (lambda s: s if s and "healthcheck" in s["error_msg"] else None)(stack.status()),
                10,
                "the hang in error_msg",
            )
            self.assertRegex(reported["error_msg"], r"\d+ checks in a row failed, the last: model server sent nothing")

            # While down, a new request is answered at once instead of waiting on the model.
            status, answer, took = generate(port, during[1])
            self.assertEqual(status, 503, answer)
            self.assertLess(took, 1.0)

            set_hang(stack.model.url, False)
            wait_for(lambda: (lambda s: s and s["ready"] and not s["error_msg"])(stack.status()), 10, "recovery")
            status, answer, _ = generate(port, stack.autoscaler.route(), max_response_tokens=2)
            self.assertEqual(status, 200, answer)

            # Every one of those requests ended in exactly one reported outcome.
            records = wait_for(
                lambda: (lambda r: r if len(r) >= 4 else None)(stack.autoscaler.get("/records")["records"]),
                10,
                "the records",
            )
            self.assertEqual([r["status"] for r in records].count("Success"), 2, records)
            self.assertEqual([r["status"] for r in records].count("Error"), 2, records)


if __name__ == "__main__":
    unittest.main()
