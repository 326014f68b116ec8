"""The work queue: admission, FIFO order, cancellation."""

from __future__ import annotations

import asyncio
import unittest

from pyworker.queue import QueueFull, Ticket, WorkQueue


class Admission(unittest.TestCase):
    def test_nothing_is_refused_before_throughput_is_known(self) -> None:
        queue = WorkQueue(max_perf=0)
        for _ in range(100):
            queue.admit(1000, max_queue_time=0.001, parallel=True)
        self.assertEqual(queue.load, 100_000)

    def test_refuses_once_the_estimated_wait_passes_the_limit(self) -> None:
        queue = WorkQueue(max_perf=100)  # 100 workload units per second
        queue.admit(150, max_queue_time=2, parallel=True)  # waits 0 s
        queue.admit(150, max_queue_time=2, parallel=True)  # waits 1.5 s
        with self.assertRaises(QueueFull) as ctx:
            queue.admit(1, max_queue_time=2, parallel=True)  # would wait 3 s
        self.assertAlmostEqual(ctx.exception.wait_s, 3.0)
        self.assertEqual(queue.load, 300)

    def test_a_burst_cannot_slip_past_the_limit(self) -> None:
        async def burst() -> tuple[int, int]:
            queue = WorkQueue(max_perf=10)
            admitted = refused = 0

            async def one() -> None:
                nonlocal admitted, refused
                try:
                    async with queue.admit(10, max_queue_time=3, parallel=True):
                        admitted += 1
                        await asyncio.sleep(0.05)
                except QueueFull:
                    refused += 1

            await asyncio.gather(*(one() for _ in range(50)))
            return admitted, refused

        admitted, refused = asyncio.run(burst())
        # Waits of 0, 1, 2, 3 s are admitted; the fifth sees 4 s.
        self.assertEqual((admitted, refused), (4, 46))

    def test_release_returns_the_workload_once(self) -> None:
        queue = WorkQueue(max_perf=1)
        ticket = queue.admit(5, 100, parallel=True)
        ticket.release()
        ticket.release()
        self.assertEqual((queue.load, queue.queued, queue.running), (0, 0, 0))


class Ordering(unittest.IsolatedAsyncioTestCase):
    async def test_one_at_a_time_requests_run_in_arrival_order(self) -> None:
        queue = WorkQueue()
        order: list[int] = []
        running = 0
        most = 0

        async def job(i: int) -> None:
            nonlocal running, most
            async with queue.admit(1, 100, parallel=False):
                running += 1
                most = max(most, running)
                order.append(i)
                await asyncio.sleep(0.001 * (10 - i))  # later jobs are quicker: order must still hold
                running -= 1

        await asyncio.gather(*(job(i) for i in range(10)))
        self.assertEqual(order, list(range(10)))
        self.assertEqual(most, 1)

    async def test_parallel_requests_run_together(self) -> None:
        queue = WorkQueue()
        running = 0
        most = 0

        async def job() -> None:
            nonlocal running, most
            async with queue.admit(1, 100, parallel=True):
                running += 1
                most = max(most, running)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(job() for _ in range(5)))
        self.assertEqual(most, 5)

    async def test_cancelled_waiter_leaves_the_queue_and_frees_its_load(self) -> None:
        queue = WorkQueue()
        first = queue.admit(1, 100, parallel=False)
        await first.wait_turn()
        second = queue.admit(2, 100, parallel=False)
        third = queue.admit(4, 100, parallel=False)
        waiting_second = asyncio.create_task(second.wait_turn())
        waiting_third = asyncio.create_task(third.wait_turn())
        await asyncio.sleep(0)
        waiting_second.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiting_second
        self.assertEqual(queue.load, 5)
        first.release()
        await asyncio.wait_for(waiting_third, 1)  # the turn skips the cancelled one
        self.assertTrue(third.started)
        third.release()
        self.assertEqual((queue.load, queue.queued, queue.running), (0, 0, 0))

    async def test_turn_handed_to_a_waiter_cancelled_at_that_moment_passes_on(self) -> None:
        queue = WorkQueue()
        first = queue.admit(1, 100, parallel=False)
        await first.wait_turn()
        second = queue.admit(1, 100, parallel=False)
        third = queue.admit(1, 100, parallel=False)
        t2 = asyncio.create_task(second.wait_turn())
        t3 = asyncio.create_task(third.wait_turn())
        await asyncio.sleep(0)
        first.release()  # hands the turn to `second`...
        t2.cancel()  # ...which is cancelled before it runs
        with self.assertRaises(asyncio.CancelledError):
            await t2
        await asyncio.wait_for(t3, 1)
        self.assertIsInstance(third, Ticket)
        self.assertTrue(third.started)


if __name__ == "__main__":
    unittest.main()
