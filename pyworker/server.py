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


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def serve(
    backend: Backend,
    routes: Iterable[Route],
    config: WorkerConfig,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT), then shut down gracefully."""
    backend.configure(
        model_server_url=config.model_server_url,
        model_log_file=config.model_log,
        client_limits=config.client_limits,
    )
    ssl_context: ssl.SSLContext | None = None
    if config.use_ssl:
        raise ConfigError("USE_SSL=true is not supported yet")
    if config.unsecured:
        log.warning("UNSECURED=true: requests are NOT checked for the autoscaler's signature")
    server = HTTPServer(routes, config.server_limits)
    try:
        await server.start(config.host, config.port, ssl_context)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    log.info(
        "pyworker listening on %s:%d, model server %s, routes %s",
        config.host,
        server.port,
        backend.model_server_url,
        " ".join(server.router.paths),
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # not in the main thread (tests): the caller sets `stop`
    try:
        await stop.wait()
    finally:
        log.info("shutting down: waiting up to %g s for requests in progress", config.shutdown_grace_s)
        await server.shutdown(config.shutdown_grace_s)
        backend.session.close()


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
    try:
        asyncio.run(serve(backend, list(routes), config))
    except ConfigError as exc:
        print(f"pyworker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass
