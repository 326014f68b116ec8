"""Settings from the environment: defaults, parsing, and one line naming each bad value."""

from __future__ import annotations

import unittest
from collections.abc import Callable
from typing import Any

from pyworker.config import ConfigError, ReportConfig, WorkerConfig
from pyworker.http import ClientLimits, ServerLimits
from pyworker.http.json_checks import MAX_JSON_DEPTH

LOCAL = {"UNSECURED": "true", "REPORT_ADDR": "off"}
PLATFORM = {
    "REPORT_ADDR": "http://a:1,https://b/",
    "CONTAINER_ID": "7",
    "PUBLIC_IPADDR": "1.2.3.4",
    "VAST_TCP_PORT_3000": "40000",
}

_SERVER = ServerLimits()
_CLIENT = ClientLimits()
Get = Callable[[WorkerConfig], Any]
# (variable, how to read it back, a good value, what it reads as, its default)
NUMBERS: list[tuple[str, Get, str, Any, Any]] = [
    ("WORKER_PORT", lambda c: c.port, "3100", 3100, 3000),
    ("PYWORKER_BENCHMARK_CONCURRENCY", lambda c: c.benchmark_concurrency, "4", 4, None),
    ("PYWORKER_HEALTH_INTERVAL_S", lambda c: c.health_interval_s, "2.5", 2.5, 10.0),
    ("PYWORKER_SHUTDOWN_GRACE_S", lambda c: c.shutdown_grace_s, "3", 3.0, 10.0),
    ("PYWORKER_MAX_JSON_DEPTH", lambda c: c.max_json_depth, "9", 9, MAX_JSON_DEPTH),
    ("PYWORKER_MAX_HEADER_BYTES", lambda c: c.server_limits.max_header_bytes, "2048", 2048, _SERVER.max_header_bytes),
    ("PYWORKER_MAX_BODY_BYTES", lambda c: c.server_limits.max_body_bytes, "10", 10, _SERVER.max_body_bytes),
    ("PYWORKER_HEADER_TIMEOUT_S", lambda c: c.server_limits.header_timeout_s, "1.5", 1.5, _SERVER.header_timeout_s),
    ("PYWORKER_BODY_TIMEOUT_S", lambda c: c.server_limits.body_timeout_s, "2", 2.0, _SERVER.body_timeout_s),
    ("PYWORKER_MIN_BODY_RATE", lambda c: c.server_limits.min_body_rate, "0", 0.0, _SERVER.min_body_rate),
    ("PYWORKER_BODY_RATE_GRACE_S", lambda c: c.server_limits.body_rate_grace_s, "1", 1.0, _SERVER.body_rate_grace_s),
    (
        "PYWORKER_KEEPALIVE_TIMEOUT_S",
        lambda c: c.server_limits.keepalive_timeout_s,
        "3",
        3.0,
        _SERVER.keepalive_timeout_s,
    ),
    ("PYWORKER_SEND_TIMEOUT_S", lambda c: c.server_limits.send_timeout_s, "4", 4.0, _SERVER.send_timeout_s),
    ("PYWORKER_LINGER_S", lambda c: c.server_limits.linger_s, "0", 0.0, _SERVER.linger_s),
    ("PYWORKER_MAX_CONNECTIONS", lambda c: c.server_limits.max_connections, "5", 5, _SERVER.max_connections),
    ("MODEL_CONNECT_TIMEOUT_S", lambda c: c.client_limits.connect_timeout_s, "1", 1.0, _CLIENT.connect_timeout_s),
    ("MODEL_READ_TIMEOUT_S", lambda c: c.client_limits.read_timeout_s, "9", 9.0, _CLIENT.read_timeout_s),
    ("PYWORKER_MAX_SESSIONS", lambda c: c.max_sessions, "0", 0, 10),
    ("PYWORKER_READY_TIMEOUT_S", lambda c: c.ready_timeout_s, "30", 30.0, 1200.0),
]
BOOLEANS: list[tuple[str, Get, bool]] = [
    ("PYWORKER_CHECK_URL", lambda c: c.check_url, True),
    ("USE_SSL", lambda c: c.use_ssl, False),
]


def load(**env: str) -> WorkerConfig:
    return WorkerConfig.from_env({**LOCAL, **env})


