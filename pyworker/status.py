"""The worker's own state as the autoscaler sees it: phase, load time, errors."""

from __future__ import annotations

import enum
import logging
import time

log = logging.getLogger("pyworker")


class Phase(enum.Enum):
    LOADING = "loading"  # waiting for the model to load: its log line, or its health route
    BENCHMARKING = "benchmarking"
    WAITING_HEALTHY = "waiting for a healthy healthcheck"
    READY = "ready"


class WorkerStatus:
    """Phase, throughput and errors, each error kept under its source until cleared."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.phase = Phase.LOADING
        self.max_perf = 0.0
        self.loadtime: float | None = None  # seconds from start to ready
        self.loadtime_delivered = False
        self._errors: dict[str, str] = {}

    def set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            log.info("worker %s", phase.value)
            self.phase = phase
        if phase is Phase.READY and self.loadtime is None:
            self.loadtime = time.monotonic() - self.started_at

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def set_error(self, source: str, message: str) -> None:
        if self._errors.get(source) != message:
            log.error("%s: %s", source, message)
            self._errors[source] = message

    def clear_error(self, source: str) -> None:
        if self._errors.pop(source, None) is not None:
            log.info("%s: recovered", source)

    @property
    def error_msg(self) -> str:
        return "; ".join(f"{source}: {message}" for source, message in self._errors.items())
