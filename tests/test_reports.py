"""Reports to the autoscaler: bodies, counter resets, failover, records kept through failures."""

from __future__ import annotations

import asyncio
import json
import shutil
import unittest
from typing import Any

from pyworker.dev.ports import free_port
from pyworker.http import HTTPServer, Request, Response, json_response, post
from pyworker.metrics import MAX_FINISHED_RECORDS, Metrics, Outcome
from pyworker.reports import BYTES_PER_GB, Autoscaler, Identity, Reporter, disk_used_gb
from pyworker.status import Phase, WorkerStatus
from tests.support import STATUS_FIELDS


class Recorder:
    """A minimal autoscaler: records bodies; can hold its answers back or refuse."""

    def __init__(self) -> None:
        self.status_bodies: list[dict[str, Any]] = []
        self.delete_bodies: list[dict[str, Any]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.arrived = asyncio.Event()
        self.fail = False

    async def worker_status(self, request: Request) -> Response:
        self.arrived.set()
        await self.hold.wait()
        if self.fail:
            return json_response({"error": "down"}, status=503)
        self.status_bodies.append(json.loads(request.body))
        return json_response({})

    async def delete_requests(self, request: Request) -> Response:
        if self.fail:
            return json_response({"error": "down"}, status=503)
        self.delete_bodies.append(json.loads(request.body))
        return json_response({})


class ReportCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.recorder = Recorder()
        self.server = HTTPServer(
            [
                post("/worker_status/", self.recorder.worker_status),
                post("/delete_requests/", self.recorder.delete_requests),
            ]
        )
        await self.server.start("127.0.0.1", 0)
        self.metrics = Metrics()
        self.status = WorkerStatus()
        self.autoscaler = Autoscaler((f"http://127.0.0.1:{self.server.port}",), timeout_s=2)
        self.reporter = self.make_reporter(self.autoscaler)

    def make_reporter(self, autoscaler: Autoscaler) -> Reporter:
        identity = Identity(worker_id=12, mtoken="secret", url="http://1.2.3.4:5678", version="test")
        return Reporter(autoscaler, identity, lambda: self.metrics, self.status, lambda: self.metrics.cur_load)

    async def asyncTearDown(self) -> None:
        self.autoscaler.close()
        await self.server.shutdown(0.1)

    def serve(self, idx: int, workload: float, outcome: Outcome = Outcome.SUCCESS) -> None:
        tracker = self.metrics.track(idx, workload)
        if outcome is not Outcome.REJECTED:
            tracker.admitted()
            tracker.started()
        tracker.finish(outcome)


class StatusReports(ReportCase):
    async def test_body_has_every_protocol_field(self) -> None:
        self.serve(1, 10)
        self.serve(2, 5, Outcome.REJECTED)
        tracker = self.metrics.track(3, 7)
        tracker.admitted()
        self.assertTrue(await self.reporter.report_status())
        body = self.recorder.status_bodies[-1]
        self.assertEqual(
            set(body),
            set(STATUS_FIELDS),
        )
        self.assertEqual((body["id"], body["mtoken"], body["url"]), (12, "secret", "http://1.2.3.4:5678"))
        self.assertEqual((body["new_load"], body["rej_load"], body["cur_perf"]), (17, 5, 10))
        self.assertEqual((body["num_requests_recieved"], body["num_requests_working"]), (3, 1))
        self.assertEqual((body["working_request_idxs"], body["cur_load"]), ([3], 7))
        self.assertGreater(body["disk_usage"], 0)

    async def test_counters_reset_after_delivery_keeping_what_came_in_flight(self) -> None:
        self.serve(1, 10)
        self.recorder.hold.clear()
        sending = asyncio.create_task(self.reporter.report_status())
        await self.recorder.arrived.wait()
        self.serve(2, 4)  # counted while the report is in flight
        self.recorder.hold.set()
        self.assertTrue(await sending)
        self.assertEqual(self.recorder.status_bodies[-1]["cur_perf"], 10)
        counters = self.metrics.counters()
        self.assertEqual((counters.cur_perf_load, counters.new_load, counters.num_requests_recieved), (4, 4, 1))

    async def test_undelivered_report_keeps_the_counters(self) -> None:
        self.serve(1, 10)
        self.recorder.fail = True
        self.assertFalse(await self.reporter.report_status())
        self.assertEqual(self.metrics.counters().cur_perf_load, 10)
        self.recorder.fail = False
        self.assertTrue(await self.reporter.report_status())
        self.assertEqual(self.recorder.status_bodies[-1]["cur_perf"], 10)
        self.assertEqual(self.metrics.counters().cur_perf_load, 0)

    async def test_loadtime_is_sent_once(self) -> None:
        self.status.set_phase(Phase.READY)
        self.assertTrue(await self.reporter.report_status(force=True))
        self.assertTrue(await self.reporter.report_status(force=True))
        first, second = self.recorder.status_bodies[-2:]
        self.assertGreater(first["loadtime"], 0)
        self.assertEqual(second["loadtime"], 0)

    async def test_unchanged_status_is_not_resent_within_ten_seconds(self) -> None:
        self.assertTrue(await self.reporter.report_status())
        self.assertFalse(await self.reporter.report_status())
        self.status.set_error("model", "broken")
        self.assertTrue(await self.reporter.report_status())
        self.assertIn("broken", self.recorder.status_bodies[-1]["error_msg"])

    async def test_next_address_takes_over_when_the_first_is_down(self) -> None:
        autoscaler = Autoscaler(
            (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{self.server.port}"), timeout_s=2
        )
        self.addCleanup(autoscaler.close)
        with self.assertLogs("pyworker.reports", "WARNING"):
            self.assertTrue(await self.make_reporter(autoscaler).report_status())
        self.assertEqual(len(self.recorder.status_bodies), 1)


class FinishedRequests(ReportCase):
    async def test_records_leave_only_once_delivered(self) -> None:
        for i in range(3):
            self.serve(i, 1)
        self.serve(9, 2, Outcome.REJECTED)
        self.recorder.fail = True
        self.assertFalse(await self.reporter.report_finished())
        self.assertEqual(len(self.metrics.finished), 4)
        self.recorder.fail = False
        self.assertTrue(await self.reporter.report_finished())
        self.assertFalse(await self.reporter.report_finished(), "nothing left to send")
        sent = self.recorder.delete_bodies[0]
        self.assertEqual((sent["worker_id"], sent["mtoken"]), (12, "secret"))
        self.assertEqual([r["request_idx"] for r in sent["requests"]], [0, 1, 2, 9])
        self.assertEqual(sent["requests"][3]["status"], "Rejected")
        self.assertEqual(
            set(sent["requests"][0]),
            {"request_idx", "success", "status", "entered_queue_at", "work_started_at", "work_completed_at"},
        )

    async def test_records_finished_while_sending_are_kept(self) -> None:
        self.serve(1, 1)
        batch = self.metrics.take_finished(100)
        self.serve(2, 1)
        self.metrics.forget(batch)
        self.assertEqual([r.request_idx for r in self.metrics.finished], [2])

    def test_records_are_bounded_and_the_oldest_dropped_with_a_warning(self) -> None:
        with self.assertLogs("pyworker.metrics", "WARNING"):
            for i in range(MAX_FINISHED_RECORDS + 5):
                self.serve(i, 1)
        self.assertEqual(len(self.metrics.finished), MAX_FINISHED_RECORDS)
        self.assertEqual(self.metrics.finished[0].request_idx, 5)

    def test_with_no_autoscaler_no_record_is_kept_and_nothing_logged(self) -> None:
        from pyworker import Backend
        from pyworker.config import WorkerConfig
        from pyworker.worker import Worker

        backend = Backend()
        Worker(backend, [], WorkerConfig.from_env({"UNSECURED": "true", "REPORT_ADDR": "off"}))
        self.metrics = backend.metrics
        with self.assertNoLogs("pyworker.metrics"):
            for i in range(MAX_FINISHED_RECORDS + 5):
                self.serve(i, 1)
        self.assertEqual(len(self.metrics.finished), 0)
        self.assertEqual(self.metrics.totals[Outcome.SUCCESS], MAX_FINISHED_RECORDS + 5)


class DiskUsage(unittest.TestCase):
    def test_is_what_shutil_calls_used(self) -> None:
        # Other processes write meanwhile: a megabyte either way.
        self.assertAlmostEqual(disk_used_gb("/"), shutil.disk_usage("/").used / BYTES_PER_GB, delta=0.001)


if __name__ == "__main__":
    unittest.main()
