"""The session table's parts, without sockets: close-callback targets and bodies,
`auth_data` matching, create parsing, and the `max_sessions` booking."""

from __future__ import annotations

import asyncio
import json
import unittest
from typing import Any

from pyworker.metrics import Metrics
from pyworker.sessions import (
    ID_ALPHABET,
    CallbackSender,
    CallbackTarget,
    SessionsFull,
    SessionTable,
    auth_digest,
    callback_body,
    callback_target,
    new_session_id,
    parse_create,
)
from pyworker.validation import JsonDataException

AUTH = {"cost": 5, "endpoint": "e", "reqnum": 3, "request_idx": 11, "signature": "c2ln", "url": "http://w:1"}


def no_pool() -> Any:
    raise AssertionError("no callback is sent in these tests")


def table(max_sessions: int) -> SessionTable:
    return SessionTable(Metrics(), CallbackSender(no_pool), max_sessions)


class Targets(unittest.TestCase):
    def test_paths_go_to_the_model_server(self) -> None:
        self.assertEqual(callback_target("/done"), CallbackTarget(None, "/done"))
        self.assertEqual(callback_target("done?x=1"), CallbackTarget(None, "/done?x=1"))

    def test_http_urls_are_split_into_base_and_path(self) -> None:
        self.assertEqual(
            callback_target("https://Example.com:8443/a/b?q"), CallbackTarget("https://example.com:8443", "/a/b?q")
        )
        self.assertEqual(callback_target("HTTP://10.0.0.1"), CallbackTarget("http://10.0.0.1", "/"))
        self.assertEqual(callback_target("http://[::1]:9/x"), CallbackTarget("http://[::1]:9", "/x"))

    def test_everything_else_is_refused(self) -> None:
        for route in (
            "file:///etc/passwd",
            "gopher://h/x",
            "//169.254.169.254/",
            "http://u:p@h/x",
            "http:///x",
            "javascript:alert(1)",
            "/a b",
            "/x\r\nHost: y",
            "http://h:99999/",
            "http://h/#frag",
            "http:h/x",
            "/é",
            "x" * 3000,
            "mailto:a@b",
        ):
            with self.subTest(route=route), self.assertRaises(ValueError):
                callback_target(route)


