"""Load-test an endpoint group running the OpenAI-compatible worker.

python -m workers.openai.test_load -n 100 -rps 1 -k "$API_KEY" -e "$ENDPOINT_GROUP_NAME"
"""

from __future__ import annotations

import os

from pyworker.loadtest import run

from .data_types import CompletionPayload

WORKER_ENDPOINT = "/v1/completions"


def make_payload() -> CompletionPayload:
    """A completion of a 100-word prompt, `OPENAI_LOADTEST_MAX_TOKENS` (64) tokens long,
    streamed when `OPENAI_LOADTEST_STREAM=true` (then use the load test's --stream)."""
    extra = {"stream": True} if os.environ.get("OPENAI_LOADTEST_STREAM", "").lower() == "true" else {}
    return CompletionPayload.benchmark(100, int(os.environ.get("OPENAI_LOADTEST_MAX_TOKENS", "64")), extra)


if __name__ == "__main__":
    run(make_payload, WORKER_ENDPOINT)
