"""Load-testing a deployed endpoint group (or the local stack) the way clients use it.

Each request asks the autoscaler for a route (`POST /route/` with the
endpoint group, API key and the payload's workload as cost), then sends the
payload with the returned `auth_data` to the worker it names. Arrivals are
open-loop: request i starts at i / rps seconds whatever earlier ones are
doing, so a slow system shows as growing latency and in-flight counts, not
as a quietly lower rate.

    python scripts/loadtest.py -n 1000 -rps 0.5 -k "$API_KEY" -e "$ENDPOINT_GROUP_NAME"
    python scripts/loadtest.py -n 1000 -rps 20 -l           # against python -m pyworker.dev

A worker's `test_load.py` calls `run(make_payload, WORKER_ENDPOINT)`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data_types import ApiPayload
from ..http import ClientLimits, ConnectionPool, UpstreamError, UpstreamTimeout
from ..process import stop_on_signals
from .stats import Stats
from .view import LiveView, summary_text

DEFAULT_AUTOSCALER = "https://run.vast.ai"
LOCAL_AUTOSCALER = "http://127.0.0.1:8081"
DEFAULT_WORKER = "workers.hello_world"

DEFAULT_SESSION_COST = 100.0  # the SDK's default
DEFAULT_SESSION_LIFETIME_S = 60.0

PayloadFactory = Callable[[], ApiPayload]


@dataclass(eq=False)
class _SessionGroup:
    """One session of the load test: its opening, and how many of its requests are still to finish."""

    opened: asyncio.Task[tuple[str, dict[str, Any], str] | str]
    left: int
    ended: bool = False


class LoadTest:
    """Open-loop arrivals: request i starts at i / rps seconds, routed by the autoscaler, sent to the worker it names."""

    def __init__(
        self,
        autoscaler_url: str,
        endpoint_group: str,
        api_key: str,
        route: str,
        make_payload: PayloadFactory,
        total: int,
        rps: float,
        stream: bool = False,
        timeout_s: float = 120.0,
        session_size: int = 0,
        session_cost: float = DEFAULT_SESSION_COST,
        session_lifetime_s: float = DEFAULT_SESSION_LIFETIME_S,
    ) -> None:
        self.autoscaler_url = autoscaler_url.rstrip("/")
        self.endpoint_group = endpoint_group
        self.api_key = api_key
        self.route = route if route.startswith("/") else "/" + route
        self.make_payload = make_payload
        self.stream = stream
        self.stats = Stats(asked=total, rps=rps)
        self.limits = ClientLimits(
            connect_timeout_s=min(10.0, timeout_s), read_timeout_s=timeout_s, max_idle_connections=256
        )
        self._autoscaler = ConnectionPool(self.autoscaler_url, self.limits)
        self._workers: dict[str, ConnectionPool] = {}
        # With sessions: request i is in session i // session_size.
        self.session_size = session_size
        self.session_cost = session_cost
        self.session_lifetime_s = session_lifetime_s
        self._sessions: dict[int, _SessionGroup] = {}
        self.stats.session_size = session_size

    def _worker_pool(self, url: str) -> ConnectionPool:
        pool = self._workers.get(url)
        if pool is None:
            pool = self._workers[url] = ConnectionPool(url, self.limits)
        return pool

    async def _route(self, cost: float) -> dict[str, Any] | str:
        """The autoscaler's signed answer for a request of workload `cost`, or the error's kind."""
        body = {"endpoint": self.endpoint_group, "api_key": self.api_key, "cost": cost}
        self.stats.routing += 1
        try:
            status, answer = await _post_json(self._autoscaler, "/route/", body)
            if status != 200:
                return f"route error {status}"
        except UpstreamTimeout:
            return "route timeout"
        except UpstreamError:
            return "route connection error"
        finally:
            self.stats.routing -= 1
        try:
            auth = json.loads(answer)
        except ValueError:
            return "route error: not JSON"
        if not isinstance(auth, dict) or not isinstance(auth.get("url"), str):
            return "route error: no worker url"
        return auth

    async def one(self, index: int = 0) -> None:
        """Request `index`: routed, or (with sessions) sent in the session it belongs to."""
        stats = self.stats
        start = time.monotonic()
        payload = self.make_payload()
        if self.session_size:
            await self._one_in_session(self._session_group(index), payload, start)
            return
        auth = await self._route(float(payload.count_workload()))
        if isinstance(auth, str):
            stats.error(auth)
            return
        await self._send(str(auth["url"]), {"auth_data": auth, "payload": payload.generate_payload_json()}, start)

    async def _one_in_session(self, group: _SessionGroup, payload: ApiPayload, start: float) -> None:
        try:
            opened = await asyncio.shield(group.opened)  # one opening for the whole group
            if isinstance(opened, str):
                self.stats.error(opened)
                return
            url, auth, session_id = opened
            body = {"auth_data": auth, "payload": payload.generate_payload_json(), "session_id": session_id}
            await self._send(url, body, start)
        finally:
            group.left -= 1
            if group.left == 0:
                await self._end_session(group)

    async def _send(self, url: str, request: dict[str, Any], start: float) -> None:
        """POST one request to the worker at `url` and count how it ended."""
        stats = self.stats
        url = url.rstrip("/")
        body = json.dumps(request).encode()
        stats.in_flight += 1
        try:
            pool = self._worker_pool(url)
            async with await pool.request("POST", self.route, body=body, content_type="application/json") as res:
                first = True
                async for _ in res.iter_chunks():
                    if first and self.stream:
                        stats.ttfb.append(time.monotonic() - start)
                    first = False
                if res.status != 200:
                    stats.error(f"worker error {res.status}")
                    return
        except UpstreamTimeout:
            stats.error("worker timeout")
            return
        except (UpstreamError, ValueError):
            stats.error("worker connection error")
            return
        finally:
            stats.in_flight -= 1
        stats.latencies.append(time.monotonic() - start)
        stats.per_worker[url] += 1
        stats.done += 1

    # -- sessions (--session N): N requests a session, opened by its first ----------

    def _session_group(self, index: int) -> _SessionGroup:
        number = index // self.session_size
        group = self._sessions.get(number)
        if group is None:
            size = min(self.session_size, self.stats.asked - number * self.session_size)
            opener = asyncio.get_running_loop().create_task(self._open_session())
            group = self._sessions[number] = _SessionGroup(opener, size)
        return group

    async def _open_session(self) -> tuple[str, dict[str, Any], str] | str:
        """(worker url, auth_data, session_id) as the SDK opens a session, or the error's kind."""
        auth = await self._route(self.session_cost)
        if isinstance(auth, str):
            return f"session {auth}"
        url = str(auth["url"]).rstrip("/")
        create = {"auth_data": auth, "payload": {"lifetime": self.session_lifetime_s}, "session_id": None}
        try:
            status, answer = await self._session_call(url, "/session/create", create)
        except UpstreamError:
            return "session create connection error"
        session_id = answer.get("session_id") if isinstance(answer, dict) else None
        if status != 201 or not isinstance(session_id, str):
            return f"session create error {status}"
        self.stats.sessions_opened += 1
        return url, auth, session_id

    async def _end_session(self, group: _SessionGroup) -> None:
        opened = group.opened.result() if group.opened.done() else await group.opened
        if isinstance(opened, str) or group.ended:
            return
        group.ended = True
        url, auth, session_id = opened
        try:
            status, _ = await self._session_call(url, "/session/end", {"session_id": session_id, "session_auth": auth})
        except UpstreamError:
            self.stats.session_end_errors["connection error"] += 1
            return
        if status != 200:
            self.stats.session_end_errors[f"status {status}"] += 1
            return
        self.stats.sessions_ended += 1

    async def _session_call(self, url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST to a worker's session route: (status, the answer's JSON, None if it is not JSON)."""
        status, raw = await _post_json(self._worker_pool(url), path, body)
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 30.0, view: LiveView | None = None) -> Stats:
        """Send every request on schedule (until `stop`), then wait for the ones in flight."""
        stats = self.stats
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        # The first payload loads the tokenizer (a fraction of a second): do it
        # before the clock starts, so that the schedule does not slip.
        await asyncio.to_thread(lambda: self.make_payload().count_workload())
        drawer = loop.create_task(self._draw(view)) if view is not None else None
        start = stats.started_at = time.monotonic()
        interval = 1.0 / stats.rps
        try:
            for i in range(stats.asked):
                due = start + i * interval
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if stop.is_set():
                    stats.stopped_early = True
                    break
                now = time.monotonic()
                stats.arrival_lag.append(max(0.0, now - due))
                stats.sent += 1
                stats.last_sent_at = now
                task = loop.create_task(self.one(i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await self._drain(tasks, stop, drain_timeout_s)
            # Sessions whose requests were not all sent (stopped early) are ended too.
            for group in self._sessions.values():
                await self._end_session(group)
        finally:
            stats.finished_at = time.monotonic()
            if drawer is not None:
                drawer.cancel()
                if view is not None:
                    view.draw()
            self._autoscaler.close()
            for pool in self._workers.values():
                pool.close()
        return stats

    async def _drain(self, tasks: set[asyncio.Task[None]], stop: asyncio.Event, drain_timeout_s: float) -> None:
        """Wait for the requests in flight; after `stop`, at most `drain_timeout_s` more."""
        stopper = asyncio.get_running_loop().create_task(stop.wait())
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending - {stopper} and not stop.is_set():
            _, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        left = {t for t in tasks if not t.done()}
        if left:
            self.stats.stopped_early = True
            _, left = await asyncio.wait(left, timeout=drain_timeout_s)
        for task in left:
            task.cancel()
            self.stats.error("cancelled at stop")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _draw(self, view: LiveView | None) -> None:
        assert view is not None
        while True:
            view.draw()
            await asyncio.sleep(view.interval_s)


async def _post_json(pool: ConnectionPool, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    """POST `body` as JSON: the status and the answer (1 MiB at most)."""
    data = json.dumps(body).encode()
    async with await pool.request("POST", path, body=data, content_type="application/json") as res:
        return res.status, await res.read(1024 * 1024)


def _payload_factory(source: ApiPayload | PayloadFactory | type[ApiPayload]) -> PayloadFactory:
    if isinstance(source, ApiPayload):
        return lambda: source
    if isinstance(source, type):
        payload_cls: type[ApiPayload] = source
        return payload_cls.for_test
    return source


def load_worker_payloads(module: str) -> tuple[PayloadFactory, str]:
    """A worker module's payload factory and route, from its `test_load.py`."""
    try:
        test_load = importlib.import_module(f"{module}.test_load")
    except ModuleNotFoundError as exc:
        raise SystemExit(f"loadtest: cannot import {module}.test_load: {exc}") from None
    make = getattr(test_load, "make_payload", None)
    endpoint = getattr(test_load, "WORKER_ENDPOINT", None)
    if make is None or not isinstance(endpoint, str):
        raise SystemExit(f"loadtest: {module}.test_load must define make_payload() and WORKER_ENDPOINT")
    return _payload_factory(make), endpoint


def parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loadtest",
        description=description or "Load-test an endpoint group: route through the autoscaler, then call the worker.",
    )
    p.add_argument("-n", "--requests", type=int, default=100, help="total requests (default: %(default)s)")
    p.add_argument("-rps", "--rps", type=float, default=1.0, help="requests per second (default: %(default)s)")
    p.add_argument(
        "-k", "--api-key", default=os.environ.get("VAST_API_KEY", ""), help="API key (default: $VAST_API_KEY)"
    )
    p.add_argument("-e", "--endpoint", default="local", help="endpoint group name (default: %(default)s)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "-l", "--local", action="store_true", help=f"use the local stand-in autoscaler at {LOCAL_AUTOSCALER}"
    )
    where.add_argument("--autoscaler", metavar="URL", help=f"autoscaler base URL (default: {DEFAULT_AUTOSCALER})")
    p.add_argument("--worker", default=None, help=f"worker module whose payloads to send (default: {DEFAULT_WORKER})")
    p.add_argument("--route", default=None, help="worker route (default: the worker module's WORKER_ENDPOINT)")
    p.add_argument("--stream", action="store_true", help="measure time to first byte as well (for streaming routes)")
    p.add_argument(
        "--session",
        type=int,
        default=0,
        metavar="N",
        help="send the requests in sessions of N each: the first opens one (route, /session/create), "
        "the rest go straight to its worker, the last to finish ends it (default: no sessions)",
    )
    p.add_argument(
        "--session-cost",
        type=float,
        default=DEFAULT_SESSION_COST,
        help="workload a session holds while open, asked of the route (default: %(default)s)",
    )
    p.add_argument(
        "--session-lifetime",
        type=float,
        default=DEFAULT_SESSION_LIFETIME_S,
        help="a session's lifetime, seconds (default: %(default)s)",
    )
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON to FILE")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="longest silence from a server, seconds (default: %(default)s)"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="after Ctrl-C, wait this long for requests in flight"
    )
    return p


