#!/usr/bin/env python3
"""Benchmark: pyworker beside its peers, every row measured for every subject in the same round.

    python scripts/bench.py                 # direct and pyworker
    python scripts/bench.py --peers         # + nginx (if installed) and the reference PyWorker
    python scripts/bench.py --peers --rounds 3 --seconds 3

Subjects, all in front of the same stand-in models with the same 250-word prompt:
- direct: the stand-in model itself (what the others add to);
- nginx: a plain reverse proxy (keep-alive upstream, no buffering), when `nginx` is on PATH;
- reference: Vast.ai's PyWorker (`vastai==1.9.1`, installed by this script into
  its own venv under ~/.cache/pyworker), configured for the same two routes
  and a word-count workload;
- pyworker: the hello_world worker.
Both workers check every signature and report to a stand-in autoscaler, as
in production. With two cores, the proxies run pinned to core 1, one at a
time under load; the models, the autoscaler and this load generator run on
core 0. Ratios are computed within a round; absolute figures move between
runs and machines, ratios much less.

Rows: requests/s at concurrency 64 and the latency added at concurrency 1
(/generate, 16-token answer); time to first byte added to a stream of 300
events 1 ms apart, and to one of 300 events written back to back (a burst),
and the body throughput of 16 such bursts at once, the model sending 20
events in each write (as a batching server flushes them; `--burst-flush`);
RSS when ready (at the start of a round, settled) and after those rows'
load; and the time from a (re)start to the first proxied answer (which
leaves the next round a fresh worker). The latency rows take the subjects
in turn (0.25 s blocks at concurrency 1; for first bytes one stream each,
in an order shuffled each time), so that the machine's moods fall on all
of them alike. The load generator reads first bytes at real-time priority
when it may (root): on core 0 it would otherwise wait out the model's time
slice (`--no-priority` measures that way; see `load_generator_first`).

`--floor` adds scripts/floor_proxy.py, which passes bytes through on
asyncio and does nothing else: what any proxy written on asyncio costs here.
`--baseline DIR` adds the hello_world worker of another checkout (for
instance `git worktree add /tmp/base HEAD~3`), to measure a change side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyworker.auth.signatures import Scheme, signed_message  # noqa: E402
from pyworker.dev.ports import free_port, wait_port  # noqa: E402
from pyworker.dev.rsa_keys import RSAKeyPair  # noqa: E402
from pyworker.loadtest.stats import percentile  # noqa: E402
from pyworker.tokens import TokenCounter  # noqa: E402
from pyworker.words import random_words  # noqa: E402

REFERENCE_VERSION = "1.9.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyworker"
LOADED_LINE = "infer server has started"
STREAM_TOKENS = 300
# In the burst-throughput row the model sends its events this many at a time
# (each its own chunk), as a batching server flushes them: one send per event
# would make the model, not the proxies, the limit there.
BURST_FLUSH = 20
# The first-byte rows run the load generator at this real-time priority (see
# `load_generator_first`); 1 is the lowest, above every ordinary process.
FIRST_BYTE_PRIORITY = 1
# A worker's start-up benchmark takes a second or two, and its Unicode tables
# are built 5 s after the tokenizer loads: RSS when ready counts both.
SETTLE_S = 6.0

# The reference PyWorker's configuration: our own script against its public API.
REFERENCE_WORKER = """
import os
from vastai.serverless.server.worker import BenchmarkConfig, HandlerConfig, LogActionConfig, Worker, WorkerConfig

PROMPT = " ".join(["word"] * 250)
# Its benchmark underrates the stand-in (it averages rounds), and at concurrency 64
# it would answer 429: the rows measure proxying, not admission.
QUEUE = 1e9


def words(payload):
    return float(len(str(payload.get("prompt", "")).split()))


