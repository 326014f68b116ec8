"""Sessions: a client pinned to this worker until it ends the session or it expires.

The wire contract is PROTOCOL.md § Sessions; the routes are in
`session_routes`. Where the reference is unsafe, this differs on purpose:

- ids are 22 characters of [A-Za-z0-9] from `secrets` (131 bits);
- a request or a `session_auth` matches a session only when it carries the
  session's whole `auth_data`, compared as JSON values in constant time;
- `expiration = max(expiration, now + lifetime)` when a request of the
  session is admitted and when it ends, and a session with a request in
  flight is never collected;
- the close callback goes only to a path on the model server or to an
  http(s) URL, in the background, without following redirects, and always
  carries the real `session_id`.

A session counts as one request of workload `auth_data.cost` (in `cur_load`
while open, served once when it closes); see `Metrics.track`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .data_types import AuthData
from .http import ClientLimits, ConnectionPool, UpstreamError
from .http.json_checks import dumps_compact
from .metrics import Metrics, Outcome, RequestTracker
from .validation import MISSING, JsonDataException, json_type_name

log = logging.getLogger("pyworker.sessions")

ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 22  # 62**22 > 2**130
DEFAULT_LIFETIME_S = 60.0
DEFAULT_MAX_SESSIONS = 10
# The route label of the sessions themselves in /metrics.
SESSION_ROUTE = "session"
# Expired sessions are closed within this long.
COLLECT_INTERVAL_S = 1.0
CALLBACK_TIMEOUT_S = 10.0
CALLBACK_CONCURRENCY = 4
# Callbacks waiting or in flight; beyond this a callback is dropped with a warning.
MAX_PENDING_CALLBACKS = 256
MAX_CALLBACK_ROUTE_CHARS = 2048
# What a path may hold (RFC 3986 pchar, "/" and "?" for a query), percent escapes included.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def new_session_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def _canonical(value: Any) -> Any:
    """`value` with every number that equals an integer as that integer (1.0 is 1)."""
    kind = type(value)
    if kind is float and value.is_integer():
        return int(value)
    if kind is dict:
        return {k: _canonical(v) for k, v in value.items()}
    if kind is list:
        return [_canonical(v) for v in value]
    return value


def auth_digest(auth: Any) -> bytes:
    """A digest equal for two `auth_data` values exactly when they are equal as JSON values."""
    text = json.dumps(_canonical(auth), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Where a session's close callback goes: `base` None means the model server."""

    base: str | None
    path: str


def callback_target(route: str) -> CallbackTarget:
    """Check an `on_close_route`; `ValueError` says why it is refused.

    A path (`/x` or `x`) is a route on the model server; an absolute URL
    must be http or https with a host and no credentials. Nothing else: no
    other scheme, no `//host` shorthand, no whitespace or control characters.
    """
    if len(route) > MAX_CALLBACK_ROUTE_CHARS:
        raise ValueError(f"longer than {MAX_CALLBACK_ROUTE_CHARS} characters")
    if not route.isascii() or any(c <= " " or c == "\x7f" for c in route):
        raise ValueError("must not contain spaces, control or non-ASCII characters")
    if "://" in route or route.startswith("//") or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", route):
        parts = urlsplit(route)
        if parts.scheme.lower() not in ("http", "https") or not route.lower().startswith(parts.scheme.lower() + "://"):
            raise ValueError("must be a path on the model server or an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are not accepted")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the URL's port is not valid") from None
        if parts.fragment:
            raise ValueError("the URL must not have a #fragment")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        base = f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return CallbackTarget(base, path)
    if not _PATH_CHARS.fullmatch(route):
        raise ValueError("is not a valid path")
    return CallbackTarget(None, route if route.startswith("/") else "/" + route)


@dataclass(frozen=True, slots=True)
class SessionAsk:
    """A checked `/session/create` body."""

    auth: AuthData
    auth_json: dict[str, Any]
    cost: float
    lifetime: float
    on_close_route: str | None
    on_close: CallbackTarget | None
    on_close_payload: Any


def _positive_number(value: Any, strings: bool) -> float | str:
    """`value` as a finite number (≥ 0 for a cost), or why it is not one."""
    if isinstance(value, str) and strings:
        try:
            number = float(value)
        except ValueError:
            return "expected a number"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        return f"expected a number, not {json_type_name(value)}"
    if not math.isfinite(number) or number < 0:
        return "expected a finite number, 0 or more"
    return number


