"""The OpenAI-compatible worker: `/v1/completions`, `/v1/chat/completions`, `/v1/embeddings`,
`/v1/models`, `/health`.

    MODEL_LOG=/var/log/model.log MODEL_SERVER_URL=http://127.0.0.1:8000 python -m pyworker workers.openai

Configured by environment (see README.md in this folder): which server it
fronts (for the log lines that mean loaded or broken), the benchmark,
queueing. JSON answers and `"stream": true` event streams pass through as the
model sends them, `data: [DONE]` included.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from pyworker import Backend, EndpointHandler, LogAction, Request, Response, get, post
from pyworker.config import ConfigError, env_bool, env_float, env_int, env_str

from .data_types import ChatPayload, CompletionPayload, EmbeddingsPayload

# Lines in each server's log that mean the model can serve, or never will.
SERVER_LOG_LINES: dict[str, tuple[list[str], list[str]]] = {
    "vllm": (
        ["Application startup complete"],
        ["CUDA out of memory", "Engine core initialization failed", "RuntimeError: "],
    ),
    "sglang": (
        ["The server is fired up and ready to roll"],
        ["CUDA out of memory", "Scheduler hit an exception", "RuntimeError: "],
    ),
    "llama.cpp": (
        ["model loaded"],
        ["failed to load model", "error loading model", "exiting due to model loading error"],
    ),
    "tgi": (
        ["Connected"],
        ["Shard cannot start", "ShardCannotStart", "CUDA out of memory"],
    ),
}
# "auto" takes the lines specific enough to mean one thing whatever the server.
SERVER_LOG_LINES["auto"] = (
    [
        "Application startup complete",
        "The server is fired up and ready to roll",
        "llama_server: model loaded",
        "main: model loaded",
    ],
    sorted({line for kind, (_, errors) in SERVER_LOG_LINES.items() for line in errors}),
)


def _patterns(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    return [p for p in raw.split("|") if p] if raw else default


def _settings() -> tuple[str, list[tuple[LogAction, str]]]:
    kind = (env_str(os.environ, "OPENAI_SERVER_KIND", "auto") or "auto").lower()
    if kind not in SERVER_LOG_LINES:
        raise ConfigError(f"OPENAI_SERVER_KIND takes {', '.join(sorted(SERVER_LOG_LINES))}, not {kind!r}")
    loaded, errors = SERVER_LOG_LINES[kind]
    actions = [(LogAction.ModelLoaded, p) for p in _patterns("OPENAI_LOADED_PATTERNS", loaded)]
    actions += [(LogAction.ModelError, p) for p in _patterns("OPENAI_ERROR_PATTERNS", errors)]
    return kind, actions


SERVER_KIND, LOG_ACTIONS = _settings()
HEALTH_PATH = env_str(os.environ, "OPENAI_HEALTH_PATH", "/health") or "/health"
BENCHMARK_WORDS = env_int(os.environ, "OPENAI_BENCHMARK_PROMPT_WORDS", 100, minimum=1)
BENCHMARK_MAX_TOKENS = env_int(os.environ, "OPENAI_BENCHMARK_MAX_TOKENS", 128, minimum=1)
BENCHMARK_RUNS = env_int(os.environ, "OPENAI_BENCHMARK_RUNS", 3, minimum=1)
BENCHMARK_MODEL = env_str(os.environ, "OPENAI_MODEL")
# The route the benchmark measures: completions, or embeddings for an
# embeddings-only server (llama-server --embeddings serves nothing else).
BENCHMARK_ENDPOINT = (env_str(os.environ, "OPENAI_BENCHMARK_ENDPOINT", "completions") or "completions").lower()
if BENCHMARK_ENDPOINT not in ("completions", "embeddings"):
    raise ConfigError(f"OPENAI_BENCHMARK_ENDPOINT takes completions or embeddings, not {BENCHMARK_ENDPOINT!r}")


@dataclasses.dataclass
class CompletionsHandler(EndpointHandler[CompletionPayload]):
    @property
    def endpoint(self) -> str:
        return "/v1/completions"

    @classmethod
    def payload_cls(cls) -> type[CompletionPayload]:
        return CompletionPayload

    def make_benchmark_payload(self) -> CompletionPayload:
        extra: dict[str, object] = {}
        if SERVER_KIND != "tgi":
            extra["ignore_eos"] = True  # generate the full length asked, so the workload is real
        if BENCHMARK_MODEL:
            extra["model"] = BENCHMARK_MODEL
        return CompletionPayload.benchmark(self.benchmark_words, BENCHMARK_MAX_TOKENS, extra)


@dataclasses.dataclass
class ChatCompletionsHandler(EndpointHandler[ChatPayload]):
    @property
    def endpoint(self) -> str:
        return "/v1/chat/completions"

    @classmethod
    def payload_cls(cls) -> type[ChatPayload]:
        return ChatPayload


@dataclasses.dataclass
class EmbeddingsHandler(EndpointHandler[EmbeddingsPayload]):
    @property
    def endpoint(self) -> str:
        return "/v1/embeddings"

    @classmethod
    def payload_cls(cls) -> type[EmbeddingsPayload]:
        return EmbeddingsPayload

    def make_benchmark_payload(self) -> EmbeddingsPayload:
        return EmbeddingsPayload.benchmark(
            self.benchmark_words, {"model": BENCHMARK_MODEL} if BENCHMARK_MODEL else None
        )


benchmark_handler: EndpointHandler[Any] = (
    EmbeddingsHandler(benchmark_runs=BENCHMARK_RUNS, benchmark_words=BENCHMARK_WORDS)
    if BENCHMARK_ENDPOINT == "embeddings"
    else CompletionsHandler(benchmark_runs=BENCHMARK_RUNS, benchmark_words=BENCHMARK_WORDS)
)

backend = Backend(
    model_server_url="http://127.0.0.1:8000",
    allow_parallel_requests=env_bool(os.environ, "OPENAI_PARALLEL", True),
    max_queue_time=env_float(os.environ, "OPENAI_MAX_QUEUE_TIME", 30.0),
    benchmark_handler=benchmark_handler,
    log_actions=LOG_ACTIONS,
    healthcheck_url=HEALTH_PATH,
)


async def handle_models(_: Request) -> Response:
    return await backend.forward("GET", "/v1/models")


async def handle_health(_: Request) -> Response:
    return await backend.forward("GET", HEALTH_PATH)


routes = [
    post("/v1/completions", backend.create_handler(CompletionsHandler())),
    post("/v1/chat/completions", backend.create_handler(ChatCompletionsHandler())),
    post("/v1/embeddings", backend.create_handler(EmbeddingsHandler())),
    get("/v1/models", handle_models),
    get("/health", handle_health),
]
