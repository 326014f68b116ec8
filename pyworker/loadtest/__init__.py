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
from typing import Any, Callable, Sequence

from ..data_types import ApiPayload
from ..http import ClientLimits, ConnectionPool, UpstreamError, UpstreamTimeout
from ..process import stop_on_signals
from .stats import Stats
from .view import LiveView, summary_text

DEFAULT_AUTOSCALER = "https://run.vast.ai"
LOCAL_AUTOSCALER = "http://127.0.0.1:8081"
DEFAULT_WORKER = "workers.hello_world"

PayloadFactory = Callable[[], ApiPayload]


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
    ) -> None:
        self.autoscaler_url = autoscaler_url.rstrip("/")
        self.endpoint_group = endpoint_group
        self.api_key = api_key
        self.route = route if route.startswith("/") else "/" + route
        self.make_payload = make_payload
        self.stream = stream
        self.stats = Stats(asked=total, rps=rps)
        self.limits = ClientLimits(connect_timeout_s=min(10.0, timeout_s), read_timeout_s=timeout_s, max_idle_connections=256)
        self._autoscaler = ConnectionPool(self.autoscaler_url, self.limits)
        self._workers: dict[str, ConnectionPool] = {}

    def _worker_pool(self, url: str) -> ConnectionPool:
        pool = self._workers.get(url)
        if pool is None:
            pool = self._workers[url] = ConnectionPool(url, self.limits)
        return pool

    async def _route(self, cost: float) -> dict[str, Any] | None:
        stats = self.stats
        body = json.dumps({"endpoint": self.endpoint_group, "api_key": self.api_key, "cost": cost}).encode()
        try:
            async with await self._autoscaler.request("POST", "/route/", body=body, content_type="application/json") as res:
                answer = await res.read(1024 * 1024)
                if res.status != 200:
                    stats.error(f"route error {res.status}")
                    return None
        except UpstreamTimeout:
            stats.error("route timeout")
            return None
        except UpstreamError:
            stats.error("route connection error")
            return None
        try:
            auth = json.loads(answer)
        except ValueError:
            stats.error("route error: not JSON")
            return None
        if not isinstance(auth, dict) or not isinstance(auth.get("url"), str):
            stats.error("route error: no worker url")
            return None
        return auth

    async def one(self) -> None:
        stats = self.stats
        start = time.monotonic()
        payload = self.make_payload()
        stats.routing += 1
        try:
            auth = await self._route(float(payload.count_workload()))
        finally:
            stats.routing -= 1
        if auth is None:
            return
        url = str(auth["url"]).rstrip("/")
        body = json.dumps({"auth_data": auth, "payload": payload.generate_payload_json()}).encode()
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
                task = loop.create_task(self.one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await self._drain(tasks, stop, drain_timeout_s)
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
    p.add_argument("-k", "--api-key", default=os.environ.get("VAST_API_KEY", ""), help="API key (default: $VAST_API_KEY)")
    p.add_argument("-e", "--endpoint", default="local", help="endpoint group name (default: %(default)s)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-l", "--local", action="store_true", help=f"use the local stand-in autoscaler at {LOCAL_AUTOSCALER}")
    where.add_argument("--autoscaler", metavar="URL", help=f"autoscaler base URL (default: {DEFAULT_AUTOSCALER})")
    p.add_argument("--worker", default=None, help=f"worker module whose payloads to send (default: {DEFAULT_WORKER})")
    p.add_argument("--route", default=None, help="worker route (default: the worker module's WORKER_ENDPOINT)")
    p.add_argument("--stream", action="store_true", help="measure time to first byte as well (for streaming routes)")
    p.add_argument("--json", metavar="FILE", help="write the summary as JSON to FILE")
    p.add_argument("--timeout", type=float, default=120.0, help="longest silence from a server, seconds (default: %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="after Ctrl-C, wait this long for requests in flight")
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
    if make_payload is None or args.worker:
        factory, default_route = load_worker_payloads(args.worker or DEFAULT_WORKER)
    else:
        factory, default_route = _payload_factory(make_payload), route or "/generate"
    autoscaler = LOCAL_AUTOSCALER if args.local else (args.autoscaler or DEFAULT_AUTOSCALER)
    test = LoadTest(
        autoscaler, args.endpoint, args.api_key, args.route or default_route, factory,
        args.requests, args.rps, stream=args.stream, timeout_s=args.timeout,
    )
    print(
        f"loadtest: {args.requests} requests at {args.rps:g}/s to endpoint group {args.endpoint!r} "
        f"via {autoscaler}, worker route {test.route}",
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
    if stats.failed:
        return 1
    return 130 if stats.stopped_early else 0


def run(
    make_payload: ApiPayload | PayloadFactory | type[ApiPayload],
    worker_endpoint: str,
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point for a worker's `test_load.py`: parse the command line and load-test."""
    raise SystemExit(main(argv, make_payload, worker_endpoint))
