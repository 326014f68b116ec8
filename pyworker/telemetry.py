"""Counters and histograms since start, for operators: Prometheus text format at `/metrics`.

The autoscaler's counters (`metrics.Metrics`) reset with every delivered
report; these never do, as Prometheus expects. They are served on their own
listener (`PYWORKER_METRICS_HOST`, loopback by default), never on the
public port. Exposition format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a fast proxied answer to a long generation.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class Histogram:
    """Cumulative counts by upper bound, with a sum and a count, per label set."""

    __slots__ = ("buckets", "_counts", "_sums")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self._counts: dict[tuple[tuple[str, str], ...], list[int]] = {}
        self._sums: dict[tuple[tuple[str, str], ...], float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self.buckets) + 1)
            self._sums[key] = 0.0
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self._sums[key] += value

    def lines(self, name: str) -> Iterable[str]:
        for key, counts in sorted(self._counts.items()):
            total = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                total += n
                yield f"{name}_bucket{_labels(key, le=_number(bound))} {total}"
            yield f"{name}_sum{_labels(key)} {_number(self._sums[key])}"
            yield f"{name}_count{_labels(key)} {total}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: tuple[tuple[str, str], ...], **extra: str) -> str:
    pairs = [*key, *extra.items()]
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class Telemetry:
    """What `/metrics` shows; every count is since the worker started."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (route, outcome) -> requests
        self.in_flight = 0
        self.workload: dict[str, float] = {"admitted": 0.0, "rejected": 0.0, "served": 0.0}
        self.model_errors: Counter[str] = Counter()  # kind -> errors
        self.report_failures: Counter[str] = Counter()  # report -> failed deliveries
        self.queue_wait = Histogram()
        self.latency = Histogram()
        self.first_byte = Histogram()

    def refused(self, route: str) -> None:
        """A request answered 4xx or 503 before it was admitted (bad input, signature, session, model down)."""
        self.requests[(route, "refused")] += 1

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The exposition text; `gauges` maps a name to (help, value), read at the time of the scrape."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)

        family(
            "pyworker_requests_total",
            "counter",
            "Requests to model routes by route and outcome (success, error, cancelled, rejected: 429, refused: 4xx or 503 before admission).",
            (
                f"pyworker_requests_total{_labels((('outcome', o), ('route', r)))} {n}"
                for (r, o), n in sorted(self.requests.items())
            ),
        )
        family(
            "pyworker_requests_in_flight",
            "gauge",
            "Requests admitted and not finished.",
            [f"pyworker_requests_in_flight {self.in_flight}"],
        )
        family(
            "pyworker_workload_total",
            "counter",
            "Workload (tokens, or the route's unit) admitted, rejected (429 or session limit) and served.",
            (
                f"pyworker_workload_total{_labels((('kind', k),))} {_number(self.workload[k])}"
                for k in ("admitted", "rejected", "served")
            ),
        )
        family(
            "pyworker_queue_wait_seconds",
            "histogram",
            "Time from arrival to the start of work.",
            self.queue_wait.lines("pyworker_queue_wait_seconds"),
        )
        family(
            "pyworker_request_duration_seconds",
            "histogram",
            "Time from arrival to the end of the answer, by route.",
            self.latency.lines("pyworker_request_duration_seconds"),
        )
        family(
            "pyworker_stream_first_byte_seconds",
            "histogram",
            "Time from arrival to a streamed answer's first body byte.",
            self.first_byte.lines("pyworker_stream_first_byte_seconds"),
        )
        family(
            "pyworker_model_errors_total",
            "counter",
            "Model-server failures by kind (unavailable, timeout, protocol, down, status_5xx).",
            (f"pyworker_model_errors_total{_labels((('kind', k),))} {n}" for k, n in sorted(self.model_errors.items())),
        )
        family(
            "pyworker_report_failures_total",
            "counter",
            "Reports to the autoscaler that no address took, by report.",
            (
                f"pyworker_report_failures_total{_labels((('report', k),))} {n}"
                for k, n in sorted(self.report_failures.items())
            ),
        )
        for name, (help_text, value) in gauges.items():
            family(name, "gauge", help_text, [f"{name} {_number(value)}"])
        return "\n".join(out) + "\n"
