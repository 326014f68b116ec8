"""Helpers for tests: free ports, raw sockets, child processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyworker.dev.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent

# The fields of a /worker_status/ report (PROTOCOL.md § Reports), "recieved" as on the wire.
STATUS_FIELDS = (
    "id",
    "mtoken",
    "version",
    "loadtime",
    "cur_load",
    "new_load",
    "rej_load",
    "cur_perf",
    "max_perf",
    "error_msg",
    "num_requests_working",
    "num_requests_recieved",
    "working_request_idxs",
    "additional_disk_usage",
    "disk_usage",
    "cur_capacity",
    "max_capacity",
    "url",
)

AUTH = {"cost": "1", "endpoint": "test", "reqnum": 1, "request_idx": 1, "signature": "x", "url": "http://w"}


CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyworker"


def wheelhouse() -> Path:
    """The runtime's wheels (requirements.txt), fetched once into the cache, for pip runs that need no index."""
    requirements = (ROOT / "requirements.txt").read_bytes()
    folder = CACHE / f"wheelhouse-{hashlib.sha256(requirements).hexdigest()[:12]}"
    if not any(folder.glob("*.whl")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(folder),
                "-r",
                str(ROOT / "requirements.txt"),
            ],
            check=True,
        )
    return folder


def body(prompt: str = "hello world", request_idx: int = 1, **payload: Any) -> bytes:
    auth = dict(AUTH, request_idx=request_idx)
    return json.dumps({"auth_data": auth, "payload": {"prompt": prompt, **payload}}).encode()


def post_bytes(path: str, data: bytes, host: str = "127.0.0.1", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


class Child:
    """A subprocess whose output goes to a temporary file, killed on stop()."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.out = tempfile.NamedTemporaryFile(prefix="pyworker-test-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=str(ROOT), env=full_env, stdout=self.out, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return Path(self.out.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        os.unlink(self.out.name)


class ModelProcess(Child):
    """The stand-in model server on a free port, writing its log to a temp file."""

    def __init__(self, *extra: str, wait: bool = True) -> None:
        self.port = free_port()
        fd, self.log = tempfile.mkstemp(prefix="pyworker-model-", suffix=".log")
        os.close(fd)
        super().__init__(["-m", "pyworker.dev.model", "--port", str(self.port), "--log", self.log, *extra])
        if wait:
            wait_port(self.port, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        super().stop()
        if os.path.exists(self.log):
            os.unlink(self.log)


class AutoscalerProcess(Child):
    """The stand-in autoscaler on a port (a free one unless given), with a key in `key_path`."""

    def __init__(self, key_path: str, port: int | None = None, *extra: str) -> None:
        self.port = port or free_port()
        self.key_path = key_path
        super().__init__(["-m", "pyworker.dev.autoscaler", "--port", str(self.port), "--key", key_path, *extra])
        wait_port(self.port, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as res:
            return json.loads(res.read())

    def route(self, cost: float = 10, endpoint: str = "test") -> dict[str, Any]:
        data = json.dumps({"endpoint": endpoint, "api_key": "k", "cost": cost}).encode()
        req = urllib.request.Request(self.url + "/route/", data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as res:
            auth: dict[str, Any] = json.loads(res.read())
            return auth

    def worker(self, worker_id: int) -> dict[str, Any] | None:
        for status in self.get("/status")["workers"]:
            if status["id"] == worker_id:
                found: dict[str, Any] = status
                return found
        return None


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true; that value is returned."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def until(done: Callable[[], Any], what: str = "condition", timeout_s: float = 5.0) -> None:
    """`wait_for` inside an event loop: poll `done()` without blocking the loop.

    For what the loop itself does in its own time (a busy machine runs
    timers and callbacks late, never early).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.002)


class WorkerProcess(Child):
    """`python -m pyworker MODULE` on a free port (signatures off, no reports, unless `env` says)."""

    def __init__(
        self,
        module: str,
        model_url: str,
        model_log: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        base = {
            "WORKER_PORT": str(self.port),
            "WORKER_HOST": "127.0.0.1",
            "MODEL_SERVER_URL": model_url,
            "MODEL_LOG": model_log,
            "UNSECURED": "true",
            "REPORT_ADDR": "off",
            "PYWORKER_LOG_LEVEL": "WARNING",
            # No side listeners on WORKER_PORT + 1 and + 2, ports another test may own.
            "WORKER_HTTP_PORT": "off",
            "PYWORKER_METRICS_PORT": "off",
        }
        base.update(env or {})
        super().__init__(["-m", "pyworker", module], base)
        if wait:
            wait_port(self.port, proc=self.proc)

    @staticmethod
    def reporting_to(autoscaler: AutoscalerProcess, worker_id: int, state_dir: str, port: int) -> dict[str, str]:
        """The environment of a worker in production: signatures on, reports to `autoscaler`."""
        return {
            "WORKER_PORT": str(port),
            "UNSECURED": "false",
            "REPORT_ADDR": autoscaler.url,
            "CONTAINER_ID": str(worker_id),
            "PUBLIC_IPADDR": "127.0.0.1",
            f"VAST_TCP_PORT_{port}": str(port),
            "PYWORKER_STATE_DIR": state_dir,
            "PYWORKER_LOG_LEVEL": "INFO",
        }


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a raw stream (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if status < 200:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, headers, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, headers, await reader.read()


def http_call(
    port: int, method: str, path: str, data: bytes | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library's client: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


def post_json(port: int, path: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
    """POST `body` as JSON; the answer decoded when it is JSON, else its bytes."""
    status, _, raw = http_call(port, "POST", path, json.dumps(body).encode(), timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@dataclass
class ReportingStack:
    """A stand-in autoscaler, a stand-in model and a worker reporting to the autoscaler."""

    tmp: str
    autoscaler: AutoscalerProcess
    model: ModelProcess
    worker: WorkerProcess
    env: dict[str, str]

    def restart_worker(self, module: str = "workers.hello_world") -> WorkerProcess:
        self.worker.stop()
        self.worker = WorkerProcess(module, self.model.url, self.model.log, self.env, port=self.worker.port)
        return self.worker

    def status(self) -> dict[str, Any] | None:
        return self.autoscaler.worker(int(self.env["CONTAINER_ID"]))


@contextlib.contextmanager
def reporting_stack(
    worker_id: int,
    *model_args: str,
    env: dict[str, str] | None = None,
    module: str = "workers.hello_world",
    wait_model: bool = True,
) -> Iterator[ReportingStack]:
    """The three processes, with signatures on; all stopped at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        autoscaler = AutoscalerProcess(os.path.join(tmp, "key.json"))
        model = ModelProcess(*model_args, wait=wait_model)
        port = free_port()
        full = WorkerProcess.reporting_to(autoscaler, worker_id, tmp, port)
        full.update(env or {})
        stack = ReportingStack(
            tmp, autoscaler, model, WorkerProcess(module, model.url, model.log, full, port=port), full
        )
        try:
            yield stack
        finally:
            for child in (stack.worker, stack.model, stack.autoscaler):
                child.stop()
