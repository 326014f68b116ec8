"""Checking the autoscaler's signature on a request's `auth_data`.

Two schemes (see README, "Signatures"):

- `url` (current): the autoscaler signs `json.dumps({"url": url}, indent=4,
  sort_keys=True)`. Every genuine request routed to one worker carries the
  same signature, so nothing here can tell a replay from a new request; the
  worker can only make sure the URL is its own.
- `all-fields` (older): the autoscaler signs every field but `signature`,
  `json.dumps(fields, indent=4)` in the order received. Then `reqnum` is
  signed too and replays are refused: a message seen among the last
  `REPLAY_WINDOW` or a `reqnum` older than the newest minus `REPLAY_WINDOW`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from .rsa import RSAPublicKey

REPLAY_WINDOW = 100
# base64 of an 8192-bit signature is 1,368 characters; refuse anything longer unread.
MAX_SIGNATURE_CHARS = 2048
# Distinct (url, signature) pairs remembered as verified under the `url` scheme.
VERIFIED_CACHE_ENTRIES = 1024


class Scheme(enum.Enum):
    URL = "url"
    ALL_FIELDS = "all-fields"


def signed_message(auth: dict[str, Any], scheme: Scheme) -> bytes:
    """The bytes the autoscaler signed for `auth` under `scheme`."""
    if scheme is Scheme.URL:
        return json.dumps({"url": auth.get("url")}, indent=4, sort_keys=True).encode("utf-8")
    fields = {k: v for k, v in auth.items() if k != "signature"}
    return json.dumps(fields, indent=4).encode("utf-8")


def normalize_url(url: str) -> str:
    """scheme://host:port in lower case, for comparing worker URLs."""
    parts = urlsplit(url.strip())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


class ReplayWindow:
    """Recent `all-fields` messages and the newest `reqnum`, in bounded memory."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.newest = -1
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def check_and_add(self, reqnum: int, signature: bytes) -> str | None:
        if reqnum < self.newest - self.size:
            return f"reqnum {reqnum} is older than the newest ({self.newest}) minus {self.size}"
        if signature in self._seen:
            return "this signed message was already used"
        self._seen.add(signature)
        self._order.append(signature)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        self.newest = max(self.newest, reqnum)
        return None


class SignatureChecker:
    """Holds the autoscaler's key once fetched and checks `auth_data` against it."""

    def __init__(self, schemes: Iterable[Scheme] = (Scheme.URL,), own_url: str | None = None) -> None:
        self.schemes = tuple(schemes)
        if not self.schemes:
            raise ValueError("at least one signature scheme is needed")
        self._key: RSAPublicKey | None = None
        self.own_url = normalize_url(own_url) if own_url else None
        self.replays = ReplayWindow()
        # (url, signature) pairs that passed under the `url` scheme. Every
        # genuine request to this worker carries the same pair, and checking
        # it costs about 150 µs of RSA and JSON: as much as the rest of the
        # request path. Only successes are kept, in bounded memory.
        self._url_verified: dict[tuple[str, str], None] = {}

    @property
    def key(self) -> RSAPublicKey | None:
        return self._key

    @key.setter
    def key(self, key: RSAPublicKey | None) -> None:
        self._key = key
        self._url_verified.clear()

    def check(self, auth: Any, replay_check: bool = True) -> str | None:
        """None when `auth` (the request's raw `auth_data` object) is genuine, else why not.

        `replay_check=False` checks the signature and the URL only: for an
        `auth_data` shown again on purpose (a session's, which its requests
        carry), which the replay window would refuse.
        """
        key = self.key
        if key is None:
            return "the autoscaler's public key is not loaded yet"
        if not isinstance(auth, dict):
            return "auth_data is not an object"
        encoded = auth.get("signature")
        if not isinstance(encoded, str) or not encoded:
            return "auth_data.signature is missing"
        if len(encoded) > MAX_SIGNATURE_CHARS:
            return "auth_data.signature is too long"
        url = auth.get("url")
        remembered = (url, encoded) if isinstance(url, str) else None
        if remembered is not None and remembered in self._url_verified:
            return None
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return "auth_data.signature is not base64"
        for scheme in self.schemes:
            if key.verify(signed_message(auth, scheme), signature):
                refusal = self._after_verified(auth, scheme, signature, replay_check)
                if refusal is None and scheme is Scheme.URL and remembered is not None:
                    if len(self._url_verified) >= VERIFIED_CACHE_ENTRIES:
                        del self._url_verified[next(iter(self._url_verified))]  # the oldest
                    self._url_verified[remembered] = None
                return refusal
        return "auth_data.signature does not verify"

    def _after_verified(self, auth: dict[str, Any], scheme: Scheme, signature: bytes, replay_check: bool) -> str | None:
        if self.own_url is not None:
            url = auth.get("url")
            if not isinstance(url, str) or normalize_url(url) != self.own_url:
                return "auth_data.url names another worker"
        if scheme is Scheme.ALL_FIELDS and replay_check:
            reqnum = auth.get("reqnum")
            if not isinstance(reqnum, int):
                return "auth_data.reqnum is not an integer"
            return self.replays.check_and_add(reqnum, signature)
        return None
