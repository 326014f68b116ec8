"""What the worker counts for the autoscaler: load, throughput, finished requests.

Every request that reaches a proxy route ends in exactly one `Outcome`;
`RequestTracker.finish` enforces that.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from .telemetry import Telemetry

log = logging.getLogger("pyworker.metrics")

# Finished-request records kept until the autoscaler takes them.
MAX_FINISHED_RECORDS = 10_000


class Outcome(enum.Enum):
    SUCCESS = "Success"
    ERROR = "Error"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"


@dataclass(slots=True)
class RequestRecord:
    """One finished request, as `/delete_requests/` wants it."""

    request_idx: int
    success: bool
    status: str
    entered_queue_at: float
    work_started_at: float | None
    work_completed_at: float

    def to_json(self) -> dict[str, object]:
        return {
            "request_idx": self.request_idx,
            "success": self.success,
            "status": self.status,
            "entered_queue_at": self.entered_queue_at,
            "work_started_at": self.work_started_at,
            "work_completed_at": self.work_completed_at,
        }


@dataclass(frozen=True, slots=True)
class Counters:
    """The since-last-report counters at one moment."""

    new_load: float
    rej_load: float
    cur_perf_load: float
    num_requests_recieved: int


@dataclass
class Metrics:
    """Counters since the last report, plus totals since start."""

    new_load: float = 0.0  # workload received minus cancelled
    rej_load: float = 0.0
    cur_perf_load: float = 0.0  # workload served
    num_requests_recieved: int = 0  # spelled as on the wire
    totals: Counter[Outcome] = field(default_factory=Counter)
    working: dict[int, float] = field(default_factory=dict)  # request_idx -> workload
    finished: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=MAX_FINISHED_RECORDS))
    dropped_records: int = 0
    # False when no autoscaler takes the records (REPORT_ADDR=off): none are kept.
    keep_records: bool = True
    # Counts since start for /metrics (these above reset with each report).
    telemetry: Telemetry = field(default_factory=Telemetry)

    def track(self, request_idx: int, workload: float, route: str = "") -> RequestTracker:
        """Start following a request that has been received."""
        self.num_requests_recieved += 1
        return RequestTracker(self, request_idx, workload, route=route)

    def track_in_session(self, request_idx: int, workload: float, route: str = "") -> RequestTracker:
        """Start following a request made in a session.

        The session itself is the request the autoscaler follows: this one
        counts only in `new_load`, `rej_load` and `cur_perf`, never in
        `num_requests_recieved`, `working` or the finished records.
        """
        return RequestTracker(self, request_idx, workload, in_session=True, route=route)

    def counters(self) -> Counters:
        return Counters(self.new_load, self.rej_load, self.cur_perf_load, self.num_requests_recieved)

    def delivered(self, sent: Counters) -> None:
        """Take what a delivered report carried off the counters.

        Subtracting (not zeroing) keeps what was counted while it was in flight.
        """
        self.new_load -= sent.new_load
        self.rej_load -= sent.rej_load
        self.cur_perf_load -= sent.cur_perf_load
        self.num_requests_recieved -= sent.num_requests_recieved

    def take_finished(self, limit: int) -> list[RequestRecord]:
        """Up to `limit` of the oldest finished records, left in place until `forget`."""
        return [self.finished[i] for i in range(min(limit, len(self.finished)))]

    def forget(self, sent: list[RequestRecord]) -> None:
        """Drop delivered records; any the bound already dropped are skipped."""
        ids = {id(r) for r in sent}
        finished = self.finished
        while finished and id(finished[0]) in ids:
            finished.popleft()

    @property
    def cur_load(self) -> float:
        return sum(self.working.values())

    def _record(self, record: RequestRecord) -> None:
        if not self.keep_records:
            return
        if len(self.finished) == self.finished.maxlen:
            # Warn on the first drop and then every 1000th, not on every request.
            if self.dropped_records % 1000 == 0:
                log.warning(
                    "finished-request records are full (%d): dropping the oldest; %d dropped so far",
                    len(self.finished),
                    self.dropped_records + 1,
                )
            self.dropped_records += 1
        self.finished.append(record)


class RequestTracker:
    """One request's life: received, maybe started, then one outcome."""

    __slots__ = (
        "_metrics",
        "request_idx",
        "workload",
        "entered_at",
        "started_at",
        "outcome",
        "in_session",
        "route",
        "_admitted",
    )

    def __init__(
        self, metrics: Metrics, request_idx: int, workload: float, in_session: bool = False, route: str = ""
    ) -> None:
        self._metrics = metrics
        self.in_session = in_session
        self.route = route
        self._admitted = False
        self.request_idx = request_idx
        self.workload = workload
        self.entered_at = time.time()
        self.started_at: float | None = None
        self.outcome: Outcome | None = None

    def admitted(self) -> None:
        m = self._metrics
        self._admitted = True
        t = m.telemetry
        t.in_flight += 1
        t.workload["admitted"] += self.workload
        m.new_load += self.workload
        if not self.in_session:
            m.working[self.request_idx] = m.working.get(self.request_idx, 0.0) + self.workload

    def started(self) -> None:
        self.started_at = time.time()
        self._metrics.telemetry.queue_wait.observe(max(0.0, self.started_at - self.entered_at))

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome; a second call is a bug in the caller and is ignored loudly."""
        if self.outcome is not None:
            log.error("request %d finished twice (%s, then %s)", self.request_idx, self.outcome.value, outcome.value)
            return
        self.outcome = outcome
        m = self._metrics
        m.totals[outcome] += 1
        now = time.time()
        t = m.telemetry
        t.requests[(self.route, outcome.name.lower())] += 1
        if self._admitted:
            t.in_flight -= 1
        t.latency.observe(max(0.0, now - self.entered_at), route=self.route)
        if outcome is not Outcome.REJECTED and not self.in_session:
            left = m.working.get(self.request_idx, 0.0) - self.workload
            if left > 1e-9:
                m.working[self.request_idx] = left
            else:
                m.working.pop(self.request_idx, None)
        if outcome is Outcome.SUCCESS:
            m.cur_perf_load += self.workload
            t.workload["served"] += self.workload
        elif outcome is Outcome.REJECTED:
            m.rej_load += self.workload
            t.workload["rejected"] += self.workload
        elif outcome is Outcome.CANCELLED:
            m.new_load -= self.workload
        if self.in_session:
            return
        m._record(
            RequestRecord(
                request_idx=self.request_idx,
                success=outcome is Outcome.SUCCESS,
                status=outcome.value,
                entered_queue_at=self.entered_at,
                work_started_at=self.started_at,
                work_completed_at=now,
            )
        )
