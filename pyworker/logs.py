"""The worker's log: text or one JSON object a line, and the access line of each request.

Access lines (`pyworker.access`, INFO) carry what an operator needs to follow
a request (route, status, outcome, request_idx, workload, queue wait, model
time, bytes) and never what a client sent: no signature, token or prompt.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

access_log = logging.getLogger("pyworker.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, an access line's fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


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


def log_access(fields: dict[str, Any]) -> None:
    """One request's access line; `fields` become the JSON keys (and `key=value` pairs in text)."""
    access_log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra={"fields": fields})
