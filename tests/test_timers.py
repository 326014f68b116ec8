"""Timers for many connections: `FixedDeadlines` on a real event loop."""

from __future__ import annotations

import asyncio
import unittest

from pyworker.http.timers import FixedDeadlines

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

    async def test_keys_expire_in_order_each_its_delay_after_it_was_added(self) -> None:
        added = {}
        for key in ("a", "b", "c"):
            added[key] = self.loop.time()
            self.deadlines.add(key)
            await asyncio.sleep(0.03)
        await asyncio.sleep(DELAY + 0.05)
        self.assertEqual([key for key, _ in self.expired], ["a", "b", "c"])
        for key, when in self.expired:
            self.assertGreaterEqual(when - added[key], DELAY - 0.005, key)
            self.assertLess(when - added[key], DELAY + 0.05, key)
        self.assertEqual(len(self.deadlines), 0)

    async def test_discarded_keys_never_expire(self) -> None:
        for key in ("a", "b", "c"):
            self.deadlines.add(key)
        self.deadlines.discard("a")
        self.deadlines.discard("c")
        self.deadlines.discard("never added")
        await asyncio.sleep(DELAY + 0.05)
        self.assertEqual([key for key, _ in self.expired], ["b"])

    async def test_a_key_added_after_the_timer_fired_on_nothing_still_expires(self) -> None:
        self.deadlines.add("a")
        self.deadlines.discard("a")
        await asyncio.sleep(DELAY + 0.02)  # the timer fired with nothing due: it stops
        self.deadlines.add("b")
        await asyncio.sleep(DELAY + 0.05)
        self.assertEqual([key for key, _ in self.expired], ["b"])

    async def test_one_failing_callback_leaves_the_others_expiring(self) -> None:
        for key in ("bad", "after"):
            self.deadlines.add(key)
        with self.assertLogs("pyworker.http", "ERROR"):
            await asyncio.sleep(DELAY + 0.05)
        self.assertEqual([key for key, _ in self.expired], ["bad", "after"])

    async def test_close_drops_every_deadline(self) -> None:
        self.deadlines.add("a")
        self.deadlines.close()
        await asyncio.sleep(DELAY + 0.05)
        self.assertEqual(self.expired, [])
        self.assertEqual(len(self.deadlines), 0)


if __name__ == "__main__":
    unittest.main()
