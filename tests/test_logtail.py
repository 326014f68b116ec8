"""The model log tailer: appends, partial lines, rotation, truncation, bad UTF-8."""

from __future__ import annotations

import asyncio
import os
import tempfile
import unittest
from collections.abc import AsyncGenerator

from pyworker.logtail import MAX_LINE_BYTES, LogTailer


class Tailing(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "model.log")
        self.tailer = LogTailer(self.path, poll_interval_s=0.01)
        self.lines: AsyncGenerator[str, None] = self.tailer.lines()

    async def asyncTearDown(self) -> None:
        await self.lines.aclose()
        self.dir.cleanup()

    def append(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)

    async def next_lines(self, count: int) -> list[str]:
        return [await asyncio.wait_for(self.lines.__anext__(), 2) for _ in range(count)]

    async def test_waits_for_the_file_then_reads_it_from_the_start(self) -> None:
        waiting = asyncio.ensure_future(self.next_lines(2))
        await asyncio.sleep(0.05)
        self.assertFalse(waiting.done())
        self.append(b"one\ntwo\n")
        self.assertEqual(await waiting, ["one", "two"])

    async def test_follows_appends_and_joins_partial_lines(self) -> None:
        self.append(b"first\nsec")
        self.assertEqual(await self.next_lines(1), ["first"])
        waiting = asyncio.ensure_future(self.next_lines(1))
        await asyncio.sleep(0.05)
        self.assertFalse(waiting.done(), "a partial line is not a line yet")
        self.append(b"ond\r\n")
        self.assertEqual(await waiting, ["second"])

    async def test_rotation_to_a_new_file_is_followed(self) -> None:
        self.append(b"old 1\n")
        self.assertEqual(await self.next_lines(1), ["old 1"])
        os.rename(self.path, self.path + ".1")
        self.append(b"new 1\nnew 2\n")
        self.assertEqual(await self.next_lines(2), ["new 1", "new 2"])

    async def test_truncation_in_place_restarts_from_the_top(self) -> None:
        self.append(b"a long first line before truncation\n")
        self.assertEqual(await self.next_lines(1), ["a long first line before truncation"])
        with open(self.path, "wb") as f:  # copy-truncate: same inode, size 0
            f.write(b"after\n")
        self.assertEqual(await self.next_lines(1), ["after"])

    async def test_invalid_utf8_is_replaced_not_fatal(self) -> None:
        self.append(b"caf\xc3\xa9 \xff\xfe ok\n")
        self.assertEqual(await self.next_lines(1), ["café \ufffd\ufffd ok"])

    async def test_a_line_without_end_is_cut_at_the_limit(self) -> None:
        self.append(b"x" * (MAX_LINE_BYTES + 10) + b"\nnext\n")
        first, second = await self.next_lines(2)
        self.assertEqual(len(first), MAX_LINE_BYTES)
        self.assertIn(second, ("x" * 10, "next"))


if __name__ == "__main__":
    unittest.main()
