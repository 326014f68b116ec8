"""Ports on 127.0.0.1 for development tools, benchmarks and tests."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Coroutine
from typing import Any


def free_port() -> int:
    """A port nothing listens on right now (another process may take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    """Return once something accepts connections on `port`.

    Raises RuntimeError if `proc` exits first and TimeoutError after `timeout_s`.
    """
    name = what or f"the process on port {port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{name} did not listen on port {port} within {timeout_s:g} s")


def run_server(name: str, host: str, port: int, main: Coroutine[Any, Any, None]) -> None:
    """Run a development server until Ctrl-C; a port already taken is one line, not a traceback."""
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise SystemExit(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
