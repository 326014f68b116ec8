"""`Worker`: the HTTP server, the backend and everything around them, started
and stopped together.

Around the request path it runs: the public-key fetch (signatures), the model
log follower (loaded / error / info lines), the benchmark after the model
loads, the healthcheck, and the two report loops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

from ._version import __version__
from .auth import KeyFormatError, RSAPublicKey, Scheme, SignatureChecker
from .backend import Backend, LogAction
from .benchmark import Benchmark, BenchmarkFailed, BenchmarkStore, benchmark_key
from .config import ConfigError, WorkerConfig
from .health import HealthMonitor
from .http import HTTPServer, Request, Response, Route, get
from .logtail import LogTailer
from .reports import Autoscaler, Identity, Reporter
from .session_routes import SessionRoutes, end_only
from .status import Phase, WorkerStatus
from .telemetry import CONTENT_TYPE

log = logging.getLogger("pyworker")

KEY_RETRY_MAX_S = 60.0
BENCHMARK_RETRY_S = 30.0
FINAL_REPORT_S = 5.0
# How often the health route is asked while waiting for the model to start.
STARTUP_POLL_S = 1.0
STARTUP_ERROR = "model start"


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"USE_SSL=true but the certificate {cert} and key {key} cannot be loaded: {exc}") from None
    return context


class Worker:
    """One worker process's moving parts."""

    def __init__(
        self,
        backend: Backend,
        routes: Iterable[Route],
        config: WorkerConfig,
        name: str = "",
    ) -> None:
        self.backend = backend
        self.config = config
        self.name = name
        self.status = WorkerStatus()
        self.sessions = SessionRoutes(backend)
        self.server = HTTPServer([*routes, *self.sessions.routes()], config.server_limits)
        # The plain-HTTP listeners for /session/end and /metrics, once started.
        self.end_server: HTTPServer | None = None
        self.metrics_server: HTTPServer | None = None
        self.autoscaler = Autoscaler(config.reports.addrs) if config.reports.addrs else None
        # Finished-request records exist only to be reported.
        backend.metrics.keep_records = self.autoscaler is not None
        self.reporter: Reporter | None = None
        self.health: HealthMonitor | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._loaded = False

    @property
    def port(self) -> int:
        return self.server.port

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)

    def start_reports(self) -> None:
        """Start reporting; done first, so that even a failed start is reported."""
        if self.autoscaler is None or self.reporter is not None:
            return
        reports = self.config.reports
        identity = Identity(reports.worker_id, reports.master_token, reports.public_url or "", __version__)
        self.reporter = Reporter(
            self.autoscaler,
            identity,
            lambda: self.backend.metrics,
            self.status,
            lambda: self.backend.queue.load + self.backend.sessions.load,
        )
        self._spawn(self.reporter.run_status(), "report status")
        self._spawn(self.reporter.run_finished(), "report finished requests")

    async def start(self) -> None:
        """Start everything; a `ConfigError` is also set as the reported error."""
        self.start_reports()
        try:
            await self._start()
        except ConfigError as exc:
            if self.autoscaler is not None:
                self.status.set_error("start", str(exc))
            raise

    async def _start(self) -> None:
        config = self.config
        backend = self.backend
        backend.configure(
            model_server_url=config.model_server_url,
            model_log_file=config.model_log,
            client_limits=config.client_limits,
        )
        backend.max_json_depth = config.max_json_depth
        backend.sessions.max_sessions = config.max_sessions
        if config.unsecured:
            log.warning("UNSECURED=true: requests are NOT checked for the autoscaler's signature")
            backend.signatures = None
        else:
            own_url = config.reports.public_url if config.check_url else None
            backend.signatures = SignatureChecker([Scheme(s) for s in config.signature_schemes], own_url=own_url)
            self._spawn(self._fetch_key(backend.signatures), "fetch public key")
        # Off the event loop, while the key is fetched: the first request does not load a tokenizer.
        self._spawn(backend.warm_up(), "warm up the workload count")
        ssl_context = server_ssl_context(config.ssl_cert, config.ssl_key) if config.use_ssl else None
        try:
            await self.server.start(config.host, config.port, ssl_context)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        log.info(
            "pyworker %s listening on %s://%s:%d, model server %s, routes %s",
            self.name or "worker",
            "https" if ssl_context else "http",
            config.host,
            self.port,
            backend.model_server_url,
            " ".join(self.server.router.paths),
        )
        await self._start_side_listeners()
        self._spawn(backend.sessions.collect_forever(), "collect expired sessions")
        if backend.model_log_file is not None:
            self._spawn(self._follow_log(backend.model_log_file), "follow model log")
        else:
            self._spawn(self._await_healthy_start(), "wait for the model's health route")

    async def _start_side_listeners(self) -> None:
        config = self.config
        self.end_server = await self._side_listener(
            end_only(self.sessions),
            config.session_end_host,
            config.session_end_port,
            "/session/end",
            "sessions end on the main port only",
        )
        self.metrics_server = await self._side_listener(
            [get("/metrics", self._metrics_page)],
            config.metrics_host,
            config.metrics_port,
            "/metrics",
            "no metrics are served",
        )

    async def _side_listener(
        self, routes: list[Route], host: str, port: int | None, what: str, otherwise: str
    ) -> HTTPServer | None:
        """Plain HTTP beside the public port; a port in use is a warning, not a failure."""
        if port is None:
            return None
        server = HTTPServer(routes, self.config.server_limits)
        try:
            await server.start(host, port)
        except OSError as exc:
            log.warning("cannot listen on %s:%d for %s (%s): %s", host, port, what, exc.strerror or exc, otherwise)
            return None
        log.info("%s on http://%s:%d", what, host, server.port)
        return server

    async def _metrics_page(self, _: Request) -> Response:
        backend = self.backend
        status = self.status
        gauges = {
            "pyworker_ready": (
                "1 once the model is loaded, benchmarked and healthy.",
                float(status.phase is Phase.READY),
            ),
            "pyworker_benchmark_max_perf": (
                "The benchmark's throughput (workload/s), 0 until measured.",
                status.max_perf,
            ),
            "pyworker_model_down": (
                "1 while the health check has declared the model down.",
                float(backend.model_down is not None),
            ),
            "pyworker_sessions_open": ("Sessions open.", float(len(backend.sessions))),
            "pyworker_connections": (
                "Client connections open on the public port.",
                float(len(self.server.connections)),
            ),
        }
        body = backend.metrics.telemetry.render(gauges)
        return Response(body, content_type=CONTENT_TYPE)

    async def stop(self) -> None:
        """Stop accepting, give requests in progress the grace period, report once more."""
        log.info("shutting down: waiting up to %g s for requests in progress", self.config.shutdown_grace_s)
        await self.server.shutdown(self.config.shutdown_grace_s)
        for side in (self.end_server, self.metrics_server):
            if side is not None:
                await side.shutdown(0)
        sessions = self.backend.sessions
        if len(sessions):
            log.info("closing %d open session(s)", len(sessions))
            sessions.close_all("closed: the worker is stopping")
        await sessions.callbacks.drain(FINAL_REPORT_S)
        await self._wind_down()

    async def report_until(self, stop: asyncio.Event) -> None:
        """For a worker that could not start: keep telling the autoscaler why until `stop`."""
        self.start_reports()
        await stop.wait()
        await self._wind_down()

    async def _wind_down(self) -> None:
        """Report once more, stop every background task, close every connection pool."""
        if self.reporter is not None:
            try:
                await asyncio.wait_for(self.reporter.final(), FINAL_REPORT_S)
            except asyncio.TimeoutError:
                log.warning("the final report did not get through in %g s", FINAL_REPORT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.backend.close()
        if self.health is not None:
            self.health.pool.close()
        if self.autoscaler is not None:
            self.autoscaler.close()
        await asyncio.sleep(0)  # let the closed transports finish closing

    # -- public key ------------------------------------------------------------

    async def _fetch_key(self, checker: SignatureChecker) -> None:
        if self.autoscaler is None:
            return
        delay = 1.0
        while True:
            text, problem = await self.autoscaler.get_text("/pubkey/")
            if text:
                try:
                    checker.key = RSAPublicKey.from_pem(text)
                except KeyFormatError as exc:
                    problem = f"the key served is unusable: {exc}"
                else:
                    self.status.clear_error("public key")
                    log.info("autoscaler public key loaded (%d bits)", checker.key.n.bit_length())
                    return
            self.status.set_error("public key", f"cannot fetch the autoscaler's public key: {problem}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, KEY_RETRY_MAX_S)

    # -- model log ---------------------------------------------------------------

    async def _follow_log(self, path: str) -> None:
        actions = self.backend.log_actions
        async for line in LogTailer(path).lines():
            for action, pattern in actions:
                if pattern not in line:
                    continue
                if action is LogAction.ModelLoaded:
                    if not self._loaded:
                        self._loaded = True
                        log.info("model loaded: %s", line.strip())
                        self._spawn(self._after_loaded(), "benchmark")
                elif action is LogAction.ModelError:
                    self.status.set_error("model", line.strip())
                else:
                    log.info("model: %s", line.strip())
                break

    # -- benchmark and health --------------------------------------------------------

    def _benchmark_facts(self) -> dict[str, object]:
        handler = self.backend.benchmark_handler
        assert handler is not None
        return {
            "worker": self.name,
            "endpoint": handler.endpoint,
            "payload": f"{handler.payload_cls().__module__}.{handler.payload_cls().__qualname__}",
            "runs": handler.benchmark_runs,
            "words": handler.benchmark_words,
            "concurrency": self._benchmark_concurrency(),
            "model_server": self.backend.model_server_url,
            "model_name": self.config.model_name,
            "tokenizer": os.environ.get("PYWORKER_TOKENIZER", ""),
            "pyworker": __version__,
        }

    def _benchmark_concurrency(self) -> int:
        if self.config.benchmark_concurrency:
            return self.config.benchmark_concurrency
        handler = self.backend.benchmark_handler
        assert handler is not None  # only asked for when there is one to run
        return 10 if self.backend.runs_in_parallel(handler) else 1

    async def _measure(self) -> float:
        """The model's throughput: from the store if known, else by benchmark (retried)."""
        handler = self.backend.benchmark_handler
        if handler is None:
            log.warning("no benchmark_handler: throughput unknown, so no request is refused for queue time")
            return 0.0
        facts = self._benchmark_facts()
        key = benchmark_key(**facts)
        store = BenchmarkStore(Path(self.config.state_dir) / "benchmark.json")
        known = await asyncio.to_thread(store.get, key)
        if known is not None:
            log.info("benchmark already measured for this model and configuration: %.1f workload/s", known)
            return known
        bench = Benchmark(self.backend.pool, handler, handler.benchmark_runs, self._benchmark_concurrency())
        while True:
            try:
                max_perf = await bench.run()
            except BenchmarkFailed as exc:
                self.status.set_error("benchmark", f"{exc}; trying again in {BENCHMARK_RETRY_S:g} s")
                await asyncio.sleep(BENCHMARK_RETRY_S)
                continue
            self.status.clear_error("benchmark")
            await asyncio.to_thread(store.put, key, max_perf, facts)
            log.info("benchmark: %.1f workload/s", max_perf)
            return max_perf

    def _health_monitor(self) -> HealthMonitor:
        if self.health is None:
            path = self.backend.healthcheck_url
            assert path
            self.health = HealthMonitor(
                self.backend.model_server_url, path, self.status, self.config.health_interval_s, backend=self.backend
            )
        return self.health

    async def _await_healthy_start(self) -> None:
        """Readiness without a log line: the health route answers healthy, then the benchmark.

        Refused connections and unhealthy answers are waited out; after
        `ready_timeout_s` the wait is reported as an error, and it goes on.
        """
        health = self._health_monitor()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.ready_timeout_s
        poll_s = min(STARTUP_POLL_S, self.config.health_interval_s)
        log.info("no MODEL_LOG: the model counts as loaded once %s answers healthy", health.path)
        while (problem := await health.check()) is not None:
            if loop.time() >= deadline:
                self.status.set_error(
                    STARTUP_ERROR,
                    f"no healthy answer from {health.path} in {self.config.ready_timeout_s:g} s: {problem}",
                )
            await asyncio.sleep(poll_s)
        self.status.clear_error(STARTUP_ERROR)
        log.info("model loaded: %s answered healthy", health.path)
        self._loaded = True
        await self._after_loaded()

    async def _after_loaded(self) -> None:
        self.status.set_phase(Phase.BENCHMARKING)
        max_perf = await self._measure()
        self.backend.queue.max_perf = max_perf
        self.status.max_perf = max_perf
        if self.backend.healthcheck_url:
            self.status.set_phase(Phase.WAITING_HEALTHY)
            health = self._health_monitor()
            self._spawn(health.run(), "healthcheck")
            await health.healthy_once.wait()
        self.status.set_phase(Phase.READY)
