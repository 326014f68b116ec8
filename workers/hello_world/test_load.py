"""Load-test an endpoint group running this worker.

    python -m workers.hello_world.test_load -n 1000 -rps 0.5 -k "$API_KEY" -e "$ENDPOINT_GROUP_NAME"
"""

from __future__ import annotations

WORKER_ENDPOINT = "/generate"

if __name__ == "__main__":
    import sys

    print("the load test arrives with scripts/loadtest.py; not available yet", file=sys.stderr)
    raise SystemExit(2)
