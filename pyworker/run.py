"""`start_server`: run a worker's routes in front of its model server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Iterable

from . import process
from .backend import Backend
from .config import ConfigError, ReportConfig, WorkerConfig
from .http import Route
from .logs import setup_logging
from .worker import Worker

log = logging.getLogger("pyworker")

# A huge prompt is tokenized in a worker thread; while it runs Python code,
# the event loop waits for the GIL up to this interval (default 5 ms).
GIL_SWITCH_INTERVAL_S = 0.001


async def serve(
    backend: Backend,
    routes: Iterable[Route],
    config: WorkerConfig,
    stop: asyncio.Event | None = None,
    name: str = "",
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully.

    If the worker cannot start, the error is reported to the autoscaler until
    then (when reports are on) and `ConfigError` is raised at the end.
    """
    stop = stop or asyncio.Event()
    process.stop_on_signals(stop)
    worker = Worker(backend, routes, config, name)
    try:
        await worker.start()
    except ConfigError as exc:
        if worker.autoscaler is None:
            raise
        print(f"pyworker: {exc} (reporting this to the autoscaler until stopped)", file=sys.stderr, flush=True)
        await worker.report_until(stop)
        raise
    try:
        await stop.wait()
    finally:
        await worker.stop()


async def _report_config_error(reports: ReportConfig, message: str, stop: asyncio.Event) -> None:
    worker = Worker(Backend(), [], _minimal_config(reports))
    worker.status.set_error("start", message)
    process.stop_on_signals(stop)
    await worker.report_until(stop)


def _minimal_config(reports: ReportConfig) -> WorkerConfig:
    """Defaults everywhere but the reports: enough to report a start-up error."""
    return dataclasses.replace(WorkerConfig.from_env({"UNSECURED": "true", "REPORT_ADDR": "off"}), reports=reports)


def start_server(backend: Backend, routes: Iterable[Route], name: str = "") -> None:
    """Run the worker from the environment's settings until SIGTERM or SIGINT.

    A bad setting prints one line naming it. When the worker knows where to
    report, it keeps reporting that error to the autoscaler until stopped, as
    the autoscaler needs to see why; otherwise it exits with status 2.
    """
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        print(f"pyworker: {exc}", file=sys.stderr, flush=True)
        try:
            reports = ReportConfig.from_env()
        except ConfigError:
            reports = None
        if reports is None or not reports.addrs:
            raise SystemExit(2) from None
        setup_logging()
        try:
            asyncio.run(_report_config_error(reports, str(exc), asyncio.Event()))
        except KeyboardInterrupt:
            pass
        raise SystemExit(2) from None
    setup_logging(config.log_level, config.log_format)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    process.return_memory_when_freed()
    process.raise_fd_limit(config.server_limits.max_connections)
    try:
        asyncio.run(serve(backend, list(routes), config, name=name))
    except ConfigError as exc:
        if not config.reports.addrs:
            print(f"pyworker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
