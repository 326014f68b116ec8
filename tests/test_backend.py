"""The proxy path in-process (real sockets, a real stand-in model process):
queue order, refusals under a burst, cancellation, one outcome per request."""

from __future__ import annotations

import asyncio
import json
import unittest
from typing import Any

from pyworker import Backend, Request, Response, get, post
from pyworker.config import WorkerConfig
from pyworker.metrics import Metrics, Outcome
from pyworker.worker import Worker
from tests.support import ModelProcess, body, post_bytes, read_response
from workers.hello_world.server import GenerateHandler, GenerateStreamHandler


class InProcessWorker(unittest.IsolatedAsyncioTestCase):
    model: ModelProcess
    parallel = True

    @classmethod
    def setUpClass(cls) -> None:
        cls.model = ModelProcess("--token-delay", "0.05")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.stop()

    async def asyncSetUp(self) -> None:
        self.backend = Backend(
            model_server_url=self.model.url, allow_parallel_requests=self.parallel, max_queue_time=2.0
        )

        async def stats(_: Request) -> Response:
            return await self.backend.forward("GET", "/stats")

        routes = [
            post("/generate", self.backend.create_handler(GenerateHandler())),
            post("/generate_stream", self.backend.create_handler(GenerateStreamHandler())),
            get("/stats", stats),
        ]
        env = {
            "WORKER_HOST": "127.0.0.1",
            "WORKER_PORT": "0",
            "MODEL_LOG": "/dev/null",  # never "loaded": no benchmark runs beside the tests
            "UNSECURED": "true",
            "REPORT_ADDR": "off",
        }
        self.worker = Worker(self.backend, routes, WorkerConfig.from_env(env))
        await self.worker.start()
        self.port = self.worker.port
        # The first request per payload type loads the tokenizer; keep that out of the tests.
        await self.post("/generate", body("warm up", max_response_tokens=0))
        self.backend.metrics = Metrics()

    async def asyncTearDown(self) -> None:
        await self.worker.stop()

    async def post(self, path: str, data: bytes) -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(post_bytes(path, data))
        status, _, answer = await read_response(reader)
        writer.close()
        await writer.wait_closed()
        return status, answer

    async def model_stats(self) -> Any:
        async with await self.backend.pool.request("GET", "/stats") as res:
            return json.loads(await res.read())


class OneAtATime(InProcessWorker):
    parallel = False

    async def test_requests_reach_the_model_one_at_a_time_in_arrival_order(self) -> None:
        async def one(i: int) -> int:
            await asyncio.sleep(0.01 * i)  # arrive in order 0..5
            status, _ = await self.post("/generate", body(f"order {i}", request_idx=i, max_response_tokens=2))
            return status

        before = await self.model_stats()
        statuses = await asyncio.gather(*(one(i) for i in range(6)))
        after = await self.model_stats()
        self.assertEqual(statuses, [200] * 6)
        seen = after["order"][len(before["order"]) :][-6:]
        self.assertEqual(seen, [f"order {i}" for i in range(6)])
        self.assertEqual(after["max_active"], 1)

    async def test_client_leaving_while_queued_frees_its_slot(self) -> None:
        # The first request holds the model for 0.5 s; the second waits behind it.
        first = asyncio.create_task(self.post("/generate", body("first", request_idx=1, max_response_tokens=10)))
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = body("second", request_idx=2, max_response_tokens=10)
        writer.write(post_bytes("/generate", data))
        await asyncio.sleep(0.05)
        self.assertEqual(self.backend.queue.queued, 1)
        writer.close()
        await asyncio.sleep(0.05)
        self.assertEqual(self.backend.queue.queued, 0)
        self.assertEqual((await first)[0], 200)
        totals = self.backend.metrics.totals
        self.assertEqual((totals[Outcome.SUCCESS], totals[Outcome.CANCELLED]), (1, 1))
        self.assertEqual(self.backend.queue.load, 0)
        self.assertNotIn("second", (await self.model_stats())["order"])


class Parallel(InProcessWorker):
    async def test_a_burst_past_max_queue_time_is_refused_at_once(self) -> None:
        prompt = "one two three four five six seven eight nine ten"  # 10 tokens
        self.backend.queue.max_perf = 10.0  # so each request adds 1 s of estimated wait
        results = await asyncio.gather(
            *(self.post("/generate", body(prompt, request_idx=i, max_response_tokens=4)) for i in range(20))
        )
        statuses = sorted(status for status, _ in results)
        # Waits of 0, 1 and 2 s pass a 2 s limit; the rest see 3 s or more.
        self.assertEqual(statuses, [200] * 3 + [429] * 17)
        refusal = json.loads(next(a for s, a in results if s == 429))
        self.assertIn("over the limit of 2 s", refusal["error"])
        totals = self.backend.metrics.totals
        self.assertEqual((totals[Outcome.SUCCESS], totals[Outcome.REJECTED]), (3, 17))
        self.assertEqual(self.backend.metrics.rej_load, 170)

    async def test_a_burst_on_idle_pooled_connections_is_refused_the_same(self) -> None:
        # Each request is written to the model at once on a pooled connection
        # and counted after that: the count must still be booked before the
        # next request is admitted.
        warm = [self.post("/generate", body("x", request_idx=i, max_response_tokens=4)) for i in range(20)]
        await asyncio.gather(*warm)
        self.assertGreaterEqual(len(self.backend.pool._idle), 20)
        self.backend.metrics = Metrics()
        await self.test_a_burst_past_max_queue_time_is_refused_at_once()
        self.assertEqual(self.backend.queue.load, 0)
        self.assertEqual(self.backend.metrics.telemetry.workload["admitted"], 30)

    async def test_every_request_ends_in_exactly_one_outcome(self) -> None:
        tasks = [self.post("/generate", body("fine", request_idx=i, max_response_tokens=1)) for i in range(5)]
        tasks.append(self.post("/generate", b"{broken"))  # refused before it is counted
        await asyncio.gather(*tasks)
        metrics = self.backend.metrics
        self.assertEqual(sum(metrics.totals.values()), 5)
        self.assertEqual(len(metrics.finished), 5)
        self.assertEqual(metrics.num_requests_recieved, 5)
        self.assertEqual(metrics.working, {})
        self.assertTrue(all(r.status == "Success" and r.work_started_at for r in metrics.finished))

    async def test_client_leaving_mid_stream_is_cancelled_and_frees_the_model(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = body("long", request_idx=9, max_response_tokens=100)
        writer.write(post_bytes("/generate_stream", data))
        await reader.readuntil(b'"token"')
        writer.close()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if self.backend.metrics.totals[Outcome.CANCELLED]:
                break
        self.assertEqual(self.backend.metrics.totals[Outcome.CANCELLED], 1)
        self.assertEqual(self.backend.queue.load, 0)
        for _ in range(50):
            if (await self.model_stats())["active"] == 0:
                break
            await asyncio.sleep(0.02)
        self.assertEqual((await self.model_stats())["active"], 0)


if __name__ == "__main__":
    unittest.main()
