"""Process-wide settings a server on a public port needs, made once at start."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import resource
import signal

log = logging.getLogger("pyworker")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks from this size up are mapped on their own, so freeing one returns it
# to the system at once. Above asyncio's 256 KiB read buffer, which is
# allocated on every read: mapping that each time costs two system calls.
# Fixing it also fixes the heap's trim threshold (128 KiB by default), so
# that is raised too: else each such buffer freed at the heap's top would
# shrink the heap, and the next read grow it again.
TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024
MMAP_THRESHOLD_BYTES = 1024 * 1024
# File descriptors kept beyond the client connection limit: the model
# server's connections, the log file, reports.
SPARE_FDS = 256


def return_memory_when_freed() -> bool:
    """Keep a large request's memory from outliving it; False where malloc is not glibc's.

    By default glibc raises its mmap threshold each time a large block is
    freed (up to 32 MB), so the next large body is carved from the heap and
    stays in the process after the request. A fixed threshold turns that
    off. The per-thread arenas that tokenizing in a thread would create
    are limited to two for the same reason.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        and bool(mallopt(_M_ARENA_MAX, 2))
    )


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set `stop` on SIGTERM or SIGINT (from the main thread; elsewhere the caller sets it)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit so `max_connections` clients fit, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning(
                "open files are limited to %d: PYWORKER_MAX_CONNECTIONS=%d cannot all be served",
                new,
                max_connections,
            )