def main(
    argv: Sequence[str] | None = None,
    make_payload: ApiPayload | PayloadFactory | type[ApiPayload] | None = None,
    route: str | None = None,
) -> int:
    """Run the CLI; returns the exit status (0 only when every request succeeded)."""
    args = parser().parse_args(argv)
    if args.requests < 1 or args.rps <= 0:
        print("loadtest: -n must be at least 1 and -rps above 0", file=sys.stderr)
        return 2
    if args.session < 0 or args.session_lifetime <= 0:
        print("loadtest: --session must be 0 or more and --session-lifetime above 0", file=sys.stderr)
        return 2
    if make_payload is None or args.worker:
        factory, default_route = load_worker_payloads(args.worker or DEFAULT_WORKER)
    else:
        factory, default_route = _payload_factory(make_payload), route or "/generate"
    autoscaler = LOCAL_AUTOSCALER if args.local else (args.autoscaler or DEFAULT_AUTOSCALER)
    test = LoadTest(
        autoscaler,
        args.endpoint,
        args.api_key,
        args.route or default_route,
        factory,
        args.requests,
        args.rps,
        stream=args.stream,
        timeout_s=args.timeout,
        session_size=args.session,
        session_cost=args.session_cost,
        session_lifetime_s=args.session_lifetime,
    )
    print(
        f"loadtest: {args.requests} requests at {args.rps:g}/s to endpoint group {args.endpoint!r} "
        f"via {autoscaler}, worker route {test.route}" + (f", in sessions of {args.session}" if args.session else ""),
        file=sys.stderr,
        flush=True,
    )

    async def go() -> Stats:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await test.run(stop, args.drain_timeout, LiveView(test.stats))

    stats = asyncio.run(go())
    summary = stats.summary()
    sys.stdout.write(summary_text(summary))
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    if stats.failed or stats.session_end_errors:
        return 1
    return 130 if stats.stopped_early else 0


def run(
    make_payload: ApiPayload | PayloadFactory | type[ApiPayload],
    worker_endpoint: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point for a worker's `test_load.py`: parse the command line and load-test."""
    raise SystemExit(main(argv, make_payload, worker_endpoint))
