"""`Backend`: the proxy path from a worker route to the model server.

For each request: parse JSON into `AuthData` and the handler's payload (422
naming the bad fields), check the signature (401), count the workload, admit
it to the queue (429), wait for its turn, forward to the model server (502 /
504 when it fails) and pass the answer back, streaming when the model streams.
Each request ends in exactly one `Outcome` in `backend.metrics`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from .auth import SignatureChecker
from .config import ConfigError
from .data_types import ApiPayload, EndpointHandler
from .http import (
    ClientDisconnected,
    ClientLimits,
    ConnectionPool,
    Handler,
    Request,
    Response,
    ResponseAborted,
    StreamResponse,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnhealthy,
    json_response,
)
from .http.headers import passthrough_headers
from .http.json_checks import MAX_JSON_DEPTH, JsonBodyError, dumps_compact, loads_checked
from .logs import access_log, log_access
from .metrics import Metrics, Outcome, RequestTracker
from .queue import QueueFull, WorkQueue
from .sessions import CallbackSender, Session, SessionTable
from .validation import JsonDataException, json_type_name

log = logging.getLogger("pyworker.backend")

# Request bodies over this size have their workload counted in a thread, so a
# huge prompt never holds the event loop while it is tokenized.
LARGE_BODY_BYTES = 16 * 1024
# Largest health or other forwarded answer read whole.
FORWARD_BODY_BYTES = 1024 * 1024
DEFAULT_MODEL_SERVER_URL = "http://127.0.0.1:5001"


class _Access:
    """What one request's access line says, filled in as the request goes."""

    __slots__ = ("route", "arrived", "request_idx", "workload", "tracker")

    def __init__(self, route: str) -> None:
        self.route = route
        self.arrived = time.monotonic()
        self.request_idx: int | None = None
        self.workload: float | None = None
        self.tracker: RequestTracker | None = None

    def log(self, status: int, sent: int) -> None:
        tracker = self.tracker
        now = time.monotonic()
        fields: dict[str, Any] = {
            "route": self.route,
            "status": status,
            "outcome": "refused" if tracker is None or tracker.outcome is None else tracker.outcome.name.lower(),
            "request_idx": self.request_idx,
            "workload": self.workload,
        }
        if tracker is not None and tracker.started_at is not None:
            fields["queue_ms"] = round((tracker.started_at - tracker.entered_at) * 1000, 3)
            fields["model_ms"] = round(max(0.0, time.time() - tracker.started_at) * 1000, 3)
        fields["bytes"] = sent
        fields["ms"] = round((now - self.arrived) * 1000, 3)
        log_access(fields)


# Model-server failures by kind, for /metrics.
_ERROR_KINDS: dict[type[UpstreamError], str] = {
    UpstreamUnavailable: "unavailable",
    UpstreamTimeout: "timeout",
    UpstreamProtocolError: "protocol",
    UpstreamUnhealthy: "down",
}
# The body key naming the session a request belongs to.
SESSION_KEY = "session_id"
# Strings at least this long are escaped apart from the rest of a large body.
_BIG_STRING_CHARS = 64 * 1024


def json_fragments(data: Any) -> list[str]:
    """The compact JSON text of `data`, as fragments that join to `json.dumps(data)`.

    json.dumps holds a huge string twice at its end: escaped, and inside the
    joined result. Here each string of `_BIG_STRING_CHARS` or more is
    escaped on its own and stays a fragment of its own; the rest of the
    tree is dumped around placeholders, which are unique to this call.
    """
    big: list[str] = []
    mark = "\x00" + secrets.token_hex(8)
    skeleton = dumps_compact(_swap_big_strings(data, big, mark))
    if not big:
        return [skeleton]
    quoted_mark = json.dumps(mark)[:-1]  # '"\\u0000<hex>', the start of each placeholder
    parts = skeleton.split(quoted_mark)
    out = [parts[0]]
    for part in parts[1:]:
        index, _, rest = part.partition('"')
        out.append(json.dumps(big[int(index)]))
        out.append(rest)
    return out


