"""A hostile client against a real worker process, over raw sockets.

Every case sends crafted bytes and asserts the exact answer (or the close),
that nothing after a refused request is served as a second request, and
that the worker still serves a valid request right after. The worker runs
with short timeouts so the slow-client cases stay quick.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import unittest

from tests.support import ModelProcess, WorkerProcess, body, post_bytes, wait_for

MAX_CONNECTIONS = 64
ENV = {
    "PYWORKER_HEADER_TIMEOUT_S": "1.5",
    "PYWORKER_BODY_TIMEOUT_S": "5",
    "PYWORKER_BODY_RATE_GRACE_S": "0.5",
    "PYWORKER_MIN_BODY_RATE": "240",
    "PYWORKER_KEEPALIVE_TIMEOUT_S": "5",
    "PYWORKER_LINGER_S": "2",
    "PYWORKER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "PYWORKER_HEALTH_INTERVAL_S": "1",
    "PYWORKER_LOG_LEVEL": "INFO",
}

model: ModelProcess
worker: WorkerProcess


def setUpModule() -> None:
    global model, worker
    model = ModelProcess()
    worker = WorkerProcess("workers.hello_world", model.url, model.log, ENV)
    # Benchmarked and healthy: its connections to the model are all open.
    wait_for(lambda: "worker ready" in worker.output(), 60, "the worker to be ready")


def tearDownModule() -> None:
    worker.stop()
    model.stop()


def connect(timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", worker.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def send_and_read(data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """Send `data`, read until the worker closes: (everything read, seconds taken)."""
    started = time.monotonic()
    with connect(timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker may refuse before reading it all; its answer is still readable
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError(f"the worker neither answered nor closed within {timeout} s: {out[:200]!r}") from None
    return out, time.monotonic() - started


def statuses(raw: bytes) -> list[int]:
    """The status of every response in `raw` (so a smuggled second answer shows)."""
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def error_of(raw: bytes) -> str:
    text = raw.decode("utf-8")  # every answer is valid UTF-8
    message: str = json.loads(text.partition("\r\n\r\n")[2])["error"]
    return message


VALID = post_bytes("/generate", body("hello", max_response_tokens=2), extra="Connection: close\r\n")


class HostileCase(unittest.TestCase):
    def assert_refused(self, data: bytes, status: int, contains: str = "", within_s: float = 1.0) -> bytes:
        raw, took = send_and_read(data)
        self.assertEqual(statuses(raw), [status], raw[:300])
        self.assertLess(took, within_s, "answered and closed at once, not at a timeout")
        if contains:
            self.assertIn(contains, error_of(raw))
        self.assert_serves()
        return raw

    def assert_serves(self) -> None:
        raw, _ = send_and_read(VALID)
        self.assertEqual(statuses(raw), [200], raw[:300])


SMUGGLED = b"GET /healthcheck HTTP/1.1\r\nHost: a\r\n\r\n"


def generate_head(fields: bytes) -> bytes:
    return b"POST /generate HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"


class Smuggling(HostileCase):
    def test_content_length_with_transfer_encoding_in_either_order(self) -> None:
        for fields in (
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ):
            with self.subTest(fields=fields):
                self.assert_refused(generate_head(fields) + b"0\r\n\r\n" + SMUGGLED, 400, "ambiguous")

    def test_duplicate_conflicting_and_listed_content_length(self) -> None:
        for fields in (
            b"Content-Length: 3\r\nContent-Length: 3\r\n",
            b"Content-Length: 3\r\nContent-Length: 4\r\n",
            b"Content-Length: 3, 3\r\n",
            b"Content-Length: +3\r\n",
            b"Content-Length: 0x3\r\n",
        ):
            with self.subTest(fields=fields):
                self.assert_refused(generate_head(fields) + b"abc" + SMUGGLED, 400)

    def test_transfer_encodings_other_than_chunked(self) -> None:
        for value, status in ((b"gzip, chunked", 501), (b"chunked, chunked", 501), (b"identity", 501)):
            with self.subTest(value=value):
                self.assert_refused(generate_head(b"Transfer-Encoding: " + value + b"\r\n") + b"0\r\n\r\n", status)
        data = b"POST /generate HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED
        self.assert_refused(data, 400, "HTTP/1.0")

    def test_header_syntax(self) -> None:
        for line, contains in (
            (b"X-A: a\r\n b", "folding"),
            (b"X-A : a", "illegal header line"),
            (b"X-A: a\x00b", "control character"),
            (b"X-A: a\x7fb", "control character"),
            (b"X-A: a\rb", "CRLF"),
        ):
            with self.subTest(line=line):
                self.assert_refused(generate_head(line + b"\r\nContent-Length: 0\r\n") + SMUGGLED, 400, contains)

    def test_bare_lf_heads_http_2_and_garbage(self) -> None:
        self.assert_refused(b"GET /healthcheck HTTP/1.1\nHost: a\n\n" + SMUGGLED, 400, "CRLF")
        self.assert_refused(b"GET /healthcheck HTTP/2.0\r\nHost: a\r\n\r\n", 505)
        self.assert_refused(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400)
        self.assert_refused(b"GET /healthcheck HTTP/1.1\r\n\r\n", 400, "Host")

    def test_a_valid_pipeline_is_answered_in_order_and_nothing_more(self) -> None:
        first = post_bytes("/generate", body("one", max_response_tokens=1))
        raw, _ = send_and_read(first + VALID)
        self.assertEqual(statuses(raw), [200, 200])


class ChunkedFraming(HostileCase):
    CHUNKED = generate_head(b"Transfer-Encoding: chunked\r\n")

    def test_a_chunk_size_with_too_many_digits_fails_at_once(self) -> None:
        self.assert_refused(self.CHUNKED + b"f" * 18 + b"\r\n", 400, "chunk-size")

    def test_a_chunk_size_over_the_body_limit_is_413_before_the_data(self) -> None:
        self.assert_refused(self.CHUNKED + b"ffffffffffff\r\n", 413)

    def test_chunk_lines_ended_by_bare_lf_fail_at_once(self) -> None:
        self.assert_refused(self.CHUNKED + b"5\nhello\n0\n\n", 400, "CRLF")
        self.assert_refused(self.CHUNKED + b"5\r\nhello\n0\r\n\r\n", 400, "CRLF")

    def test_a_chunk_line_that_never_ends_is_bounded(self) -> None:
        self.assert_refused(self.CHUNKED + b"5;" + b"x" * 5000, 400, "chunk-size line over")

    def test_a_well_formed_chunked_body_is_served(self) -> None:
        data = body("chunked hello", max_response_tokens=2)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + 7]), data[i : i + 7]) for i in range(0, len(data), 7))
        raw, _ = send_and_read(
            generate_head(b"Transfer-Encoding: chunked\r\nConnection: close\r\n") + chunks + b"0\r\n\r\n"
        )
        self.assertEqual(statuses(raw), [200])


class BadJson(HostileCase):
    def payload(self, payload: str | bytes) -> bytes:
        raw = payload if isinstance(payload, bytes) else payload.encode()
        data = b'{"auth_data":' + json.dumps(json.loads(body())["auth_data"]).encode() + b',"payload":' + raw + b"}"
        return post_bytes("/generate", data, extra="Connection: close\r\n")

    def assert_422(self, data: bytes, contains: str) -> None:
        raw, _ = send_and_read(data)
        self.assertEqual(statuses(raw), [422], raw[:300])
        self.assertIn(contains, error_of(raw))
        self.assert_serves()

    def test_deep_nesting_at_the_top_and_in_a_field(self) -> None:
        deep = b"[" * 100_000 + b"]" * 100_000
        self.assert_422(post_bytes("/generate", deep, extra="Connection: close\r\n"), "nested deeper")
        self.assert_422(self.payload('{"prompt":"x","extra":' + "[" * 1000 + "]" * 1000 + "}"), "nested deeper")
        self.assert_422(self.payload('{"prompt":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}"), "nested deeper")

    def test_lone_surrogates_escaped_or_utf8_encoded(self) -> None:
        self.assert_422(
            self.payload('{"prompt":"a\\ud800b"}'), "lone surrogate \\ud800 in a JSON string at payload.prompt"
        )
        self.assert_422(self.payload('{"prompt":"\\udc00"}'), "lone surrogate")
        self.assert_422(self.payload(b'{"prompt":"\xed\xa0\x80"}'), "not valid UTF-8")

    def test_nan_and_wrong_types(self) -> None:
        self.assert_422(self.payload('{"prompt":"x","max_response_tokens":NaN}'), "NaN is not JSON")
        raw, _ = send_and_read(self.payload('{"prompt":5}'))
        self.assertEqual(statuses(raw), [422])
        self.assertEqual(json.loads(raw.partition(b"\r\n\r\n")[2])["payload"]["prompt"], "expected str, got int")


class Limits(HostileCase):
    def test_a_200_kb_header_line_gets_its_431_not_a_reset(self) -> None:
        # The worker answers while the client is still sending. Closing then
        # would reset the connection: the client's next sends fail, and on a
        # real network the reset can discard the answer before it is read.
        # Lingering, the worker reads and discards the rest, then closes.
        for _ in range(3):
            with connect() as sock:
                sock.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40_000)
                time.sleep(0.2)  # the answer is out by now
                for _ in range(32):
                    sock.sendall(b"a" * 5000)  # a reset would fail these
                raw = b""
                while chunk := sock.recv(65536):
                    raw += chunk
            self.assertEqual(statuses(raw), [431], raw[:200])
        self.assert_serves()

    def test_a_body_over_content_length_limit_gets_413_at_once(self) -> None:
        self.assert_refused(generate_head(b"Content-Length: 99999999999\r\n") + b"x" * 100_000, 413)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class SlowAndIdleClients(HostileCase):
    """Valid requests are served while idle, slow-head and slow-body clients hold connections."""

    def serve_during(self, attack: list[socket.socket], trickle: bytes | None = None, seconds: float = 2.0) -> None:
        stop = threading.Event()

        def drip() -> None:
            while not stop.is_set():
                for sock in attack:
                    try:
                        sock.send(trickle or b"")
                    except OSError:
                        pass
                stop.wait(0.2)

        dripper = threading.Thread(target=drip, daemon=True)
        if trickle:
            dripper.start()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.monotonic()
                self.assert_serves()
                self.assertLess(time.monotonic() - started, 1.0, "a valid request stalled during the attack")
                time.sleep(0.1)
        finally:
            stop.set()
            if trickle:
                dripper.join()

    def test_more_idle_connections_than_the_limit(self) -> None:
        idle = [connect() for _ in range(MAX_CONNECTIONS + 20)]
        try:
            self.serve_during(idle)
            # The oldest idle ones were closed to make room.
            idle[0].settimeout(2)
            self.assertEqual(idle[0].recv(1), b"")
        finally:
            for sock in idle:
                sock.close()

    def test_idle_connections_are_closed_at_the_head_deadline_from_accept(self) -> None:
        sock = connect()
        started = time.monotonic()
        self.assertEqual(sock.recv(100), b"")  # closed silently: it said nothing
        self.assertLess(abs(time.monotonic() - started - 1.5), 1.0)
        sock.close()

    def test_slowloris_heads_get_408_at_the_deadline_counted_from_accept(self) -> None:
        loris = [connect() for _ in range(20)]
        for sock in loris:
            sock.send(b"GET /healthcheck HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        started = time.monotonic()
        try:
            self.serve_during(loris, trickle=b"a", seconds=1.0)
            raw = loris[0].recv(1000)
            self.assertEqual(statuses(raw), [408])
            self.assertLess(time.monotonic() - started, 3.0)
        finally:
            for sock in loris:
                sock.close()

    def test_slow_bodies_are_dropped_after_the_grace_at_the_minimum_rate(self) -> None:
        slow = [connect() for _ in range(20)]
        for sock in slow:
            sock.send(generate_head(b"Content-Length: 100000\r\n") + b"{")
        started = time.monotonic()
        try:
            self.serve_during(slow, trickle=b" ", seconds=1.0)
            raw = slow[0].recv(1000)
            self.assertEqual(statuses(raw), [408])
            self.assertIn("request body too slow", error_of(raw))
            self.assertLess(time.monotonic() - started, 3.0)
        finally:
            for sock in slow:
                sock.close()

    def test_abusive_connections_leave_no_file_descriptors(self) -> None:
        pid = worker.proc.pid
        self.assert_serves()
        before = open_fds(pid)
        for i in range(300):
            kind = i % 3
            if kind == 0:
                send_and_read(b"garbage\r\n\r\n")
            elif kind == 1:
                sock = connect()
                sock.send(b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{")
                sock.close()  # gone mid-body
            else:
                send_and_read(generate_head(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"))
        wait_for(lambda: open_fds(pid) <= before, 10, f"the worker's open files back to {before}")
        self.assert_serves()


if __name__ == "__main__":
    unittest.main()