benchmark = BenchmarkConfig(generator=lambda: {"prompt": PROMPT, "max_response_tokens": 16}, runs=3, concurrency=10)
Worker(WorkerConfig(
    model_server_url="http://127.0.0.1",
    model_server_port=int(os.environ["BENCH_MODEL_PORT"]),
    model_log_file=os.environ["MODEL_LOG"],
    handlers=[
        HandlerConfig(route="/generate", allow_parallel_requests=True, benchmark_config=benchmark, workload_calculator=words,
                      max_queue_time=QUEUE),
        HandlerConfig(route="/generate_stream", allow_parallel_requests=True, workload_calculator=words, max_queue_time=QUEUE),
    ],
    log_action_config=LogActionConfig(on_load=["infer server has started"]),
)).run()
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    upstream fast {{ server 127.0.0.1:{fast}; keepalive 128; }}
    upstream paced {{ server 127.0.0.1:{paced}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{fast_listen};
        location / {{ proxy_pass http://fast; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}
    server {{
        listen 127.0.0.1:{paced_listen};
        location / {{ proxy_pass http://paced; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}
}}
"""


# -- measuring -----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def http_post(path: str, port: int, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _LoadConnection(asyncio.Protocol):
    """Sends one request, waits for the whole Content-Length response, repeats."""

    def __init__(
        self, request: bytes, stop_at: float, latencies: list[float], done: asyncio.Future[None], failures: list[bytes]
    ) -> None:
        self.failures = failures
        self.request = request
        self.stop_at = stop_at
        self.latencies = latencies
        self.done = done
        self.buf = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        i = head.find(b"content-length:")
        if i < 0:
            raise RuntimeError(f"no content-length in {head!r}")
        line_end = head.find(b"\r\n", i)
        length = int(head[i + 15 : line_end if line_end > 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        now = time.perf_counter()
        if head.startswith(b"http/1.1 200"):
            self.latencies.append(now - self.sent_at)
        else:
            self.failures.append(head.split(b"\r\n", 1)[0])
        self.buf = self.buf[end + 4 + length :]
        if now < self.stop_at:
            self._send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _round(
    port: int,
    request: bytes,
    concurrency: int,
    stop_at: float,
    latencies: list[float],
    failures: list[bytes] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    dones = []
    failed: list[bytes] = [] if failures is None else failures
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        make = functools.partial(_LoadConnection, request, stop_at, latencies, done, failed)
        await loop.create_connection(make, "127.0.0.1", port)
        dones.append(done)
    await asyncio.gather(*dones)


async def closed_loop(port: int, request: bytes, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """`concurrency` keep-alive connections, each sending back to back for `seconds`: (requests/s, latencies)."""
    await _round(port, request, concurrency, time.perf_counter() + 0.3, [])  # warm-up, not measured
    latencies: list[float] = []
    failures: list[bytes] = []
    start = time.perf_counter()
    await _round(port, request, concurrency, start + seconds, latencies, failures)
    if failures:
        print(f"  port {port}: {len(failures)} answers were not 200, e.g. {failures[0]!r}; not counted")
    return len(latencies) / (time.perf_counter() - start), latencies


async def interleaved_latencies(targets: list[tuple[int, bytes]], seconds: float) -> list[list[float]]:
    """Round trips at concurrency 1, each target on its own keep-alive connection, the
    targets taken in turn for 0.25 s each until every one had `seconds`: whatever the
    machine does meanwhile falls on all alike, and each is measured warm."""

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    conns = [await connect(port) for port, _ in targets]
    latencies: list[list[float]] = [[] for _ in targets]
    for block in range(int(seconds / 0.25) + 1):
        for i, (port, request) in enumerate(targets):
            reader, writer = conns[i]
            stop_at = time.perf_counter() + 0.25
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if block and head.startswith(b"http/1.1 200"):  # the first block warms up
                    latencies[i].append(time.perf_counter() - start)
                if b"connection: close" in head:  # nginx's keepalive_requests
                    writer.close()
                    reader, writer = conns[i] = await connect(port)
    for _, writer in conns:
        writer.close()
    return latencies


async def read_stream(reader: asyncio.StreamReader) -> int:
    """Read one chunked event-stream response to its end; the size of its decoded body."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b"chunked" not in head.lower():
        raise RuntimeError(f"not a chunked 200: {head[:300]!r}")
    size = 0
    while True:
        n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if n == 0:
            await reader.readuntil(b"\r\n")
            return size
        await reader.readexactly(n + 2)
        size += n


async def first_byte(port: int, request: bytes, timeout_s: float = 30.0) -> float:
    """Seconds from sending `request` (on a fresh connection) to the stream's first event."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def exchange() -> float:
        start = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            # Anything else has no events to wait for: say so rather than hang.
            raise RuntimeError(f"port {port}: not a stream: {head[:200]!r}")
        await reader.readuntil(b"data:")
        first = time.perf_counter() - start
        await reader.readuntil(b"data: [DONE]")
        return first

    try:
        return await asyncio.wait_for(exchange(), timeout_s)
    except asyncio.TimeoutError:
        raise RuntimeError(f"port {port}: no whole stream within {timeout_s:g} s") from None
    finally:
        writer.close()


async def read_to_last_chunk(reader: asyncio.StreamReader) -> None:
    """Read one chunked response raw until its last chunk, decoding nothing.

    The load generator shares a core with the model: decoding every chunk
    in Python would make it the limit, and favour proxies that merge chunks.
    """
    tail = b""
    while not tail.endswith(b"\r\n0\r\n\r\n"):
        data = await reader.read(1 << 16)
        if not data:
            raise RuntimeError("connection closed mid-stream")
        tail = (tail + data)[-16:]


async def stream_throughput(port: int, request: bytes, streams: int, seconds: float) -> float:
    """MB/s of stream bodies with `streams` keep-alive connections streaming back to back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    body_size = await read_stream(reader)  # every answer is the same stream of events
    writer.close()
    stop_at = time.perf_counter() + seconds
    done = 0

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            writer.write(request)
            await read_to_last_chunk(reader)
            done += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    return done * body_size / (time.perf_counter() - start) / 1e6


def ms(values: list[float], q: float) -> float:
    return (percentile(values, q) or 0.0) * 1000


# -- pyworker alone ------------------------------------------------------------------


async def ping_lag_during(port: int, request: bytes) -> tuple[float, float, float]:
    """Longest /ping round trip while `request` (a huge prompt) is handled, vs before.

    Shows whether counting the prompt's tokens held the worker's event loop.
    """

    async def pings(until: asyncio.Future[None] | None, count: int = 0) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        worst = 0.0
        n = 0
        while (until is not None and not until.done()) or (until is None and n < count):
            start = time.perf_counter()
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            await reader.readuntil(b"pong")
            worst = max(worst, time.perf_counter() - start)
            n += 1
            await asyncio.sleep(0.001)
        writer.close()
        return worst * 1000

    idle_worst = await pings(None, 200)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pinger = asyncio.create_task(pings(done))
    start = time.perf_counter()
    writer.write(request)
    await reader.readuntil(b"\r\n\r\n")
    elapsed = (time.perf_counter() - start) * 1000
    done.set_result(None)
    busy_worst = await pinger
    writer.close()
    return idle_worst, busy_worst, elapsed


def count_cost_ms() -> float:
    counter = TokenCounter.default()
    rng = random.Random(3)
    prompts = [random_words(250, rng) for _ in range(50)]
    for p in prompts:
        counter.count(p)  # the cache is warm as it is on a busy worker
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 1.0:
        for p in prompts:
            counter.count(p)
        n += len(prompts)
    per = (time.perf_counter() - start) / n * 1000
    cold = TokenCounter.gpt2()
    start = time.perf_counter()
    for p in prompts[:10]:
        cold.count(p)
    print(f"  first sight of a 250-word prompt (cold cache): {(time.perf_counter() - start) / 10 * 1000:.3f} ms")
    encode_start = time.perf_counter()
    for p in prompts[:20]:
        counter.encode_count(p)
    print(f"  tokenizers' own encode:                        {(time.perf_counter() - encode_start) / 20 * 1000:.3f} ms")
    return per


def huge_prompt_section(worker_port: int, auth: dict[str, object]) -> None:
    """How long a 32k-token prompt of unseen words holds the worker's event loop."""
    print("\na 32k-token prompt of words the worker has not seen (counted off the event loop)")
    words = random_words(25_000, random.Random(5)) + " " + " ".join(f"w{i}x" for i in range(4000))
    huge = {"prompt": words, "max_response_tokens": 1}
    huge_req = http_post("/generate", worker_port, json.dumps({"auth_data": auth, "payload": huge}).encode())
    idle_worst, busy_worst, huge_ms = asyncio.run(ping_lag_during(worker_port, huge_req))
    print(f"  answered in {huge_ms:.1f} ms; longest /ping meanwhile {busy_worst:.2f} ms (idle: {idle_worst:.2f} ms)")


# -- the processes -------------------------------------------------------------------


@contextlib.contextmanager
def load_generator_first(enabled: bool) -> Iterator[None]:
    """Inside: this process (the load generator) runs before the models on core 0.

    The first-byte rows measure the time a proxy adds. On two cores the
    client shares core 0 with the model, and a model writing a burst holds
    that core: a first byte that reaches the client a little after the
    burst began waits for the model's time slice to end (the kernel then
    does not let the waking client preempt it), while one that comes very
    soon does not. That adds milliseconds that belong to neither the proxy
    nor the model, and only past a threshold, so it magnifies small
    differences. At real-time priority the client runs as soon as its byte
    arrives, as a client on its own machine would. Every subject, direct
    included, is measured the same way.
    """
    if not enabled:
        yield
        return
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIRST_BYTE_PRIORITY))
    try:
        yield
    finally:
        os.sched_setscheduler(0, before[0], before[1])


def may_run_first() -> bool:
    """True when this process may take real-time priority (root, or CAP_SYS_NICE)."""
    try:
        with load_generator_first(True):
            return True
    except (PermissionError, AttributeError):  # AttributeError: no sched_setscheduler (not Linux)
        return False


class Stack:
    """The processes of a run: the autoscaler, the models, and the subjects in front of them."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.tmp = Path(tempfile.mkdtemp(prefix="pyworker-bench-"))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []
        if pin:
            os.sched_setaffinity(0, {0})
        self.scaler_port = free_port()
        key_path = self.tmp / "key.json"
        self.spawn(
            0,
            [sys.executable, "-m", "pyworker.dev.autoscaler", "--port", str(self.scaler_port), "--key", str(key_path)],
        )
        wait_port(self.scaler_port, 60)
        self.key = RSAKeyPair.load(key_path)
        self.fast_model = self._model("fast")
        self.paced_model = self._model("paced", "--token-delay", "0.001")
        self._reqnum = 0

    def _model(self, name: str, *args: str) -> int:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "pyworker.dev.model",
            "--port",
            str(port),
            "--log",
            str(self.tmp / f"{name}-model.log"),
        ]
        self.spawn(0, [*cmd, *args])
        wait_port(port, 30)
        return port

    def spawn(
        self, core: int, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        taskset = ["taskset", "-c", str(core)] if self.pin else []
        proc = subprocess.Popen(
            [*taskset, *args], env=env or self.env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    def events_per_write(self, n: int) -> None:
        """How many of a stream's events the fast model sends in one write from now on."""
        body = json.dumps({"events_per_write": n}).encode()
        url = f"http://127.0.0.1:{self.fast_model}/admin/events_per_write"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as res:
            res.read()

    def auth(self, port: int) -> dict[str, object]:
        """A signed `auth_data` for the worker on `port`, as the autoscaler's /route/ makes it."""
        self._reqnum += 1
        auth: dict[str, object] = {
            "cost": 250,
            "endpoint": "bench",
            "reqnum": self._reqnum,
            "request_idx": self._reqnum,
            "url": f"http://127.0.0.1:{port}",
        }
        auth["signature"] = self.key.sign_b64(signed_message(auth, Scheme.URL))
        return auth

    def worker_env(self, port: int, model_port: int, log: Path, state: Path) -> dict[str, str]:
        return {
            **self.env,
            "WORKER_PORT": str(port),
            "WORKER_HOST": "127.0.0.1",
            "WORKER_HTTP_PORT": str(free_port()),
            # Not WORKER_PORT + 2: free_port() may have given that port to another subject.
            "PYWORKER_METRICS_PORT": "off",
            "MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
            "BENCH_MODEL_PORT": str(model_port),
            "MODEL_LOG": str(log),
            "REPORT_ADDR": f"http://127.0.0.1:{self.scaler_port}",
            "CONTAINER_ID": str(port),
            "PUBLIC_IPADDR": "127.0.0.1",
            f"VAST_TCP_PORT_{port}": str(port),
            "UNSECURED": "false",
            "PYWORKER_STATE_DIR": str(state),
            "PYWORKER_LOG_LEVEL": "WARNING",
        }

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class Subject:
    """One thing under test: a port for each model, and how to address it."""

    name: str
    fast: int
    paced: int
    signed: bool  # a worker: the body carries auth_data and payload
    pid: Callable[[], list[int]] = lambda: []
    restart: Callable[[], None] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def request(self, stack: Stack, path: str, port: int, payload: dict[str, object]) -> bytes:
        body = {"auth_data": stack.auth(port), "payload": payload} if self.signed else payload
        return http_post(path, port, json.dumps(body).encode())


def wait_answer(port: int, request: bytes, timeout_s: float = 60.0) -> float:
    """Poll with `request` until the answer is 200; the seconds it took (every 5 ms)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            latencies: list[float] = []
            asyncio.run(_round(port, request, 1, 0.0, latencies))
            if latencies:
                return time.perf_counter() - start
        except (OSError, RuntimeError):
            pass
        time.sleep(0.005)
    raise TimeoutError(f"no 200 from port {port} in {timeout_s:g} s")


def compile_tree(root: Path) -> None:
    """Write the bytecode of a checkout's worker, as an installed package has it.

    Where PYTHONDONTWRITEBYTECODE is set, a checkout that never had it
    compiles every module at each start: 30-60 ms more on the start row (a
    fresh worktree as `--baseline` read 0.13-0.23 s against 0.09-0.16 for
    the very same code with bytecode).
    """
    for package in ("pyworker", "workers"):
        compileall.compile_dir(root / package, quiet=1)


class WorkerPair:
    """A worker in front of each model (the fast one restartable), pinned to core 1."""

    def __init__(
        self,
        stack: Stack,
        name: str,
        command: list[str],
        cwd_state: bool,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.stack = stack
        self.cwd = cwd
        self.name = name
        self.extra_env = env or {}
        self.command = command
        self.cwd_state = cwd_state  # the reference keeps .has_benchmark in its working folder
        self.ports = {"fast": free_port(), "paced": free_port()}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for which, model in (("fast", stack.fast_model), ("paced", stack.paced_model)):
            self._start(which, model)

    def _paths(self, which: str) -> tuple[Path, Path]:
        state = self.stack.tmp / f"{self.name}-{which}-state"
        state.mkdir(exist_ok=True)
        return self.stack.tmp / f"{self.name}-{which}.log", state

    def _start(self, which: str, model: int) -> None:
        log, state = self._paths(which)
        env = {**self.stack.worker_env(self.ports[which], model, log, state), **self.extra_env}
        self.procs[which] = self.stack.spawn(1, self.command, env, cwd=state if self.cwd_state else self.cwd)

    def mark_loaded(self) -> None:
        for which in self.ports:
            with open(self._paths(which)[0], "a") as f:
                f.write(LOADED_LINE + "\n")

    def restart_fast(self) -> None:
        proc = self.procs["fast"]
        proc.terminate()
        proc.wait(10)
        self._start("fast", self.stack.fast_model)

    def subject(self) -> Subject:
        return Subject(
            self.name,
            self.ports["fast"],
            self.ports["paced"],
            True,
            pid=lambda: [self.procs["fast"].pid],
            restart=self.restart_fast,
        )


def reference_python() -> str:
    """The reference PyWorker's venv, made once under the cache folder."""
    venv = CACHE / f"bench-reference-{REFERENCE_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing the reference PyWorker (vastai=={REFERENCE_VERSION}) into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"vastai=={REFERENCE_VERSION}"], check=True)
    script = venv / "bench_worker.py"
    script.write_text(REFERENCE_WORKER)
    return str(python)


def nginx_subject(stack: Stack) -> Subject | None:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        print("nginx is not installed: its column is left out (apt-get install nginx)")
        return None
    fast, paced = free_port(), free_port()
    conf = stack.tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=stack.tmp, fast=stack.fast_model, paced=stack.paced_model, fast_listen=fast, paced_listen=paced
        )
    )
    proc = stack.spawn(1, [binary, "-p", str(stack.tmp), "-c", str(conf)])

    def pids() -> list[int]:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        found = [proc.pid]
        if children.exists():
            found += [int(p) for p in children.read_text().split()]
        return found

    def restart() -> None:
        nonlocal proc
        proc.terminate()
        proc.wait(10)
        proc = stack.spawn(1, [binary, "-p", str(stack.tmp), "-c", str(conf)])

    wait_port(fast, 10)
    return Subject("nginx", fast, paced, False, pid=pids, restart=restart)


def floor_subject(stack: Stack) -> Subject:
    """scripts/floor_proxy.py in front of each model: what asyncio alone costs a proxy here."""
    ports = {"fast": free_port(), "paced": free_port()}
    procs = {
        which: stack.spawn(1, [sys.executable, str(ROOT / "scripts" / "floor_proxy.py"), str(port), str(model)])
        for (which, port), model in zip(ports.items(), (stack.fast_model, stack.paced_model), strict=True)
    }
    for port in ports.values():
        wait_port(port, 10)
    return Subject("floor", ports["fast"], ports["paced"], False, pid=lambda: [procs["fast"].pid])


# -- the rows --------------------------------------------------------------------------


@dataclass
class Row:
    title: str
    unit: str
    values: dict[str, float]
    # How pyworker compares: "x" as a multiple of the reference, "+" as time added.
    kind: str


def measure_round(
    stack: Stack, subjects: list[Subject], prompt: str, seconds: float, burst_flush: int, first: bool, number: int = 1
) -> list[Row]:
    fast = {"prompt": prompt, "max_response_tokens": 16}
    stream = {"prompt": prompt, "max_response_tokens": STREAM_TOKENS}
    rows: list[Row] = []

    def rss() -> dict[str, float]:
        return {s.name: sum(rss_mb(pid) for pid in s.pid()) for s in subjects if s.pid()}

    # Every subject is ready here: started (or restarted by the last round) and settled.
    ready_rss = rss()

    rps = {
        s.name: asyncio.run(closed_loop(s.fast, s.request(stack, "/generate", s.fast, fast), 64, seconds))[0]
        for s in subjects
    }
    rows.append(Row("requests/s at concurrency 64", "req/s", rps, "x"))
    targets = [(s.fast, s.request(stack, "/generate", s.fast, fast)) for s in subjects]
    c1 = asyncio.run(interleaved_latencies(targets, seconds))
    rows.append(
        Row("p50 latency at concurrency 1", "ms", {s.name: ms(c1[i], 0.5) for i, s in enumerate(subjects)}, "+")
    )

    def median_first_bytes(paced: bool) -> dict[str, float]:
        """Each subject's median over 30 fresh connections, taken in turn.

        The order is shuffled each time (the same shuffles every run): a
        subject's first byte depends on what ran just before it. In a fixed
        order the subject after another worker came off worse every time
        (+2 ms where it made +0.6 in another place), and an order that only
        turns keeps the same neighbours, so the one after the reference
        always met what the reference still did on core 1 after a stream.
        """
        targets = []
        for s in subjects:
            port = s.paced if paced else s.fast
            targets.append((port, s.request(stack, "/generate_stream", port, stream)))
        samples: list[list[float]] = [[] for _ in subjects]
        with load_generator_first(first):
            for n in range(31):
                order = list(range(len(targets)))
                random.Random(n).shuffle(order)
                for i in order:
                    port, req = targets[i]
                    took = asyncio.run(first_byte(port, req))
                    if n:  # the first is a warm-up
                        samples[i].append(took)
        return {s.name: statistics.median(samples[i]) * 1000 for i, s in enumerate(subjects)}

    rows.append(Row("stream, 1 ms per token: time to first byte", "ms", median_first_bytes(True), "+"))
    rows.append(
        Row(f"stream, {STREAM_TOKENS} events back to back: time to first byte", "ms", median_first_bytes(False), "+")
    )
    stack.events_per_write(burst_flush)
    try:
        throughput = {
            s.name: asyncio.run(
                stream_throughput(s.fast, s.request(stack, "/generate_stream", s.fast, stream), 16, seconds)
            )
            for s in subjects
        }
    finally:
        stack.events_per_write(1)
    events = f"{burst_flush} event{'s' if burst_flush != 1 else ''}"
    rows.append(Row(f"16 bursts at once, {events} a send: throughput", "MB/s", throughput, "x"))
    rows.append(Row("RSS when ready", "MB", ready_rss, "x"))
    rows.append(Row("RSS after the rows above (the load leaves some)", "MB", rss(), "x"))

    # Each round another subject restarts first: whichever does reads 10-35 ms
    # more (the same code restarted first and second, bytecode written for both).
    starts: dict[str, float] = {}
    restartable = [s for s in subjects if s.restart is not None]
    turn = (number - 1) % max(1, len(restartable))
    restartable = restartable[turn:] + restartable[:turn]
    for s in restartable:
        assert s.restart is not None
        req = s.request(stack, "/generate", s.fast, fast)
        s.restart()
        starts[s.name] = wait_answer(s.fast, req)
    rows.append(Row("start to first proxied answer", "s", starts, "x"))
    return rows


def print_round(number: int, rows: list[Row], names: list[str]) -> None:
    width = 11
    print(f"\nround {number}")
    label = max(58, *(len(row.title) + len(row.unit) + 3 for row in rows))
    print(f"{'row':<{label}}" + "".join(f"{n:>{width}}" for n in names) + "   pyworker vs")
    for row in rows:
        cells = ""
        for name in names:
            value = row.values.get(name)
            cells += f"{'-' if value is None else f'{value:.3f}' if value < 10 else f'{value:.0f}':>{width}}"
        print(f"{row.title + ' (' + row.unit + ')':<{label}}{cells}   {compare(row)}")


def compare(row: Row) -> str:
    """pyworker against the reference and nginx, within the row (`+` rows: time added to direct)."""
    v = row.values
    ours = v.get("pyworker")
    if ours is None:
        return ""
    parts = []
    if row.kind == "+" and "direct" in v:
        added = {n: v[n] - v["direct"] for n in v if n != "direct"}
        parts.append("added " + ", ".join(f"{n} {a:+.3f} ms" for n, a in added.items()))
        if "nginx" in added and added["nginx"] > 0:
            parts.append(f"{added['pyworker'] / added['nginx']:.1f}x nginx's")
    else:
        for peer in ("reference", "nginx", "baseline"):
            if peer in v and v[peer] > 0:
                parts.append(f"{ours / v[peer]:.2f}x the {peer}'s")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="also nginx (when installed) and the reference PyWorker")
    parser.add_argument("--no-reference", action="store_true", help="with --peers: leave the reference out")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every row (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed measurement")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument(
        "--access-log", action="store_true", help="also measure pyworker writing its access lines (pyw+log)"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure scripts/floor_proxy.py: bytes passed through on asyncio, no work (the floor)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the hello_world worker of another checkout (a git worktree of an older commit, say)",
    )
    parser.add_argument(
        "--burst-flush",
        type=int,
        default=BURST_FLUSH,
        metavar="N",
        help="events the model sends in one write in the burst-throughput row (default: %(default)s; 1: one each)",
    )
    parser.add_argument(
        "--no-priority",
        action="store_true",
        help="measure first bytes with the load generator at normal priority, sharing core 0 with the model "
        "as any process does (see load_generator_first)",
    )
    args = parser.parse_args()
    if args.burst_flush < 1:
        parser.error("--burst-flush: a whole number from 1")
    first = not args.no_priority and may_run_first()
    if not args.no_priority and not first:
        print(
            "note: no permission for real-time priority (run as root, or grant CAP_SYS_NICE): "
            "first bytes are measured with the load generator at normal priority"
        )
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    ref_python = reference_python() if args.peers and not args.no_reference else None
    stack = Stack(pin)
    try:
        subjects = [Subject("direct", stack.fast_model, stack.paced_model, False)]
        if args.peers:
            found = nginx_subject(stack)
            if found is not None:
                subjects.append(found)
        if args.floor:
            subjects.append(floor_subject(stack))
        workers = []
        if ref_python is not None:
            workers.append(
                WorkerPair(
                    stack, "reference", [ref_python, str(Path(ref_python).parent.parent / "bench_worker.py")], True
                )
            )
        hello = [sys.executable, "-m", "pyworker", "workers.hello_world"]
        compile_tree(ROOT)
        if args.baseline:
            baseline = str(Path(args.baseline).resolve())
            compile_tree(Path(baseline))
            workers.append(WorkerPair(stack, "baseline", hello, False, {"PYTHONPATH": baseline}, cwd=Path(baseline)))
        if args.access_log:
            # The same worker writing an access line a request (INFO), measured in the same rounds.
            workers.append(WorkerPair(stack, "pyw+log", hello, False, {"PYWORKER_LOG_LEVEL": "INFO"}))
        workers.append(WorkerPair(stack, "pyworker", hello, False))
        for pair in workers:
            for port in pair.ports.values():
                wait_port(port, 60)
            pair.mark_loaded()
        time.sleep(SETTLE_S)
        subjects += [pair.subject() for pair in workers]
        names = [s.name for s in subjects]
        print(
            f"subjects: {', '.join(names)}; pinned: "
            f"{'proxies on core 1, models and load generator on core 0' if pin else 'no'}; "
            f"{args.seconds:g} s a timed measurement; workers check signatures and report; "
            f"first bytes read by a load generator at {'real-time' if first else 'normal'} priority"
        )
        prompt = random_words(250, random.Random(11))
        for number in range(1, args.rounds + 1):
            if number > 1:
                time.sleep(SETTLE_S)  # the workers the last round restarted
            print_round(
                number, measure_round(stack, subjects, prompt, args.seconds, args.burst_flush, first, number), names
            )
        ours = subjects[-1]
        print("\npyworker alone")
        huge_prompt_section(ours.fast, stack.auth(ours.fast))
        print("counting a 250-word prompt's tokens (GPT-2 BPE)")
        print(f"  warm cache (every request after the first few): {count_cost_ms():.3f} ms")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
