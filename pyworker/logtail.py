"""Following the model server's log file, as `tail -F` does.

The file may not exist yet, may be rotated (a new file, a new inode, under
the same name) or truncated in place (copy-truncate). Lines may arrive in
pieces and need not be valid UTF-8. All file I/O runs in a worker thread so
a slow disk never stalls the event loop; between polls the tailer sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass

log = logging.getLogger("pyworker.logtail")

POLL_INTERVAL_S = 0.25
READ_CHUNK_BYTES = 64 * 1024
# A "line" longer than this is cut: a log with no newlines must not fill memory.
MAX_LINE_BYTES = 64 * 1024


@dataclass
class _Position:
    inode: int = -1
    device: int = -1
    offset: int = 0


class LogTailer:
    """Yields complete lines appended to `path`, from its start, forever."""

    def __init__(self, path: str, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.path = path
        self.poll_interval_s = poll_interval_s
        self._pos = _Position()
        self._partial = b""
        self._waiting_logged = False

    def _read_new(self) -> list[bytes]:
        """Blocking: what was appended since the last call, as raw complete lines."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._waiting_logged:
                log.info("waiting for the model log %s to appear", self.path)
                self._waiting_logged = True
            return []
        pos = self._pos
        if (st.st_ino, st.st_dev) != (pos.inode, pos.device):
            if pos.inode != -1:
                log.info("model log %s was replaced; reading the new file from its start", self.path)
            self._pos = pos = _Position(st.st_ino, st.st_dev, 0)
            self._partial = b""
        elif st.st_size < pos.offset:
            log.info("model log %s was truncated; reading it again from its start", self.path)
            pos.offset = 0
            self._partial = b""
        if st.st_size == pos.offset:
            return []
        lines: list[bytes] = []
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_ino != pos.inode:
                    return []  # replaced between stat and open: next poll sees the new one
                f.seek(pos.offset)
                while True:
                    chunk = f.read(READ_CHUNK_BYTES)
                    if not chunk:
                        break
                    pos.offset += len(chunk)
                    lines.extend(self._split(chunk))
        except FileNotFoundError:
            return lines
        return lines

    def _split(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk
        *complete, rest = data.split(b"\n")
        complete = [line[:MAX_LINE_BYTES] for line in complete]
        if len(rest) > MAX_LINE_BYTES:
            complete.append(rest[:MAX_LINE_BYTES])
            rest = b""
        self._partial = rest
        return complete

    async def lines(self) -> AsyncGenerator[str, None]:
        """Each new line, decoded (bad UTF-8 replaced), without its line ending."""
        while True:
            raw_lines = await asyncio.to_thread(self._read_new)
            for raw in raw_lines:
                yield raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not raw_lines:
                await asyncio.sleep(self.poll_interval_s)