def parse_create(data: Any) -> SessionAsk:
    """The create body checked field by field; `JsonDataException` names every bad one."""
    if not isinstance(data, dict):
        raise JsonDataException({"error": "request body must be a JSON object"})
    errors: dict[str, Any] = {}
    auth_json = data.get("auth_data")
    payload = data.get("payload")
    auth: AuthData | None = None
    cost = 0.0
    if not isinstance(auth_json, dict):
        errors["auth_data"] = MISSING if auth_json is None else "expected a JSON object"
    else:
        try:
            auth = AuthData.from_json_msg(auth_json)
        except JsonDataException as exc:
            errors["auth_data"] = exc.message
        else:
            checked = _positive_number(auth.cost, strings=True)
            if isinstance(checked, str):
                errors["auth_data"] = {"cost": checked}
            else:
                cost = checked
    lifetime = DEFAULT_LIFETIME_S
    route: str | None = None
    target: CallbackTarget | None = None
    route_payload: Any = None
    if not isinstance(payload, dict):
        errors["payload"] = MISSING if payload is None else "expected a JSON object"
    else:
        problems: dict[str, str] = {}
        raw_lifetime = payload.get("lifetime")
        if raw_lifetime is not None:
            checked = _positive_number(raw_lifetime, strings=False)
            if isinstance(checked, str) or checked <= 0:
                problems["lifetime"] = checked if isinstance(checked, str) else "must be more than 0 seconds"
            else:
                lifetime = checked
        route = payload.get("on_close_route")
        if route is not None:
            if not isinstance(route, str):
                problems["on_close_route"] = f"expected a string or null, not {json_type_name(route)}"
            else:
                try:
                    target = callback_target(route)
                except ValueError as exc:
                    problems["on_close_route"] = str(exc)
        if target is not None:
            route_payload = payload.get("on_close_payload")
        if problems:
            errors["payload"] = problems
    if errors or auth is None or not isinstance(auth_json, dict):
        raise JsonDataException(errors)
    return SessionAsk(auth, auth_json, cost, lifetime, route if target else None, target, route_payload)


@dataclass(eq=False)
class Session:
    session_id: str
    ask: SessionAsk
    digest: bytes
    created_at: float  # Unix time
    expiration: float  # Unix time
    tracker: RequestTracker
    # The handler tasks of the session's requests in flight: cancelled when it closes.
    requests: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    def extend(self) -> None:
        self.expiration = max(self.expiration, time.time() + self.ask.lifetime)

    def attach(self, task: asyncio.Task[Any]) -> None:
        self.requests.add(task)
        self.extend()

    def detach(self, task: asyncio.Task[Any]) -> None:
        self.requests.discard(task)
        if not self.closed:
            self.extend()

    def to_json(self) -> dict[str, Any]:
        """The `/session/get` answer."""
        ask = self.ask
        return {
            "session_id": self.session_id,
            "auth_data": ask.auth_json,
            "lifetime": ask.lifetime,
            "expiration": self.expiration,
            "created_at": self.created_at,
            "on_close_route": ask.on_close_route,
            "on_close_payload": ask.on_close_payload,
        }


class SessionsFull(Exception):
    """`max_sessions` sessions are open (answered 429)."""


def callback_body(session: Session) -> bytes:
    payload = session.ask.on_close_payload
    if isinstance(payload, dict):
        body = dict(payload)
    elif payload is None:
        body = {}
    else:
        body = {"payload": payload}
    body["session_id"] = session.session_id  # the real id wins over the payload's
    return dumps_compact(body).encode("utf-8")


