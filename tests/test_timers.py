"""Timers for many connections: `FixedDeadlines` on a real event loop."""

from __future__ import annotations

import asyncio
import unittest

from pyworker.http.timers import FixedDeadlines
from tests.support import until

DELAY = 0.1


class FixedDeadlinesOnOneTimer(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.expired: list[tuple[str, float]] = []
        self.deadlines: FixedDeadlines[str] = FixedDeadlines(DELAY, self.expire)

    def expire(self, key: str) -> None:
        self.expired.append((key, self.loop.time()))
        if key == "bad":
            raise RuntimeError("a callback that fails")

    def keys(self) -> list[str]:
        return [key for key, _ in self.expired]

    async def test_keys_expire_in_order_each_its_delay_after_it_was_added(self) -> None:
        added = {}
        for key in ("a", "b", "c"):
            added[key] = self.loop.time()
            self.deadlines.add(key)
            await asyncio.sleep(0.03)
        await until(lambda: len(self.expired) == 3)
        self.assertEqual(self.keys(), ["a", "b", "c"])
        for key, when in self.expired:
            self.assertGreaterEqual(when - added[key], DELAY - 0.005, key)
        self.assertEqual(len(self.deadlines), 0)

    async def test_a_key_added_again_is_due_from_then_after_the_others(self) -> None:
        for key in ("a", "b"):
            self.deadlines.add(key)
        await asyncio.sleep(0.05)
        again = self.loop.time()
        self.deadlines.add("a")
        await until(lambda: len(self.expired) == 2)
        self.assertEqual(self.keys(), ["b", "a"])
        self.assertGreaterEqual(self.expired[1][1] - again, DELAY - 0.005)

    async def test_discarded_keys_never_expire(self) -> None:
        for key in ("a", "b", "c"):
            self.deadlines.add(key)
        self.deadlines.discard("a")
        self.deadlines.discard("c")
        self.deadlines.discard("never added")
        await until(lambda: bool(self.expired))
        await asyncio.sleep(DELAY)  # time enough for the others, had they been due
        self.assertEqual(self.keys(), ["b"])

    async def test_a_key_added_after_the_timer_fired_on_nothing_still_expires(self) -> None:
        self.deadlines.add("a")
        self.deadlines.discard("a")
        await asyncio.sleep(DELAY + 0.02)  # the timer fires with nothing due, and stops
        self.deadlines.add("b")
        await until(lambda: bool(self.expired))
        self.assertEqual(self.keys(), ["b"])

    async def test_one_failing_callback_leaves_the_others_expiring(self) -> None:
        for key in ("bad", "after"):
            self.deadlines.add(key)
        with self.assertLogs("pyworker.http", "ERROR"):
            await until(lambda: len(self.expired) == 2)
        self.assertEqual(self.keys(), ["bad", "after"])

    async def test_close_drops_every_deadline(self) -> None:
        self.deadlines.add("a")
        self.deadlines.close()
        await asyncio.sleep(DELAY * 2)
        self.assertEqual(self.expired, [])
        self.assertEqual(len(self.deadlines), 0)


if __name__ == "__main__":
    unittest.main()
