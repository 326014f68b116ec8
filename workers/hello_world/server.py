"""The hello_world worker: `/generate`, `/generate_stream`, `/ping`, `/healthcheck`.

Run with `python -m pyworker workers.hello_world` (MODEL_LOG names the
model server's log file, or, unset, readiness is `/healthcheck` answering
healthy; MODEL_SERVER_URL overrides the address below).
"""

from __future__ import annotations

import dataclasses

from pyworker import (
    Backend,
    EndpointHandler,
    LogAction,
    Request,
    Response,
    get,
    post,
    start_server,
)

from .data_types import InputData

MODEL_SERVER_URL = "http://127.0.0.1:5001"
# The log line the model server writes once it can serve.
MODEL_SERVER_START_LOG_MSG = "server has started"
# Log lines that mean the model server cannot recover.
MODEL_SERVER_ERROR_LOG_MSGS = ["Exception: corrupted model file"]


@dataclasses.dataclass
class GenerateHandler(EndpointHandler[InputData]):
    """`/generate`: one JSON answer once the whole text is generated."""

    @property
    def endpoint(self) -> str:
        return "/generate"

    @classmethod
    def payload_cls(cls) -> type[InputData]:
        return InputData

    def make_benchmark_payload(self) -> InputData:
        return InputData.for_test(words=self.benchmark_words)


@dataclasses.dataclass
class GenerateStreamHandler(GenerateHandler):
    """`/generate_stream`: server-sent events, one token each, passed on as they come."""

    @property
    def endpoint(self) -> str:
        return "/generate_stream"


backend = Backend(
    model_server_url=MODEL_SERVER_URL,
    allow_parallel_requests=True,
    benchmark_handler=GenerateHandler(benchmark_runs=3, benchmark_words=256),
    # Polled every PYWORKER_HEALTH_INTERVAL_S: a model that hangs is reported,
    # and the requests waiting on it end with 503 (see pyworker/health.py).
    healthcheck_url="/healthcheck",
    log_actions=[
        (LogAction.ModelLoaded, MODEL_SERVER_START_LOG_MSG),
        (LogAction.Info, '"message":"Download'),
        *[(LogAction.ModelError, msg) for msg in MODEL_SERVER_ERROR_LOG_MSGS],
    ],
)


async def handle_ping(_: Request) -> Response:
    return Response("pong")


async def handle_healthcheck(_: Request) -> Response:
    return await backend.forward("GET", "/healthcheck")


routes = [
    post("/generate", backend.create_handler(GenerateHandler())),
    post("/generate_stream", backend.create_handler(GenerateStreamHandler())),
    get("/ping", handle_ping),
    get("/healthcheck", handle_healthcheck),
]

if __name__ == "__main__":
    start_server(backend, routes)