class Defaults(unittest.TestCase):
    def test_every_setting_has_its_documented_default(self) -> None:
        config = load()
        for name, get, _, _, default in NUMBERS:
            self.assertEqual(get(config), default, name)
        for name, get, default in BOOLEANS:
            self.assertEqual(get(config), default, name)
        self.assertEqual((config.host, config.signature_schemes, config.log_level), ("0.0.0.0", ("url",), "INFO"))
        self.assertEqual((config.ssl_cert, config.ssl_key), ("/etc/instance.crt", "/etc/instance.key"))
        self.assertIsNone(config.model_log)
        # The plain /session/end listener: WORKER_PORT + 1, loopback only.
        self.assertEqual((config.session_end_host, config.session_end_port), ("127.0.0.1", 3001))
        # /metrics: WORKER_PORT + 2, loopback only.
        self.assertEqual((config.metrics_host, config.metrics_port), ("127.0.0.1", 3002))

    def test_the_session_end_listener_can_move_or_be_off(self) -> None:
        self.assertEqual(load(WORKER_PORT="4000").session_end_port, 4001)
        self.assertEqual(load(WORKER_HTTP_PORT="7001").session_end_port, 7001)
        self.assertIsNone(load(WORKER_HTTP_PORT="off").session_end_port)
        self.assertEqual(load(PYWORKER_SESSION_END_HOST="0.0.0.0").session_end_host, "0.0.0.0")
        with self.assertRaisesRegex(ConfigError, "WORKER_HTTP_PORT"):
            load(WORKER_HTTP_PORT="70000")
        self.assertIsNone(load(PYWORKER_METRICS_PORT="off").metrics_port)
        self.assertEqual(load(PYWORKER_METRICS_PORT="9100").metrics_port, 9100)

    def test_empty_values_mean_unset(self) -> None:
        self.assertEqual(load(WORKER_PORT="", PYWORKER_LOG_LEVEL="").port, 3000)


class Parsing(unittest.TestCase):
    def test_each_number_is_read(self) -> None:
        for name, get, raw, expected, _ in NUMBERS:
            self.assertEqual(get(load(**{name: raw})), expected, name)

    def test_each_boolean_is_read(self) -> None:
        for name, get, _ in BOOLEANS:
            for raw, expected in (("true", True), ("YES", True), ("1", True), ("off", False), ("False", False)):
                self.assertEqual(get(load(**{name: raw})), expected, f"{name}={raw}")

    def test_reports_on_the_platform(self) -> None:
        reports = ReportConfig.from_env(PLATFORM)
        self.assertEqual(reports.addrs, ("http://a:1", "https://b"))
        self.assertEqual((reports.worker_id, reports.public_url), (7, "http://1.2.3.4:40000"))
        self.assertEqual(ReportConfig.from_env({**PLATFORM, "USE_SSL": "true"}).public_url, "https://1.2.3.4:40000")

    def test_schemes_and_log_level(self) -> None:
        config = load(PYWORKER_SIGNATURE_SCHEMES="url, all-fields", PYWORKER_LOG_LEVEL="debug")
        self.assertEqual((config.signature_schemes, config.log_level), (("url", "all-fields"), "DEBUG"))


class Errors(unittest.TestCase):
    def refused(self, **env: str) -> str:
        with self.assertRaises(ConfigError) as caught:
            WorkerConfig.from_env(env)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_a_malformed_number_is_one_line_naming_it(self) -> None:
        for name, _, _, expected, _ in NUMBERS:
            message = self.refused(**LOCAL, **{name: "lots"})
            self.assertTrue(message.startswith(name), message)
            self.assertIn("whole number" if isinstance(expected, int) else "a number", message)

    def test_a_number_below_its_minimum(self) -> None:
        self.assertEqual(
            self.refused(**LOCAL, PYWORKER_MAX_CONNECTIONS="0"), "PYWORKER_MAX_CONNECTIONS must be at least 1, not 0"
        )
        self.assertIn("at least", self.refused(**LOCAL, PYWORKER_LINGER_S="-1"))
        self.assertIn("at least", self.refused(**LOCAL, PYWORKER_HEADER_TIMEOUT_S="nan"))

    def test_a_malformed_boolean(self) -> None:
        for name, _, _ in BOOLEANS:
            self.assertEqual(self.refused(**LOCAL, **{name: "maybe"}), f"{name} must be true or false, not 'maybe'")

    def test_reporting_needs_its_identity(self) -> None:
        self.assertIn("CONTAINER_ID", self.refused(**{k: v for k, v in PLATFORM.items() if k != "CONTAINER_ID"}))
        self.assertIn("PUBLIC_IPADDR", self.refused(**{k: v for k, v in PLATFORM.items() if k != "PUBLIC_IPADDR"}))
        self.assertIn(
            "VAST_TCP_PORT_3000", self.refused(**{k: v for k, v in PLATFORM.items() if k != "VAST_TCP_PORT_3000"})
        )
        self.assertIn("http:// or https://", self.refused(**{**PLATFORM, "REPORT_ADDR": "ftp://x"}))

    def test_no_autoscaler_needs_unsecured(self) -> None:
        self.assertIn("UNSECURED=true", self.refused(REPORT_ADDR="off"))

    def test_unknown_signature_scheme(self) -> None:
        self.assertIn("'rot13'", self.refused(**LOCAL, PYWORKER_SIGNATURE_SCHEMES="url,rot13"))


class Routing(unittest.TestCase):
    def test_one_handler_per_method_whatever_its_case(self) -> None:
        from pyworker.http import Request, Response, Route
        from pyworker.http.routing import Router

        async def handler(_: Request) -> Response:
            return Response("x")

        with self.assertRaisesRegex(ValueError, "two handlers for GET /a"):
            Router([Route("GET", "/a", handler), Route("get", "/a", handler)])


if __name__ == "__main__":
    unittest.main()
