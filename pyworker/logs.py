"""The worker's log: text or one JSON object a line, and the access line of each request.

Access lines (`pyworker.access`, INFO) carry what an operator needs to follow
a request (route, status, outcome, request_idx, workload, queue wait, model
time, bytes) and never what a client sent: no signature, token or prompt.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from typing import Any, TextIO

access_log = logging.getLogger("pyworker.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


# JSON lines' time: UTC, to the millisecond (the "Z" and milliseconds follow).
JSON_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def json_line(stamp: str, level: str, logger: str, message: str, fields: Any = None, exception: str = "") -> str:
    """One JSON log line: time, level, logger, message, an access line's fields, and any traceback."""
    entry: dict[str, Any] = {"time": stamp, "level": level, "logger": logger, "message": message}
    if isinstance(fields, dict):
        entry.update(fields)
    if exception:
        entry["exception"] = exception
    return json.dumps(entry, separators=(",", ":"), default=str)


class JsonFormatter(logging.Formatter):
    """Log records as `json_line`s."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime(JSON_TIME_FORMAT, time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        exception = self.formatException(record.exc_info) if record.exc_info else ""
        return json_line(
            stamp, record.levelname, record.name, record.getMessage(), getattr(record, "fields", None), exception
        )


class AccessWriter:
    """Writes access lines without the logging machinery: the same text and JSON
    lines the formatters make, buffered and written once per event-loop turn.

    A request's access line through `logging` costs several times its
    formatting once the CPU's caches are cold for that code; here it is one
    string built and, under load, one write for all lines of a loop turn.
    Lines are written under the handler's lock, so no line is cut by another.
    """

    def __init__(self, handler: logging.StreamHandler[TextIO], fmt: str) -> None:
        self.handler = handler
        self.json = fmt == "json"
        self._pending: list[str] = []
        self._second = -1
        self._stamp = ""
        atexit.register(self.flush)

    def _time(self, now: float) -> str:
        """`now` as the formatters write it (logging's own formats for text)."""
        second = int(now)
        if second != self._second:
            self._second = second
            if self.json:
                self._stamp = time.strftime(JSON_TIME_FORMAT, time.gmtime(second))
            else:
                self._stamp = time.strftime(logging.Formatter.default_time_format, time.localtime(second))
        ms = int((now - second) * 1000)
        if self.json:
            return f"{self._stamp}.{ms:03d}Z"
        return f"{self._stamp},{ms:03d}"  # logging's default_msec_format

    def write(self, message: str, fields: dict[str, Any]) -> None:
        stamp = self._time(time.time())
        if self.json:
            line = json_line(stamp, "INFO", access_log.name, message, fields)
        else:
            line = TEXT_FORMAT % {"asctime": stamp, "levelname": "INFO", "name": access_log.name, "message": message}
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write at once
                self.flush()

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.flush()
        except (OSError, ValueError):  # stderr closed: nowhere to write
            pass
        finally:
            handler.release()


_writer: AccessWriter | None = None


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at `level`, as text lines or (`fmt="json"`) JSON lines."""
    # Neither format prints the caller's file and line, thread or process:
    # not looking them up for every record (the logging HOWTO's "Optimization")
    # makes an access line about half as dear.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))
    global _writer
    if _writer is not None:
        _writer.flush()
    _writer = AccessWriter(handler, fmt)


def log_access(fields: dict[str, Any]) -> None:
    """One request's access line; `fields` become the JSON keys (and `key=value` pairs in text).

    Through the `AccessWriter` when `setup_logging` made the log and nobody
    changed it since; through `logging` otherwise (as a library in a program
    with its own logging).
    """
    message = " ".join(f"{k}={v}" for k, v in fields.items())
    writer = _writer
    if (
        writer is not None
        and not access_log.handlers
        and access_log.propagate
        and logging.getLogger().handlers == [writer.handler]
    ):
        writer.write(message, fields)
    else:
        access_log.info(message, extra={"fields": fields})