class CallbackSender:
    """Posts close callbacks in the background: bounded in number, time and concurrency.

    One try each, status ignored, redirects never followed (our client
    follows none). `model_pool` gives the pool of the model server, for
    callbacks given as a path.
    """

    def __init__(
        self,
        model_pool: Callable[[], ConnectionPool],
        timeout_s: float = CALLBACK_TIMEOUT_S,
        concurrency: int = CALLBACK_CONCURRENCY,
        max_pending: int = MAX_PENDING_CALLBACKS,
    ) -> None:
        self._model_pool = model_pool
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def send(self, target: CallbackTarget, body: bytes, session_id: str) -> None:
        if len(self._tasks) >= self.max_pending:
            self.dropped += 1
            log.warning("session %s: close callback dropped, %d already pending", session_id, len(self._tasks))
            return
        task = asyncio.get_running_loop().create_task(self._post(target, body, session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, target: CallbackTarget, body: bytes, session_id: str) -> None:
        async with self._slots:
            where = target.base + target.path if target.base else f"the model server's {target.path}"
            try:
                status = await asyncio.wait_for(self._post_once(target, body), self.timeout_s)
            except (UpstreamError, asyncio.TimeoutError) as exc:
                self.failed += 1
                log.warning("session %s: close callback to %s failed: %s", session_id, where, exc or "timed out")
                return
            self.sent += 1
            log.info("session %s: close callback to %s answered %d", session_id, where, status)

    async def _post_once(self, target: CallbackTarget, body: bytes) -> int:
        pool: ConnectionPool | None = None
        if target.base is None:
            use = self._model_pool()
        else:
            limits = ClientLimits(self.timeout_s, self.timeout_s, max_idle_connections=0)
            use = pool = ConnectionPool(target.base, limits)
        try:
            async with await use.request("POST", target.path, body=body, content_type="application/json") as res:
                await res.read(64 * 1024)
                return res.status
        finally:
            if pool is not None:
                pool.close()

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the pending callbacks, then cancel what is left."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


class SessionTable:
    """The open sessions, with `max_sessions` checked and booked in one step.

    `max_sessions` 0 means no limit; a negative value refuses every create.
    """

    def __init__(self, metrics: Metrics, callbacks: CallbackSender, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self.metrics = metrics
        self.callbacks = callbacks
        self.max_sessions = max_sessions
        self._open: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._open)

    @property
    def load(self) -> float:
        """The workload the open sessions hold (their `cost`s), part of `cur_load`."""
        return sum(s.ask.cost for s in self._open.values())

    def open(self, ask: SessionAsk) -> Session:
        """Store a new session, or raise `SessionsFull` (its cost then counts as rejected).

        No await from the check to the booking: exact under a burst.
        """
        tracker = self.metrics.track(ask.auth.request_idx, ask.cost, SESSION_ROUTE)
        limit = self.max_sessions
        if limit < 0 or (limit > 0 and len(self._open) >= limit):
            tracker.finish(Outcome.REJECTED)
            raise SessionsFull(f"{len(self._open)} sessions are open, the most this worker keeps")
        tracker.admitted()
        tracker.started_at = tracker.entered_at
        session_id = new_session_id()
        while session_id in self._open:  # 2**-130 odds, but never two with one id
            session_id = new_session_id()
        now = tracker.entered_at
        session = Session(session_id, ask, auth_digest(ask.auth_json), now, now + ask.lifetime, tracker)
        self._open[session_id] = session
        log.info("session %s opened for %g s (cost %g)", session_id, ask.lifetime, ask.cost)
        return session

    def find(self, session_id: str, auth: Any) -> Session | None:
        """The open session `session_id` if `auth` is its `auth_data`, else None.

        An unknown id and a known one with other `auth_data` look the same,
        and the `auth_data` comparison takes the same time wherever they differ.
        """
        session = self._open.get(session_id)
        digest = auth_digest(auth)
        if session is None:
            hmac.compare_digest(digest, digest)  # the same work as a comparison
            return None
        return session if hmac.compare_digest(digest, session.digest) else None

    def close(self, session: Session, why: str) -> None:
        """Remove the session, stop its requests in flight, count it served, send its callback."""
        if session.closed:
            return
        session.closed = True
        self._open.pop(session.session_id, None)
        for task in list(session.requests):
            task.cancel()  # the connection closes: a stream stops mid-body
        session.tracker.finish(Outcome.SUCCESS)
        log.info("session %s %s, %d request(s) in flight stopped", session.session_id, why, len(session.requests))
        if session.ask.on_close is not None:
            self.callbacks.send(session.ask.on_close, callback_body(session), session.session_id)

    def collect(self, now: float | None = None) -> int:
        """Close every expired session with no request in flight; how many were closed."""
        now = time.time() if now is None else now
        expired = [s for s in self._open.values() if s.expiration <= now and not s.requests]
        for session in expired:
            self.close(session, "expired")
        return len(expired)

    async def collect_forever(self, interval_s: float = COLLECT_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.collect()
            except Exception:
                log.exception("collecting expired sessions failed")

    def close_all(self, why: str) -> None:
        for session in list(self._open.values()):
            self.close(session, why)