def _swap_big_strings(value: Any, big: list[str], mark: str) -> Any:
    """`value` with each long string moved to `big` and replaced by `mark` + its index.

    A plain function on purpose: a recursive closure is a reference cycle,
    and it would keep the huge strings alive until the cyclic GC runs.
    """
    kind = type(value)
    if kind is str and len(value) >= _BIG_STRING_CHARS:
        big.append(value)
        return f"{mark}{len(big) - 1}"
    if kind is dict:
        return {k: _swap_big_strings(v, big, mark) for k, v in value.items()}
    if kind is list:
        return [_swap_big_strings(v, big, mark) for v in value]
    return value


class LogAction(enum.Enum):
    """What a line of the model server's log means (matched by substring)."""

    ModelLoaded = 1  # the model is ready: benchmark, then serve
    ModelError = 2  # the model failed: report it
    Info = 3  # worth echoing into the worker's own log


class Backend:
    """One model server: its address, its log, its queue and its metrics.

    `MODEL_SERVER_URL` in the environment overrides `model_server_url`, and
    `MODEL_LOG` is the default for `model_log_file`, so a worker module runs
    against any model server without edits.
    """

    def __init__(
        self,
        model_server_url: str = DEFAULT_MODEL_SERVER_URL,
        model_log_file: str | None = None,
        allow_parallel_requests: bool = True,
        benchmark_handler: EndpointHandler[Any] | None = None,
        log_actions: Sequence[tuple[LogAction, str]] = (),
        max_queue_time: float = 30.0,
        healthcheck_url: str | None = None,
    ) -> None:
        self.model_server_url = model_server_url
        self.model_log_file = model_log_file
        self.allow_parallel_requests = allow_parallel_requests
        self.benchmark_handler = benchmark_handler
        self.log_actions = list(log_actions)
        self.max_queue_time = max_queue_time
        self.healthcheck_url = healthcheck_url
        self.max_json_depth = MAX_JSON_DEPTH
        # Why the health check declared the model down, or None while it is not.
        self.model_down: str | None = None
        self.queue = WorkQueue()
        self.metrics = Metrics()
        self._pool: ConnectionPool | None = None
        self.sessions = SessionTable(self.metrics, CallbackSender(lambda: self.pool))
        # Set by the worker at start: None means UNSECURED (no checks).
        self.signatures: SignatureChecker | None = None
        self._client_limits = ClientLimits()
        # Payload classes counted once already: their first count (which may
        # load a tokenizer) ran in a thread.
        self._warm: set[type[ApiPayload]] = set()

    # -- configuration -------------------------------------------------------

    def configure(
        self,
        model_server_url: str | None = None,
        model_log_file: str | None = None,
        client_limits: ClientLimits | None = None,
    ) -> None:
        """Apply settings from the environment (called by `start_server`)."""
        if model_server_url:
            self.model_server_url = model_server_url
        if model_log_file:
            self.model_log_file = model_log_file
        if client_limits is not None:
            self._client_limits = client_limits
        if self.model_log_file is None and not self.healthcheck_url:
            raise ConfigError(
                "MODEL_LOG is not set: the path of the model server's log file "
                "(needed to know when the model is loaded, as this worker has no healthcheck_url)"
            )
        try:
            ConnectionPool(self.model_server_url)
        except ValueError as exc:
            raise ConfigError(f"MODEL_SERVER_URL: {exc}") from None
        self.close()

    def close(self) -> None:
        """Close the connections to the model server, if any were made."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def pool(self) -> ConnectionPool:
        """The keep-alive connection pool to the model server."""
        if self._pool is None:
            self._pool = ConnectionPool(self.model_server_url, self._client_limits)
        return self._pool

    # -- routes ----------------------------------------------------------------

    def create_handler(self, handler: EndpointHandler[Any]) -> Handler:
        """A route handler that proxies through `handler` to the model server."""

        # A partial, not a wrapping coroutine: every resumption of a request's
        # task passes through each coroutine frame on its way down.
        return functools.partial(self._handle, handler)

    async def forward(self, method: str, path: str) -> Response:
        """Send a body-less request to the model server and return its answer whole.

        For routes like `/healthcheck`; a model server that cannot be reached
        gives 502 (or 504 on a timeout) with a JSON error.
        """
        try:
            async with await self.pool.request(method, path) as res:
                body = await res.read(FORWARD_BODY_BYTES)
                headers = passthrough_headers(res.headers)
                return Response(body, status=res.status, headers=headers)
        except UpstreamError as exc:
            return json_response({"error": str(exc)}, status=exc.status)

    def declare_model_down(self, reason: str, silent_for_s: float) -> None:
        """The health check gave up on the model: stop waiting on it.

        Requests whose model connection has been silent for `silent_for_s`
        (they wait on a model that no longer answers anything) end at once
        with 503, and so does every request that reaches the model until
        `declare_model_up`. An exchange the model is still sending on is
        left alone: a slow model is not a hung one.
        """
        self.model_down = reason
        failed = self.pool.fail_silent(UpstreamUnhealthy(f"model server is down: {reason}"), silent_for_s)
        log.warning("model declared down (%s): %d request(s) waiting on it ended with 503", reason, failed)

    def declare_model_up(self) -> None:
        if self.model_down is not None:
            self.model_down = None
            log.info("model healthy again: requests go through")

    def check_signature(self, auth: Any, replay_check: bool = True) -> str | None:
        """None when the request may pass, else why it may not (answered 401).

        `auth` is the request's `auth_data` object as received (field order
        matters to the older signature scheme); see `SignatureChecker.check`.
        """
        checker = self.signatures
        return None if checker is None else checker.check(auth, replay_check)

    def runs_in_parallel(self, handler: EndpointHandler[Any]) -> bool:
        """The handler's `allow_parallel_requests`, or the backend's when it leaves it None."""
        return (
            self.allow_parallel_requests if handler.allow_parallel_requests is None else handler.allow_parallel_requests
        )

    async def warm_up(self) -> None:
        """Count one benchmark payload in a thread, so that the first request finds
        what counting needs (a tokenizer, say) loaded and counts on the event loop."""
        handler = self.benchmark_handler
        if handler is None:
            return
        try:
            await self._count_in_thread(handler.make_benchmark_payload())
        except Exception as exc:  # the first request meets it again, and answers for it
            log.warning("warming up the workload count failed: %s", exc)

    async def _count_in_thread(self, payload: ApiPayload) -> float:
        workload = await asyncio.to_thread(payload.count_workload)
        self._warm.add(type(payload))
        return float(workload)

    def _authorize(self, data: dict[str, Any], auth: Any) -> Session | Response | None:
        """None for an ordinary request that may pass, the session of one made in
        a session, or the answer refusing it (422, 401, 410).

        A request naming a session must carry that session's `auth_data`,
        verified when the session was created. Anything else is checked as a
        signature first, so an unsigned caller gets 401 whatever id it names
        and cannot tell live ids from dead ones.
        """
        session_id = data.get(SESSION_KEY)
        if session_id is not None and not isinstance(session_id, str):
            return json_response(
                {SESSION_KEY: f"expected a string or null, not {json_type_name(session_id)}"}, status=422
            )
        session = None if session_id is None else self.sessions.find(session_id, auth)
        if session is not None:
            return session
        refusal = self.check_signature(auth, replay_check=session_id is None)
        if refusal is not None:
            return json_response({"error": refusal}, status=401)
        if session_id is not None:
            return json_response({"error": "invalid session"}, status=410)
        return None

    def _refuse(self, route: str, response: Response) -> Response:
        """Count a request answered before it was admitted (bad input, signature, session)."""
        self.metrics.telemetry.refused(route)
        return response

    def _model_failed(self, route: str, exc: UpstreamError) -> None:
        log.warning("%s: %s", route, exc)
        self.metrics.telemetry.model_errors[_ERROR_KINDS.get(type(exc), "protocol")] += 1

    async def _handle(self, handler: EndpointHandler[Any], request: Request) -> Response | StreamResponse:
        """Proxy one request, then write its access line (whatever the way out)."""
        route = handler.endpoint  # a property: read once
        access = _Access(route)
        status = 500
        result: Response | StreamResponse | None = None
        try:
            result = await self._proxy(handler, route, request, access)
            status = result.status
            return result
        except (asyncio.CancelledError, ClientDisconnected):
            status = 499  # the client went away (nginx's code for it)
            raise
        except ResponseAborted:
            status = 502  # the answer was cut: its head may have said otherwise
            raise
        finally:
            if access_log.isEnabledFor(logging.INFO):
                # A whole Response goes out after this returns: its size is its body's.
                sent = len(result.body) if isinstance(result, Response) else request.body_bytes_sent
                access.log(status, sent)

    async def _proxy(
        self, handler: EndpointHandler[Any], route: str, request: Request, access: _Access
    ) -> Response | StreamResponse:
        arrived = access.arrived
        try:
            data = loads_checked(request.body, self.max_json_depth)
        except JsonBodyError as exc:
            return self._refuse(route, json_response({"error": str(exc)}, status=422))
        try:
            auth, payload = handler.get_data_from_request(data)
        except JsonDataException as exc:
            return self._refuse(route, json_response(exc.message, status=422))
        session = self._authorize(data, data[handler.AUTH_KEY])
        if isinstance(session, Response):
            return self._refuse(route, session)

        parallel = self.runs_in_parallel(handler)
        small = len(request.body) <= LARGE_BODY_BYTES
        # A parallel request's workload can be counted once the request is on
        # its way to the model, while the model works: the admission below
        # does not depend on it, and the pool calls `book` before it first
        # awaits anything, so no other request is admitted before it is booked.
        deferred = small and parallel and session is None and type(payload) in self._warm
        if deferred:
            workload = 0.0
        elif not small or type(payload) not in self._warm:
            workload = await self._count_in_thread(payload)
        else:
            workload = float(payload.count_workload())
        limit = self.max_queue_time if handler.max_queue_time is None else handler.max_queue_time
        task = asyncio.current_task()
        assert task is not None  # handlers run in the connection's task
        access.request_idx = auth.request_idx
        access.workload = workload
        if session is None:
            tracker = self.metrics.track(auth.request_idx, workload, route)
            booked = workload
        elif session.closed:  # while the workload was counted
            return self._refuse(route, json_response({"error": "invalid session"}, status=410))
        else:
            # The session's cost stands for its requests' load (PROTOCOL.md § Sessions).
            tracker = self.metrics.track_in_session(auth.request_idx, workload, route)
            booked = 0.0
        access.tracker = tracker
        try:
            ticket = self.queue.admit(booked, limit, parallel)
        except QueueFull as exc:
            if deferred:
                tracker.workload = access.workload = float(payload.count_workload())
            tracker.finish(Outcome.REJECTED)
            return json_response({"error": str(exc)}, status=429)

        def book() -> None:
            """Count a deferred workload and book it (once), then count the request admitted."""
            nonlocal deferred
            if deferred:
                deferred = False
                counted = float(payload.count_workload())
                ticket.book(counted)
                tracker.workload = access.workload = counted
                tracker.admitted()

        if not deferred:
            tracker.admitted()
        if session is not None:
            session.attach(task)  # no await since `closed` was read

        outcome = Outcome.ERROR
        try:
            async with ticket:
                tracker.started()
                if self.model_down is not None:
                    return json_response({"error": f"model server is down: {self.model_down}"}, status=503)
                model_json = handler.generate_payload_json(payload)
                body: bytes | list[str]
                if len(request.body) > LARGE_BODY_BYTES:
                    body = json_fragments(model_json)
                else:
                    body = dumps_compact(model_json).encode("utf-8")
                try:
                    model_response = await self.pool.request(
                        "POST", route, body=body, content_type="application/json", before_wait=book
                    )
                except UpstreamError as exc:
                    self._model_failed(route, exc)
                    return json_response({"error": str(exc)}, status=exc.status)
                async with model_response:
                    try:
                        result = await handler.generate_client_response(request, model_response)
                    except UpstreamError as exc:
                        self._model_failed(route, exc)
                        if request.response_started:
                            raise ResponseAborted(str(exc)) from None
                        return json_response({"error": str(exc)}, status=exc.status)
                if isinstance(result, Response):
                    request.respond(result)  # now: what is left to do here need not delay the client
                if result.status >= 500:
                    self.metrics.telemetry.model_errors["status_5xx"] += 1
                    outcome = Outcome.ERROR
                else:
                    outcome = Outcome.SUCCESS
                    first = request.first_body_at
                    if isinstance(result, StreamResponse) and first is not None:
                        self.metrics.telemetry.first_byte.observe(max(0.0, first - arrived), route=route)
                return result
        except (asyncio.CancelledError, ClientDisconnected):
            outcome = Outcome.CANCELLED
            raise
        finally:
            book()  # if the request failed before the pool called it
            tracker.finish(outcome)
            if session is not None:
                session.detach(task)
