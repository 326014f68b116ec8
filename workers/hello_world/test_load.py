"""Load-test an endpoint group running this worker.

    python -m workers.hello_world.test_load -n 1000 -rps 0.5 -k "$API_KEY" -e "$ENDPOINT_GROUP_NAME"

`scripts/loadtest.py --worker workers.hello_world` takes the same two names from here.
"""

from __future__ import annotations

from pyworker.loadtest import run

from .data_types import InputData

WORKER_ENDPOINT = "/generate"


def make_payload() -> InputData:
    """One request's payload: a 250-word prompt, as the benchmark sends."""
    return InputData.for_test()


if __name__ == "__main__":
    run(make_payload, WORKER_ENDPOINT)
