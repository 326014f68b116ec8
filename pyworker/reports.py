"""Reports to the autoscaler: `/worker_status/` and `/delete_requests/`.

Each runs in its own task, one report in flight at a time, so an autoscaler
that is slow or down delays only the next report, never a request. A report
goes to the first `REPORT_ADDR` that takes it (3 tries each, 10 s timeout);
counters are reduced by what was delivered only once it was delivered, and
finished-request records stay queued (bounded) until then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .http import ClientLimits, ConnectionPool, UpstreamError
from .metrics import Counters, Metrics
from .status import WorkerStatus

log = logging.getLogger("pyworker.reports")

STATUS_CHECK_S = 1.0
STATUS_RESEND_S = 10.0
DELETE_CHECK_S = 1.0
TRIES_PER_ADDR = 3
REQUEST_TIMEOUT_S = 10.0
# Records sent in one /delete_requests/ body.
MAX_RECORDS_PER_REPORT = 1000
BYTES_PER_GB = 1e9


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the worker is to the autoscaler."""

    worker_id: int
    mtoken: str
    url: str
    version: str


def disk_used_gb(path: str = "/") -> float:
    # What shutil.disk_usage calls "used", without importing shutil (and with
    # it zlib, bz2 and lzma: half a megabyte the idle worker would carry).
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize / BYTES_PER_GB


class Autoscaler:
    """The autoscaler's base URLs, tried in order, with one pool each."""

    def __init__(self, addrs: tuple[str, ...], timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        limits = ClientLimits(connect_timeout_s=timeout_s, read_timeout_s=timeout_s, max_idle_connections=2)
        self.addrs = addrs
        self._pools = [ConnectionPool(addr, limits) for addr in addrs]

    async def post_json(self, path: str, body: dict[str, Any], tries: int = TRIES_PER_ADDR) -> bool:
        """True once one address answered 2xx; each address gets `tries` tries."""
        data = json.dumps(body).encode("utf-8")
        for addr, pool in zip(self.addrs, self._pools, strict=True):
            for attempt in range(1, tries + 1):
                try:
                    async with await pool.request("POST", path, body=data, content_type="application/json") as res:
                        await res.read(64 * 1024)
                        if 200 <= res.status < 300:
                            return True
                        reason = f"answered {res.status}"
                except UpstreamError as exc:
                    reason = str(exc)
                log.debug("POST %s%s try %d: %s", addr, path, attempt, reason)
            log.warning("POST %s%s failed %d times: %s", addr, path, tries, reason)
        return False

    async def get_text(self, path: str, max_bytes: int = 64 * 1024) -> tuple[str, str]:
        """(text, "") from the first address that answers 200, else ("", why not)."""
        problems: list[str] = []
        for addr, pool in zip(self.addrs, self._pools, strict=True):
            try:
                async with await pool.request("GET", path) as res:
                    body = await res.read(max_bytes)
                    if res.status == 200:
                        return body.decode("utf-8", errors="replace"), ""
                    problems.append(f"{addr}{path} answered {res.status}")
            except UpstreamError as exc:
                problems.append(f"{addr}{path}: {exc}")
        return "", "; ".join(problems)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


class Reporter:
    """Sends `/worker_status/` and `/delete_requests/` to the autoscaler on the protocol's cadence.

    Counters are reduced only by what a delivered report carried, so nothing
    counted meanwhile is lost; undelivered records wait, bounded.
    """

    def __init__(
        self,
        autoscaler: Autoscaler,
        identity: Identity,
        metrics: Callable[[], Metrics],
        status: WorkerStatus,
        load: Callable[[], float],
    ) -> None:
        self.autoscaler = autoscaler
        self.identity = identity
        self._metrics = metrics
        self.status = status
        self._load = load
        self._last_sent: dict[str, Any] | None = None
        self._last_sent_at = float("-inf")
        self._disk_reported_gb: float | None = None
        self.sent_status = 0
        self.sent_deletes = 0

    def status_body(self, counters: Counters, disk_gb: float) -> dict[str, Any]:
        m = self._metrics()
        status = self.status
        previous = self._disk_reported_gb
        return {
            "id": self.identity.worker_id,
            "mtoken": self.identity.mtoken,
            "version": self.identity.version,
            "loadtime": status.loadtime if status.loadtime is not None and not status.loadtime_delivered else 0.0,
            "cur_load": self._load(),
            "new_load": counters.new_load,
            "rej_load": counters.rej_load,
            "cur_perf": counters.cur_perf_load,
            "max_perf": status.max_perf,
            "error_msg": status.error_msg,
            "num_requests_working": len(m.working),
            "num_requests_recieved": counters.num_requests_recieved,
            "working_request_idxs": sorted(m.working),
            "additional_disk_usage": 0.0 if previous is None else disk_gb - previous,
            "disk_usage": disk_gb,
            "cur_capacity": 0,
            "max_capacity": 0,
            "url": self.identity.url,
        }

    async def report_status(self, force: bool = False) -> bool:
        """Send a status report if anything changed or it is time; True if one was delivered."""
        loop = asyncio.get_running_loop()
        counters = self._metrics().counters()
        disk_gb = await asyncio.to_thread(disk_used_gb)
        body = self.status_body(counters, disk_gb)
        comparable = dict(body, disk_usage=round(disk_gb, 1), additional_disk_usage=0)
        due = loop.time() - self._last_sent_at >= STATUS_RESEND_S
        if not force and not due and comparable == self._last_sent:
            return False
        if not await self.autoscaler.post_json("/worker_status/", body):
            self._metrics().telemetry.report_failures["worker_status"] += 1
            return False
        self._metrics().delivered(counters)
        if body["loadtime"]:
            self.status.loadtime_delivered = True
        self._disk_reported_gb = disk_gb
        self._last_sent = comparable
        self._last_sent_at = loop.time()
        self.sent_status += 1
        return True

    async def report_finished(self) -> bool:
        """Send the oldest finished-request records; True if some were delivered."""
        metrics = self._metrics()
        batch = metrics.take_finished(MAX_RECORDS_PER_REPORT)
        if not batch:
            return False
        body = {
            "worker_id": self.identity.worker_id,
            "mtoken": self.identity.mtoken,
            "requests": [r.to_json() for r in batch],
        }
        if not await self.autoscaler.post_json("/delete_requests/", body):
            metrics.telemetry.report_failures["delete_requests"] += 1
            return False
        metrics.forget(batch)
        self.sent_deletes += 1
        return True

    async def run_status(self) -> None:
        while True:
            try:
                await self.report_status()
            except Exception:
                log.exception("status report failed")
            await asyncio.sleep(STATUS_CHECK_S)

    async def run_finished(self) -> None:
        while True:
            try:
                while await self.report_finished():
                    pass
            except Exception:
                log.exception("finished-request report failed")
            await asyncio.sleep(DELETE_CHECK_S)

    async def final(self) -> None:
        """One last status and finished-request report (at shutdown), one try each."""
        try:
            await self.report_finished()
            await self.report_status(force=True)
        except Exception:
            log.exception("final report failed")
