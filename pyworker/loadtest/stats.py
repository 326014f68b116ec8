"""Counting a load test: outcomes by kind, latencies, per-worker counts."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """The q-th quantile (0..1) by nearest rank, or None for no values.

    Nearest rank: the smallest value with at least q of all values at or
    below it, so a p99 is always a latency that was measured. The one
    definition used by the load test and the benchmarks.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Stats:
    """Everything measured so far; the live view and the summary read it."""

    asked: int
    rps: float
    started_at: float = field(default_factory=time.monotonic)
    sent: int = 0  # arrivals so far
    routing: int = 0
    in_flight: int = 0
    done: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests, route included
    ttfb: list[float] = field(default_factory=list)  # seconds to the worker's first body byte
    arrival_lag: list[float] = field(default_factory=list)  # seconds late against the schedule
    per_worker: Counter[str] = field(default_factory=Counter)
    stopped_early: bool = False
    session_size: int = 0  # requests a session; 0: no sessions
    sessions_opened: int = 0
    sessions_ended: int = 0
    session_end_errors: Counter[str] = field(default_factory=Counter)  # not requests: apart from `errors`
    last_sent_at: float | None = None
    finished_at: float | None = None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started_at

    @property
    def achieved_rps(self) -> float:
        """Arrivals per second over the arrival window (first to last request sent)."""
        if self.sent < 2 or self.last_sent_at is None:
            return 0.0
        window = self.last_sent_at - self.started_at
        return (self.sent - 1) / window if window > 0 else 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def summary(self) -> dict[str, Any]:
        """The whole result, as `--json` writes it."""

        def ms(values: list[float], q: float) -> float | None:
            value = percentile(values, q)
            return None if value is None else round(value * 1000, 3)

        elapsed = self.elapsed
        completed = self.done + self.failed
        return {
            "asked": {"requests": self.asked, "rps": self.rps},
            "sent": self.sent,
            "succeeded": self.done,
            "failed": self.failed,
            "errors": dict(sorted(self.errors.items())),
            "stopped_early": self.stopped_early,
            "elapsed_s": round(elapsed, 3),
            "achieved_rps": round(self.achieved_rps, 3),
            "completed_rps": round(completed / elapsed, 3) if elapsed > 0 else 0.0,
            "latency_ms": {
                name: ms(self.latencies, q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "ttfb_ms": {
                name: ms(self.ttfb, q) for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "arrival_lag_ms": {
                name: ms(self.arrival_lag, q) for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
            },
            "workers": dict(sorted(self.per_worker.items())),
            "sessions": (
                {
                    "size": self.session_size,
                    "opened": self.sessions_opened,
                    "ended": self.sessions_ended,
                    "end_errors": dict(sorted(self.session_end_errors.items())),
                }
                if self.session_size
                else None
            ),
        }
