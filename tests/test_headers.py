"""Hop-by-hop headers never cross the proxy."""

from __future__ import annotations

import unittest

from pyworker.http.headers import strip_hop_by_hop


class HopByHop(unittest.TestCase):
    def test_standard_hop_by_hop_headers_are_dropped(self) -> None:
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"transfer-encoding", b"chunked"),
            (b"keep-alive", b"timeout=5"),
            (b"upgrade", b"h2c"),
            (b"te", b"trailers"),
            (b"trailer", b"x-sum"),
            (b"proxy-authenticate", b"Basic"),
            (b"x-request-id", b"abc"),
        ]
        self.assertEqual(
            strip_hop_by_hop(headers), [(b"content-type", b"text/event-stream"), (b"x-request-id", b"abc")]
        )

    def test_headers_named_by_connection_are_dropped_too(self) -> None:
        headers = [
            (b"connection", b"close, X-Secret ,x-other"),
            (b"x-secret", b"1"),
            (b"x-other", b"2"),
            (b"x-kept", b"3"),
        ]
        self.assertEqual(strip_hop_by_hop(headers), [(b"x-kept", b"3")])


if __name__ == "__main__":
    unittest.main()
