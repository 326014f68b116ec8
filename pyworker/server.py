"""`start_server`: run a worker's routes in front of its model server."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import Iterable

from .backend import Backend
from .config import ConfigError, WorkerConfig
from .http import HTTPServer, Route

log = logging.getLogger("pyworker")

GIL_SWITCH_INTERVAL_S = 0.001


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class Worker:
    """A worker's HTTP server and its backend, started and stopped together."""

    def __init__(self, backend: Backend, routes: Iterable[Route], config: WorkerConfig) -> None:
        self.backend = backend
        self.config = config
        self.server = HTTPServer(routes, config.server_limits)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        config = self.config
        self.backend.configure(
            model_server_url=config.model_server_url,
            model_log_file=config.model_log,
            client_limits=config.client_limits,
        )
        ssl_context: ssl.SSLContext | None = None
        if config.use_ssl:
            raise ConfigError("USE_SSL=true is not supported yet")
        if config.unsecured:
            log.warning("UNSECURED=true: requests are NOT checked for the autoscaler's signature")
        try:
            await self.server.start(config.host, config.port, ssl_context)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        log.info(
            "pyworker listening on %s:%d, model server %s, routes %s",
            config.host,
            self.port,
            self.backend.model_server_url,
            " ".join(self.server.router.paths),
        )

    async def stop(self) -> None:
        log.info("shutting down: waiting up to %g s for requests in progress", self.config.shutdown_grace_s)
        await self.server.shutdown(self.config.shutdown_grace_s)
        self.backend.session.close()
        await asyncio.sleep(0)  # let the closed transports finish closing


async def serve(
    backend: Backend,
    routes: Iterable[Route],
    config: WorkerConfig,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully."""
    worker = Worker(backend, routes, config)
    await worker.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not in the main thread: the caller sets `stop`
    try:
        await stop.wait()
    finally:
        await worker.stop()


def start_server(backend: Backend, routes: Iterable[Route]) -> None:
    """Run the worker from the environment's settings until SIGTERM or SIGINT.

    A bad setting prints one line naming it and exits with status 2.
    """
    try:
        config = WorkerConfig.from_env()
    except ConfigError as exc:
        print(f"pyworker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(config.log_level)
    # A huge prompt is tokenized in a worker thread; while it runs in Python
    # code, the event loop waits for the GIL up to this interval (default 5 ms).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        asyncio.run(serve(backend, list(routes), config))
    except ConfigError as exc:
        print(f"pyworker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
