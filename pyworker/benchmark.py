"""Measuring the model's throughput (workload units per second) once it has loaded.

One untimed warm-up request, then `runs` rounds of `concurrency` requests
sent together. A round's throughput is the workload of its successful
requests over the time until the last of their bodies ended (streams
included); the result is the best round. Failed requests count for nothing,
and a benchmark where none succeeds is an error, never a zero.

The result is kept in a file under a key made of everything that could
change it, so a restart skips the benchmark but a different model or
worker configuration measures afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data_types import ApiPayload, EndpointHandler
from .http import ConnectionPool, UpstreamError, UpstreamUnavailable

log = logging.getLogger("pyworker.benchmark")

# How long the warm-up request may keep failing before the rounds start anyway.
WARMUP_PATIENCE_S = 60.0


class BenchmarkFailed(Exception):
    """No benchmark request succeeded."""


@dataclass(frozen=True, slots=True)
class RoundResult:
    workload: float
    seconds: float
    succeeded: int
    failed: int

    @property
    def throughput(self) -> float:
        return self.workload / self.seconds if self.seconds > 0 and self.succeeded else 0.0


def best_throughput(rounds: list[RoundResult]) -> float:
    """The best round's throughput; `BenchmarkFailed` when no request succeeded at all."""
    if not any(r.succeeded for r in rounds):
        raise BenchmarkFailed("no benchmark request succeeded")
    return max(r.throughput for r in rounds)


class Benchmark:
    """Measures the model's throughput: a warm-up request, then rounds of concurrent requests.

    A round's throughput is the workload of its successful requests over the time
    until their bodies ended; `run()` returns the best round's.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        handler: EndpointHandler[Any],
        runs: int,
        concurrency: int,
    ) -> None:
        self.pool = pool
        self.handler = handler
        self.runs = max(1, runs)
        self.concurrency = max(1, concurrency)
        self.last_error = ""
        self.last_unreachable = False  # the last failure was a refused connection

    async def _one(self, payload: ApiPayload) -> bool:
        body = json.dumps(self.handler.generate_payload_json(payload)).encode("utf-8")
        self.last_unreachable = False
        try:
            async with await self.pool.request(
                "POST", self.handler.endpoint, body=body, content_type="application/json"
            ) as res:
                async for _ in res.iter_chunks():
                    pass  # the clock stops when the whole body has arrived, not the head
                if res.status >= 300:
                    self.last_error = f"model server answered {res.status}"
                    return False
                return True
        except UpstreamError as exc:
            self.last_error = str(exc)
            self.last_unreachable = isinstance(exc, UpstreamUnavailable)
            return False

    async def _round(self) -> RoundResult:
        payloads = [self.handler.make_benchmark_payload() for _ in range(self.concurrency)]
        workloads = await asyncio.to_thread(lambda: [float(p.count_workload()) for p in payloads])
        start = time.monotonic()
        results = await asyncio.gather(*(self._one(p) for p in payloads))
        seconds = time.monotonic() - start
        done = sum(w for w, ok in zip(workloads, results, strict=True) if ok)
        succeeded = sum(results)
        return RoundResult(done, seconds, succeeded, len(results) - succeeded)

    async def _warm_up(self) -> None:
        """One untimed request. While the connection is refused it is tried
        again for a while: a model may log "loaded" a moment before it listens."""
        deadline = time.monotonic() + WARMUP_PATIENCE_S
        delay = 0.25
        while not await self._one(self.handler.make_benchmark_payload()):
            if not self.last_unreachable or time.monotonic() + delay > deadline:
                log.warning("benchmark warm-up failed (%s); measuring anyway", self.last_error)
                return
            log.info("benchmark warm-up: %s; trying again in %g s", self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def run(self) -> float:
        """The model's throughput; raises `BenchmarkFailed`."""
        log.info(
            "benchmark: %s, %d rounds of %d concurrent requests", self.handler.endpoint, self.runs, self.concurrency
        )
        await self._warm_up()
        rounds: list[RoundResult] = []
        for i in range(self.runs):
            result = await self._round()
            rounds.append(result)
            log.info(
                "benchmark round %d/%d: %.1f workload/s (%d ok, %d failed, %.2f s)",
                i + 1,
                self.runs,
                result.throughput,
                result.succeeded,
                result.failed,
                result.seconds,
            )
        try:
            return best_throughput(rounds)
        except BenchmarkFailed:
            raise BenchmarkFailed(f"no benchmark request succeeded: {self.last_error}") from None


def benchmark_key(**facts: object) -> str:
    """A short stable digest of everything that could change the result."""
    import hashlib  # only here: the idle worker need not carry it

    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class BenchmarkStore:
    """Results kept in one JSON file, by key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> float | None:
        entry = self._read().get(key)
        if isinstance(entry, dict) and isinstance(entry.get("max_perf"), (int, float)) and entry["max_perf"] > 0:
            return float(entry["max_perf"])
        return None

    def put(self, key: str, max_perf: float, facts: dict[str, object]) -> None:
        data = self._read()
        data[key] = {"max_perf": max_perf, "measured_at": time.time(), "facts": facts}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, default=str))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("cannot keep the benchmark result in %s: %s", self.path, exc)
