"""Sessions end to end: the stand-in autoscaler signs, the stand-in model records
close callbacks, the worker checks signatures and reports (PROTOCOL.md § Sessions)."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
import threading
import time
import unittest
from collections.abc import Callable
from typing import Any

from pyworker.dev.ports import free_port
from tests.support import AutoscalerProcess, ModelProcess, WorkerProcess, post_json, reporting_stack, wait_for

WORKER_ID = 61
MAX_SESSIONS = 4
TOKEN_DELAY_S = 0.005


def generate(auth: dict[str, Any], session_id: Any, prompt: str = "in a session", **extra: Any) -> dict[str, Any]:
    body = {"auth_data": auth, "payload": {"prompt": prompt, "max_response_tokens": 3, **extra}}
    if session_id is not ...:
        body["session_id"] = session_id
    return body


class SessionStack(unittest.TestCase):
    autoscaler: AutoscalerProcess
    model: ModelProcess
    worker: WorkerProcess
    end_port: int

    @classmethod
    def setUpClass(cls) -> None:
        processes = contextlib.ExitStack()
        cls.addClassCleanup(processes.close)  # also when the setup fails halfway
        cls.end_port = free_port()
        stack = processes.enter_context(
            reporting_stack(
                WORKER_ID,
                # 5 ms a token: a request's length is set by its max_response_tokens.
                "--token-delay",
                str(TOKEN_DELAY_S),
                env={"PYWORKER_MAX_SESSIONS": str(MAX_SESSIONS), "WORKER_HTTP_PORT": str(cls.end_port)},
            )
        )
        cls.autoscaler, cls.model, cls.worker = stack.autoscaler, stack.model, stack.worker
        wait_for(lambda: (cls.autoscaler.worker(WORKER_ID) or {}).get("ready"), 60, "the worker to be ready")

    # -- helpers ------------------------------------------------------------------

    def post(self, path: str, body: Any, port: int | None = None) -> tuple[int, Any]:
        return post_json(port or self.worker.port, path, body)

    def create(self, cost: float = 7, **payload: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A session opened as the SDK does: route, then create. Ended when the test ends."""
        auth = self.autoscaler.route(cost=cost)
        status, answer = self.post("/session/create", {"auth_data": auth, "payload": payload, "session_id": None})
        self.assertEqual(status, 201, answer)
        session_id = answer["session_id"]
        self.addCleanup(self.post, "/session/end", {"session_id": session_id, "session_auth": auth})
        return session_id, auth, answer

    def named(self, path: str, session_id: str, auth: Any, port: int | None = None) -> tuple[int, Any]:
        return self.post(path, {"session_id": session_id, "session_auth": auth}, port)

    def report(self) -> dict[str, Any]:
        found: dict[str, Any] = self.autoscaler.worker(WORKER_ID) or {}
        return found

    def records_of(self, request_idx: int) -> list[dict[str, Any]]:
        return [r for r in self.autoscaler.get("/records")["records"] if r["request_idx"] == request_idx]

    def callbacks_of(self, session_id: str) -> list[dict[str, Any]]:
        with_id = []
        for c in json.loads(self.http_get(self.model.port, "/callbacks"))["callbacks"]:
            if isinstance(c["body"], dict) and c["body"].get("session_id") == session_id:
                with_id.append(c)
        return with_id

    @staticmethod
    def http_get(port: int, path: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.split(b"\r\n\r\n", 1)[1]

    def report_where(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first report the autoscaler holds for which `predicate` is true."""

        def matching() -> dict[str, Any] | None:
            report = self.report()
            return report if report and predicate(report) else None

        found: dict[str, Any] = wait_for(matching, 10, what)
        return found

    def wait_idle_report(self) -> None:
        self.report_where(lambda r: r.get("num_requests_working") == 0, "a report with no request working")


class Lifecycle(SessionStack):
    def test_create_use_get_health_end(self) -> None:
        before = time.time()
        session_id, auth, answer = self.create(cost=7, lifetime=30)
        self.assertRegex(session_id, r"^[A-Za-z0-9]{22}$", "at least 128 bits, from [A-Za-z0-9]")
        self.assertAlmostEqual(answer["expiration"], before + 30, delta=2)

        status, answer = self.post("/generate", generate(auth, session_id))
        self.assertEqual((status, answer["tokens"]), (200, 3), answer)
        status, raw = self.post("/generate_stream", generate(auth, session_id))
        self.assertEqual(status, 200)
        self.assertTrue(raw.endswith(b"data: [DONE]\n\n"), raw[-60:])

        # get: the same auth_data, as JSON values (key order and 7 vs 7.0 do not matter)
        status, got = self.named("/session/get", session_id, dict(reversed(list(auth.items()))))
        self.assertEqual(status, 200, got)
        self.assertEqual(got["auth_data"], auth)
        self.assertEqual((got["session_id"], got["lifetime"], got["on_close_route"]), (session_id, 30, None))
        self.assertAlmostEqual(got["created_at"], before, delta=2)
        as_float = dict(auth, reqnum=float(auth["reqnum"]))
        self.assertEqual(self.named("/session/get", session_id, as_float)[0], 200)
        # wrong auth: unsigned or tampered → 401; another genuine auth_data is not this session's
        tampered = dict(auth, reqnum=auth["reqnum"] + 1, signature="x" + auth["signature"][1:])
        for bad in (dict(auth, signature="x"), tampered, None, "text"):
            with self.subTest(bad=bad):
                self.assertEqual(self.named("/session/get", session_id, bad)[0], 401)
                self.assertEqual(
                    self.named("/session/health", session_id, bad), (401, {"error": "session_auth is not valid"})
                )
        other = self.autoscaler.route()
        self.assertEqual(self.named("/session/get", session_id, other), (400, {"error": "session does not exist"}))
        self.assertEqual(self.named("/session/health", session_id, other), (200, {"ok": False}))
        self.assertEqual(self.named("/session/health", session_id, auth), (200, {"ok": True}))

        # while open: the session is one request of workload `cost` in the reports
        report = self.report_where(
            lambda r: auth["request_idx"] in r.get("working_request_idxs", []), "the session in working_request_idxs"
        )
        self.assertGreaterEqual(report["cur_load"], 7)

        status, answer = self.named("/session/end", session_id, auth)
        self.assertEqual((status, answer), (200, {"ended": True, "removed_session": session_id}))
        self.assertEqual(self.post("/generate", generate(auth, session_id)), (410, {"error": "invalid session"}))
        self.assertEqual(self.named("/session/get", session_id, auth)[0], 400)
        self.assertEqual(
            self.named("/session/end", session_id, auth), (400, {"error": f"session with id {session_id} not found"})
        )
        self.assertEqual(self.named("/session/health", session_id, auth), (200, {"ok": False}))

        records = wait_for(lambda: self.records_of(auth["request_idx"]), 10, "the session's record")
        time.sleep(1.2)  # nothing more comes for it: its requests have no record of their own
        records = self.records_of(auth["request_idx"])
        self.assertEqual(len(records), 1, records)
        record = records[0]
        self.assertEqual((record["status"], record["success"]), ("Success", True))
        self.assertEqual(record["entered_queue_at"], record["work_started_at"])
        self.assertAlmostEqual(record["entered_queue_at"], before, delta=2)
        self.assertGreater(record["work_completed_at"], record["work_started_at"])
        self.wait_idle_report()
        self.assertNotIn(auth["request_idx"], self.report()["working_request_idxs"])

    def test_requests_extend_by_max_never_cut_by_expiry(self) -> None:
        session_id, auth, answer = self.create(lifetime=2)
        # A request longer than the lifetime: the session is not collected under it.
        started = time.time()
        long_tokens = int(3.5 / TOKEN_DELAY_S)
        status, _ = self.post("/generate", generate(auth, session_id, max_response_tokens=long_tokens))
        self.assertEqual(status, 200)
        status, got = self.named("/session/get", session_id, auth)
        self.assertEqual(status, 200, "alive: extended when the request ended")
        self.assertGreaterEqual(got["expiration"], started + 3.5 + 2 - 0.5)
        # A burst does not add up: expiration = max(expiration, now + lifetime)
        for _ in range(5):
            self.assertEqual(self.post("/generate", generate(auth, session_id))[0], 200)
        status, got = self.named("/session/get", session_id, auth)
        self.assertLess(got["expiration"], time.time() + 2 + 0.5)

    def test_refused_requests_do_not_touch_the_session(self) -> None:
        session_id, auth, _ = self.create(lifetime=30)
        _, got = self.named("/session/get", session_id, auth)
        time.sleep(0.1)
        refused = {
            "unsigned": (dict(auth, signature="x"), 401),
            "another genuine auth_data": (self.autoscaler.route(), 410),
            "malformed payload": (auth, 422),
        }
        for name, (bad, expected) in refused.items():
            with self.subTest(name):
                body = generate(bad, session_id)
                if name == "malformed payload":
                    body["payload"] = {"prompt": 5}
                self.assertEqual(self.post("/generate", body)[0], expected)
        self.assertEqual(self.named("/session/get", session_id, auth)[1]["expiration"], got["expiration"])
        # an unsigned caller learns nothing about ids; a signed one gets 410 for an unknown id
        unsigned = dict(auth, signature="x")
        self.assertEqual(self.post("/generate", generate(unsigned, "NoSuchSession0000000000"))[0], 401)
        self.assertEqual(self.post("/generate", generate(auth, "NoSuchSession0000000000"))[0], 410)
        self.assertEqual(self.post("/generate", generate(auth, 12))[0], 422)
        # a null session_id is an ordinary request
        self.assertEqual(self.post("/generate", generate(self.autoscaler.route(), None))[0], 200)

    def test_expiry_is_collected_and_the_callback_carries_the_real_id(self) -> None:
        session_id, auth, _ = self.create(
            lifetime=1, on_close_route="/session_closed", on_close_payload={"session_id": "forged", "job": 9}
        )
        calls = wait_for(lambda: self.callbacks_of(session_id), 8, "the close callback")
        self.assertEqual(calls, [{"path": "/session_closed", "body": {"session_id": session_id, "job": 9}}])
        self.assertEqual(self.named("/session/get", session_id, auth)[0], 400)
        self.assertEqual(
            [r["status"] for r in wait_for(lambda: self.records_of(auth["request_idx"]), 10, "record")], ["Success"]
        )
        self.assertEqual(self.callbacks_of("forged"), [])

    def test_a_non_object_payload_is_wrapped(self) -> None:
        session_id, auth, _ = self.create(on_close_route="session_closed", on_close_payload=[1, 2])
        self.assertEqual(self.named("/session/end", session_id, auth)[0], 200)
        calls = wait_for(lambda: self.callbacks_of(session_id), 8, "the close callback")
        self.assertEqual(calls[0]["body"], {"payload": [1, 2], "session_id": session_id})

    def test_redirects_are_not_followed(self) -> None:
        session_id, auth, _ = self.create(on_close_route=f"{self.model.url}/session_redirect")
        self.assertEqual(self.named("/session/end", session_id, auth)[0], 200)
        calls = wait_for(lambda: self.callbacks_of(session_id), 8, "the close callback")
        time.sleep(0.5)
        self.assertEqual([c["path"] for c in self.callbacks_of(session_id)], ["/session_redirect"], calls)

    def test_end_stops_requests_in_flight_and_does_not_wait_for_the_callback(self) -> None:
        # The callback goes to a port that accepts and never answers: /end must not wait for it.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        route = f"http://127.0.0.1:{silent.getsockname()[1]}/closed"
        session_id, auth, _ = self.create(on_close_route=route)
        body = json.dumps(generate(auth, session_id, max_response_tokens=int(5 / TOKEN_DELAY_S))).encode()
        stream = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        self.addCleanup(stream.close)
        stream.sendall(
            b"POST /generate_stream HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        received = stream.recv(65536)
        self.assertIn(b" 200 ", received.split(b"\r\n", 1)[0])
        started = time.monotonic()
        status, answer = self.named("/session/end", session_id, auth, port=self.end_port)  # the plain listener
        self.assertEqual((status, answer["ended"]), (200, True))
        self.assertLess(time.monotonic() - started, 2.0, "/session/end answered before the callback")
        while chunk := stream.recv(65536):
            received += chunk
        self.assertNotIn(b"[DONE]", received, "the stream stopped mid-body")
        self.assertFalse(received.endswith(b"0\r\n\r\n"), "no terminating chunk: the client sees a cut")


class Refusals(SessionStack):
    def test_unsigned_and_malformed_creates_store_nothing(self) -> None:
        auth = self.autoscaler.route(cost=3)
        cases: list[tuple[str, Any, int, Any]] = [
            ("unsigned", {"auth_data": dict(auth, signature="x"), "payload": {}}, 401, None),
            ("tampered url", {"auth_data": dict(auth, url=auth["url"] + "0"), "payload": {}}, 401, None),
            ("not JSON", b"{", 422, {"error": "invalid JSON"}),
            ("not an object", [], 422, None),
            ("no payload", {"auth_data": auth}, 422, {"payload": "missing parameter"}),
            ("no auth_data", {"payload": {}}, 422, {"auth_data": "missing parameter"}),
            (
                "cost",
                {"auth_data": dict(auth, cost="lots"), "payload": {}},
                422,
                {"auth_data": {"cost": "expected a number"}},
            ),
            ("lifetime 0", {"auth_data": auth, "payload": {"lifetime": 0}}, 422, None),
            ("lifetime -5", {"auth_data": auth, "payload": {"lifetime": -5}}, 422, None),
            ("lifetime str", {"auth_data": auth, "payload": {"lifetime": "60"}}, 422, None),
            ("lifetime bool", {"auth_data": auth, "payload": {"lifetime": True}}, 422, None),
            ("route type", {"auth_data": auth, "payload": {"on_close_route": 5}}, 422, None),
        ]
        for route in (
            "file:///etc/passwd",
            "gopher://127.0.0.1:70/x",
            "//169.254.169.254/latest/meta-data",
            "http://user:pw@127.0.0.1/x",
            "ftp://127.0.0.1/x",
            "http:///x",
            "javascript:alert(1)",
            "/path with space",
            "http://127.0.0.1:99999/x",
            "/x\r\nHost: evil",
        ):
            cases.append((route, {"auth_data": auth, "payload": {"on_close_route": route}}, 422, None))
        for name, body, status, answer in cases:
            with self.subTest(name):
                if isinstance(body, bytes):
                    from tests.support import http_call

                    got_status, _, raw = http_call(self.worker.port, "POST", "/session/create", body)
                    got = json.loads(raw)
                else:
                    got_status, got = self.post("/session/create", body)
                self.assertEqual(got_status, status, got)
                self.assertIsInstance(got, dict)
                if answer is not None:
                    self.assertEqual(got, answer)
                if name in ("lifetime 0", "route type") or name.startswith(("file", "gopher", "//")):
                    self.assertIn("payload", got)
        time.sleep(1.5)
        self.wait_idle_report()
        self.assertEqual(self.records_of(auth["request_idx"]), [], "no session, not even a rejected one")
        # a get/health/end body without an id
        self.assertEqual(self.post("/session/get", {"session_auth": auth}), (422, {"error": "missing session_id"}))
        self.assertEqual(self.post("/session/end", {"session_id": "", "session_auth": auth})[0], 422)

    def test_max_sessions_is_exact_under_a_burst(self) -> None:
        self.wait_idle_report()
        auths = [self.autoscaler.route(cost=2) for _ in range(12)]
        barrier = threading.Barrier(len(auths))
        answers: list[tuple[int, Any]] = [(0, None)] * len(auths)

        def create(i: int) -> None:
            barrier.wait()
            answers[i] = self.post("/session/create", {"auth_data": auths[i], "payload": {"lifetime": 30}})

        threads = [threading.Thread(target=create, args=(i,)) for i in range(len(auths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = [(a, ans["session_id"]) for a, (s, ans) in zip(auths, answers, strict=True) if s == 201]
        for auth, session_id in opened:
            self.addCleanup(self.named, "/session/end", session_id, auth)
        refused = [a for a, (s, ans) in zip(auths, answers, strict=True) if s == 429 and ans == b""]
        self.assertEqual((len(opened), len(refused)), (MAX_SESSIONS, len(auths) - MAX_SESSIONS), answers)
        report = self.report_where(
            lambda r: r.get("num_requests_working") == MAX_SESSIONS, "the open sessions in the report"
        )
        self.assertEqual(sorted(report["working_request_idxs"]), sorted(a["request_idx"] for a, _ in opened))
        self.assertGreaterEqual(report["cur_load"], 2 * MAX_SESSIONS)
        for auth in refused:
            records = wait_for(
                functools.partial(self.records_of, auth["request_idx"]), 10, "the rejected create's record"
            )
            self.assertEqual([r["status"] for r in records], ["Rejected"])
        for auth, session_id in opened:
            self.assertEqual(self.named("/session/end", session_id, auth)[0], 200)
        self.wait_idle_report()


class ReadinessWithoutALogLine(unittest.TestCase):
    def test_health_route_makes_the_worker_ready_when_the_model_listens_late(self) -> None:
        env = {"MODEL_LOG": "", "PYWORKER_READY_TIMEOUT_S": "1.5"}
        # The model opens its port after 3 s and answers healthy 1 s later.
        with reporting_stack(62, "--listen-after", "3", "--load-time", "1", env=env, wait_model=False) as stack:
            ready = wait_for(lambda: (lambda s: s if s and s.get("ready") else None)(stack.status()), 60, "ready")
            self.assertEqual(ready["error_msg"], "", "the start-up error is cleared once healthy")
            history = ready["history"]
            errors = [h["error_msg"] for h in history if h["error_msg"]]
            self.assertTrue(
                errors and all(re.search(r"model start: no healthy answer from /healthcheck", e) for e in errors),
                errors,
            )
            loadtime = [h["loadtime"] for h in history if h["loadtime"]]
            self.assertEqual(len(loadtime), 1)
            # The model listens after 3 s and is healthy 1 s later; the worker started a little after it.
            self.assertGreater(loadtime[0], 3.5, "ready only after the model listened and answered healthy")
            self.assertEqual(post_json(stack.worker.port, "/generate", generate(stack.autoscaler.route(), ...))[0], 200)


if __name__ == "__main__":
    unittest.main()