class Matching(unittest.TestCase):
    def test_equal_as_json_values(self) -> None:
        same = dict(reversed(list(AUTH.items())))
        self.assertEqual(auth_digest(AUTH), auth_digest(same), "key order does not matter")
        self.assertEqual(auth_digest(AUTH), auth_digest(dict(AUTH, cost=5.0)), "5 equals 5.0")
        for other in (dict(AUTH, cost="5"), dict(AUTH, reqnum=4), {**AUTH, "extra": None}, [AUTH], None):
            with self.subTest(other=other):
                self.assertNotEqual(auth_digest(AUTH), auth_digest(other))

    def test_ids_are_long_and_random(self) -> None:
        ids = {new_session_id() for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        self.assertTrue(all(len(i) == 22 and set(i) <= set(ID_ALPHABET) for i in ids))


class Creates(unittest.TestCase):
    def test_defaults_and_fields(self) -> None:
        ask = parse_create({"auth_data": AUTH, "payload": {}})
        self.assertEqual((ask.cost, ask.lifetime, ask.on_close_route, ask.on_close_payload), (5.0, 60.0, None, None))
        ask = parse_create(
            {
                "auth_data": dict(AUTH, cost="2.5"),
                "payload": {"lifetime": 9, "on_close_route": "/done", "on_close_payload": {"k": 1}},
            }
        )
        self.assertEqual(
            (ask.cost, ask.lifetime, ask.on_close_route, ask.on_close_payload), (2.5, 9.0, "/done", {"k": 1})
        )

    def test_the_payload_without_a_route_is_not_kept(self) -> None:
        self.assertIsNone(parse_create({"auth_data": AUTH, "payload": {"on_close_payload": {"k": 1}}}).on_close_payload)

    def test_malformed_creates_name_the_field(self) -> None:
        cases: list[tuple[Any, Any]] = [
            ([], None),
            ({"payload": {}}, {"auth_data": "missing parameter"}),
            ({"auth_data": AUTH}, {"payload": "missing parameter"}),
            ({"auth_data": dict(AUTH, cost="lots"), "payload": {}}, {"auth_data": {"cost": "expected a number"}}),
            ({"auth_data": dict(AUTH, cost=float("inf")), "payload": {}}, None),
            ({"auth_data": AUTH, "payload": {"lifetime": 0}}, None),
            ({"auth_data": AUTH, "payload": {"lifetime": "60"}}, None),
            ({"auth_data": AUTH, "payload": {"lifetime": True}}, None),
            ({"auth_data": AUTH, "payload": {"on_close_route": "ftp://h/"}}, None),
        ]
        for data, message in cases:
            with self.subTest(data=data), self.assertRaises(JsonDataException) as caught:
                parse_create(data)
            if message is not None:
                self.assertEqual(caught.exception.message, message)


class Booking(unittest.IsolatedAsyncioTestCase):
    async def test_max_sessions_is_exact_and_frees_on_close(self) -> None:
        sessions = table(2)
        ask = parse_create({"auth_data": AUTH, "payload": {}})
        first, second = sessions.open(ask), sessions.open(ask)
        with self.assertRaises(SessionsFull):
            sessions.open(ask)
        self.assertEqual((len(sessions), sessions.load), (2, 10.0))
        self.assertEqual(sessions.metrics.counters().rej_load, 5.0)
        sessions.close(first, "ended")
        self.assertIsNot(sessions.open(ask), second)
        self.assertIsNone(sessions.find(first.session_id, AUTH), "a closed session is not found")
        self.assertIs(sessions.find(second.session_id, dict(AUTH, cost=5.0)), second)
        self.assertIsNone(sessions.find(second.session_id, dict(AUTH, reqnum=4)), "other auth_data: not found")

    async def test_zero_is_no_limit_and_negative_refuses_all(self) -> None:
        ask = parse_create({"auth_data": AUTH, "payload": {}})
        unlimited = table(0)
        for _ in range(50):
            unlimited.open(ask)
        self.assertEqual(len(unlimited), 50)
        with self.assertRaises(SessionsFull):
            table(-1).open(ask)

    async def test_expiry_waits_for_requests_in_flight(self) -> None:
        sessions = table(0)
        session = sessions.open(parse_create({"auth_data": AUTH, "payload": {"lifetime": 1}}))
        request = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        session.attach(request)
        self.assertEqual(sessions.collect(now=session.expiration + 5), 0, "a request is in flight")
        session.detach(request)
        self.assertEqual(sessions.collect(now=session.expiration + 5), 1)
        self.assertTrue(session.closed)
        request.cancel()

    async def test_close_cancels_the_requests_in_flight(self) -> None:
        sessions = table(0)
        session = sessions.open(parse_create({"auth_data": AUTH, "payload": {}}))
        request = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        session.attach(request)
        sessions.close(session, "ended")
        with self.assertRaises(asyncio.CancelledError):
            await request


class CallbackBodies(unittest.IsolatedAsyncioTestCase):
    async def test_the_real_id_wins_and_non_objects_are_wrapped(self) -> None:
        sessions = table(0)
        for payload, expected in (
            ({"session_id": "forged", "k": 1}, {"k": 1}),
            ([1], {"payload": [1]}),
            ("s", {"payload": "s"}),
            (None, {}),
        ):
            ask = parse_create({"auth_data": AUTH, "payload": {"on_close_route": "/x", "on_close_payload": payload}})
            session = sessions.open(ask)
            self.assertEqual(json.loads(callback_body(session)), {**expected, "session_id": session.session_id})


if __name__ == "__main__":
    unittest.main()
