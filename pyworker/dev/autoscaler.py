"""A local stand-in for the platform's autoscaler — a development tool, not a product.

    python -m pyworker.dev.autoscaler --port 8081

It plays the platform's side of the worker protocol on one machine:

- `GET /pubkey/` — its RSA public key (made once, cached in `--key`);
- `POST /route/` `{"endpoint", "api_key", "cost"}` — picks the ready worker
  with the least estimated wait and answers with signed `auth_data` fields
  and the worker's `url`, as the platform does;
- `POST /worker_status/`, `POST /delete_requests/` — takes reports, keeping
  each worker's latest status and every finished-request record;
- `GET /status` — what it knows: workers, their state, report counts (for
  people and tests); `GET /records` — the finished-request records.

A worker counts as ready when its latest report has a `max_perf` above 0,
no `error_msg`, and is less than `STALE_AFTER_S` old.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..auth import Scheme, signed_message
from ..http import HTTPServer, Request, Response, get, json_response, post
from .ports import run_server
from .rsa_keys import RSAKeyPair

log = logging.getLogger("pyworker.dev.autoscaler")

STALE_AFTER_S = 30.0
MAX_RECORDS = 200_000
HISTORY_PER_WORKER = 1000
DEFAULT_KEY = Path(os.path.expanduser("~")) / ".cache" / "pyworker" / "autoscaler-key.json"


class StandInAutoscaler:
    def __init__(self, key: RSAKeyPair, scheme: Scheme = Scheme.URL, api_key: str | None = None) -> None:
        self.key = key
        self.scheme = scheme
        self.api_key = api_key
        self.workers: dict[int, dict[str, Any]] = {}  # id -> latest status body
        # id -> the state fields of each report, oldest first (bounded)
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.seen_at: dict[int, float] = {}
        self.status_reports = 0
        self.delete_reports = 0
        self.records: list[dict[str, Any]] = []
        self.routes = 0
        # Unique across restarts of the stand-in, as the platform's are.
        self._reqnum = itertools.count(int(time.time() * 1000))

    def ready_workers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            status
            for wid, status in self.workers.items()
            if status.get("max_perf", 0) > 0
            and not status.get("error_msg")
            and status.get("url")
            and now - self.seen_at.get(wid, 0) < STALE_AFTER_S
        ]

    async def pubkey(self, _: Request) -> Response:
        return Response(self.key.public_pem(), content_type="application/x-pem-file")

    async def worker_status(self, request: Request) -> Response:
        try:
            body = request.json()
            wid = int(body["id"])
        except (ValueError, KeyError, TypeError):
            return json_response({"error": "expected a JSON worker status with an id"}, status=400)
        if wid not in self.workers:
            log.info("worker %d reported in from %s", wid, body.get("url"))
        self.workers[wid] = body
        self.seen_at[wid] = time.monotonic()
        history = self.history.setdefault(wid, [])
        history.append({k: body.get(k) for k in ("loadtime", "max_perf", "error_msg", "cur_load", "new_load")})
        del history[:-HISTORY_PER_WORKER]
        self.status_reports += 1
        return json_response({"ok": True})

    async def delete_requests(self, request: Request) -> Response:
        try:
            body = request.json()
            requests = body["requests"]
            assert isinstance(requests, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return json_response({"error": "expected {worker_id, requests: [...]}"}, status=400)
        for record in requests:
            self.records.append(dict(record, worker_id=body.get("worker_id")))
        del self.records[:-MAX_RECORDS]
        self.delete_reports += 1
        return json_response({"ok": True})

    async def route(self, request: Request) -> Response:
        try:
            body = request.json()
            endpoint = str(body["endpoint"])
            cost = body.get("cost", 0)
        except (ValueError, KeyError, TypeError):
            return json_response({"error": "expected {endpoint, api_key, cost}"}, status=400)
        if self.api_key is not None and body.get("api_key") != self.api_key:
            return json_response({"error": "bad api_key"}, status=401)
        ready = self.ready_workers()
        if not ready:
            return json_response({"error": "no ready worker"}, status=503)

        def wait(status: dict[str, Any]) -> float:
            return float(status.get("cur_load", 0)) / max(float(status.get("max_perf", 0)), 1e-5)

        chosen = min(ready, key=wait)
        # The platform counts routed load until the worker reports it: do the same
        # so a burst of routes spreads over the workers.
        chosen["cur_load"] = float(chosen.get("cur_load", 0)) + float(cost or 0)
        reqnum = next(self._reqnum)
        auth: dict[str, Any] = {
            "cost": str(cost),
            "endpoint": endpoint,
            "reqnum": reqnum,
            "request_idx": reqnum,
            "url": chosen["url"],
        }
        auth["signature"] = self.key.sign_b64(signed_message(auth, self.scheme))
        self.routes += 1
        return json_response(auth)

    async def status(self, _: Request) -> Response:
        now = time.monotonic()
        ready = {id(s) for s in self.ready_workers()}
        return json_response(
            {
                "workers": [
                    dict(
                        status,
                        ready=id(status) in ready,
                        last_report_s=round(now - self.seen_at[wid], 1),
                        history=self.history.get(wid, []),
                    )
                    for wid, status in sorted(self.workers.items())
                ],
                "status_reports": self.status_reports,
                "delete_reports": self.delete_reports,
                "records": len(self.records),
                "routes": self.routes,
            }
        )

    async def get_records(self, _: Request) -> Response:
        return json_response({"records": self.records})


async def run(
    host: str, port: int, key_path: Path, scheme: Scheme, api_key: str | None, ready: asyncio.Event | None = None
) -> None:
    key = await asyncio.to_thread(RSAKeyPair.load_or_create, key_path)
    scaler = StandInAutoscaler(key, scheme, api_key)
    server = HTTPServer(
        [
            get("/pubkey/", scaler.pubkey),
            post("/route/", scaler.route),
            post("/worker_status/", scaler.worker_status),
            post("/delete_requests/", scaler.delete_requests),
            get("/status", scaler.status),
            get("/records", scaler.get_records),
        ]
    )
    await server.start(host, port)
    log.info("stand-in autoscaler on http://%s:%d (key %s, %s signatures)", host, server.port, key_path, scheme.value)
    if ready is not None:
        ready.set()
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyworker.dev.autoscaler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--key", type=Path, default=DEFAULT_KEY, help="key pair file, made on first use (default: %(default)s)"
    )
    parser.add_argument("--scheme", choices=[s.value for s in Scheme], default=Scheme.URL.value, help="what to sign")
    parser.add_argument("--api-key", default=None, help="refuse /route/ calls without this api_key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_server(
        "stand-in autoscaler",
        args.host,
        args.port,
        run(args.host, args.port, args.key, Scheme(args.scheme), args.api_key),
    )


if __name__ == "__main__":
    main()
