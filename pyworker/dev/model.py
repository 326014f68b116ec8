"""A stand-in LLM server for hello_world, so everything runs without a GPU.

    python -m pyworker.dev.model --port 5001 --log /tmp/model.log

- `POST /generate` `{"prompt", "max_response_tokens"}` → `{"generated_text", "tokens"}`
- `POST /generate_stream` → `text/event-stream`, one token per event, then `data: [DONE]`
- `GET /healthcheck` → `{"status": "ok"}` (503 while loading)
- `POST /admin/hang` `{"hang": true}`: from now on every other route takes
  the request and never answers (a hung model, for tests); `false` undoes it
- `POST /admin/events_per_write` `{"events_per_write": 20}`: how many of a
  stream's events go out in one write from now on (see below)
- `POST /session_closed` records its JSON body (a session's close callback),
  `POST /session_redirect` records it too and answers 307 to `/session_closed`, and
  `GET /callbacks` lists the last 100 bodies recorded with their paths

It writes "infer server has started" to its log once ready. The token
delay and the time to first token make it behave like a slow model; they
can also be set per request with the payload keys `token_delay_s`,
`first_token_s` (for tests). A stream's events go out one per write, or
`events_per_write` at a time (several chunks in one `send`, as a batching
server flushes them) when there is no token delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ..http import (
    Handler,
    HTTPServer,
    Request,
    Response,
    ServerLimits,
    StreamResponse,
    get,
    json_response,
    post,
)
from .ports import run_server

READY_LINE = "infer server has started"
ERROR_LINE = "Exception: corrupted model file"
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


@dataclass
class ModelSettings:
    tokens: int = 16  # generated when the request does not say
    token_delay_s: float = 0.0
    first_token_s: float = 0.0
    load_time_s: float = 0.0
    max_body_bytes: int = 64 << 20
    listen_after_s: float = 0.0
    events_per_write: int = 1  # a stream's events sent together when there is no token delay


class StandInModel:
    def __init__(self, settings: ModelSettings, log_path: str | None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.ready = False
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.order: list[str] = []  # prompts in the order work began (last 100)
        self.hung = False
        self.callbacks: list[dict[str, Any]] = []

    def log(self, line: str) -> None:
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def _params(self, request: Request) -> tuple[int, float, float, str, int] | Response:
        try:
            body: Any = json.loads(request.body)
        except ValueError:
            return json_response({"error": "invalid JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return json_response({"error": "prompt (a string) is required"}, status=422)
        n = body.get("max_response_tokens")
        s = self.settings
        tokens = n if isinstance(n, int) and n >= 0 else s.tokens
        delay = float(body.get("token_delay_s", s.token_delay_s))
        first = float(body.get("first_token_s", s.first_token_s))
        per_write = body.get("events_per_write", s.events_per_write)
        per_write = per_write if isinstance(per_write, int) and per_write > 0 else 1
        return tokens, delay, first, body["prompt"], per_write

    def _begin(self, prompt: str) -> None:
        self.requests += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.order = (self.order + [prompt])[-100:]

    async def generate(self, request: Request) -> Response:
        params = self._params(request)
        if isinstance(params, Response):
            return params
        tokens, delay, first, prompt, _ = params
        self._begin(prompt)
        try:
            wait = first + delay * tokens
            if wait > 0:
                await asyncio.sleep(wait)
            text = " ".join(_WORDS[i % len(_WORDS)] for i in range(tokens))
            return json_response({"generated_text": text, "tokens": tokens})
        finally:
            self.active -= 1

    async def generate_stream(self, request: Request) -> Response | StreamResponse:
        params = self._params(request)
        if isinstance(params, Response):
            return params
        tokens, delay, first, prompt, per_write = params
        if delay > 0:
            per_write = 1
        self._begin(prompt)
        try:
            res = StreamResponse(content_type="text/event-stream", headers=[("cache-control", "no-cache")])
            await res.prepare(request)
            if first > 0:
                await asyncio.sleep(first)
            events: list[bytes] = []
            for i in range(tokens):
                if i and delay > 0:
                    await asyncio.sleep(delay)
                event = {"token": {"id": i, "text": " " + _WORDS[i % len(_WORDS)]}}
                events.append(b"data: " + json.dumps(event).encode() + b"\n\n")
                if len(events) >= per_write:
                    await res.writelines(events)
                    events = []
            events.append(b"data: [DONE]\n\n")
            await res.writelines(events)
            await res.write_eof()
            return res
        finally:
            self.active -= 1

    async def healthcheck(self, _: Request) -> Response:
        if not self.ready:
            return json_response({"status": "loading"}, status=503)
        return json_response({"status": "ok"})

    def hangable(self, handler: Handler) -> Handler:
        async def handle(request: Request) -> Response | StreamResponse:
            if self.hung:
                await asyncio.Event().wait()  # until the client gives up
            return await handler(request)

        return handle

    async def set_hang(self, request: Request) -> Response:
        self.hung = bool(request.json().get("hang"))
        self.log(f"hang: {self.hung}")
        return json_response({"hang": self.hung})

    async def set_events_per_write(self, request: Request) -> Response:
        n = request.json().get("events_per_write")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return json_response({"error": "events_per_write: a whole number from 1"}, status=422)
        self.settings.events_per_write = n
        return json_response({"events_per_write": n})

    async def record_callback(self, request: Request) -> Response:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = {"unparsed": request.body.decode("utf-8", "replace")}
        self.callbacks = (self.callbacks + [{"path": request.path, "body": body}])[-100:]
        return json_response({"recorded": True})

    async def redirect_callback(self, request: Request) -> Response:
        await self.record_callback(request)
        return Response(b"", status=307, headers=[("location", "/session_closed")])

    async def list_callbacks(self, _: Request) -> Response:
        return json_response({"callbacks": self.callbacks})

    async def stats(self, _: Request) -> Response:
        return json_response(
            {"requests": self.requests, "active": self.active, "max_active": self.max_active, "order": self.order}
        )


async def run(port: int, host: str, settings: ModelSettings, log_path: str | None) -> None:
    model = StandInModel(settings, log_path)
    server = HTTPServer(
        [
            post("/generate", model.hangable(model.generate)),
            post("/generate_stream", model.hangable(model.generate_stream)),
            get("/healthcheck", model.hangable(model.healthcheck)),
            get("/stats", model.stats),
            post("/admin/hang", model.set_hang),
            post("/admin/events_per_write", model.set_events_per_write),
            post("/session_closed", model.record_callback),
            post("/session_redirect", model.redirect_callback),
            get("/callbacks", model.list_callbacks),
        ],
        ServerLimits(max_body_bytes=settings.max_body_bytes),
    )
    if settings.listen_after_s > 0:
        model.log(f"stand-in model starting: listening in {settings.listen_after_s:g} s")
        await asyncio.sleep(settings.listen_after_s)
    await server.start(host, port)
    model.log(f"stand-in model loading on {host}:{server.port}")
    if settings.load_time_s > 0:
        await asyncio.sleep(settings.load_time_s)
    model.ready = True
    model.log(READY_LINE)
    logging.getLogger("pyworker.dev.model").info("stand-in model ready on %s:%d", host, server.port)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyworker.dev.model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--log", default=os.environ.get("MODEL_LOG"), help="log file to write (default: $MODEL_LOG)")
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated when the request does not say")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--first-token", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--load-time", type=float, default=0.0, help="seconds before the ready log line")
    parser.add_argument("--max-body-mb", type=int, default=64, help="largest request body, in MiB")
    parser.add_argument("--listen-after", type=float, default=0.0, help="seconds before the port is even opened")
    parser.add_argument(
        "--events-per-write", type=int, default=1, help="a stream's events sent together when there is no token delay"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ModelSettings(
        args.tokens,
        args.token_delay,
        args.first_token,
        args.load_time,
        args.max_body_mb << 20,
        args.listen_after,
        args.events_per_write,
    )
    run_server("stand-in model", args.host, args.port, run(args.port, args.host, settings, args.log))


if __name__ == "__main__":
    main()
