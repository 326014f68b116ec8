#!/usr/bin/env python3
"""Benchmark: the stand-in model direct vs through the hello_world worker.

    python scripts/bench.py [--seconds 3] [--concurrency 1,16,64]

Pins the worker to core 1 and the model and this load generator to core 0
(when the machine has two cores), then prints:
- requests/s and p50/p99 latency at each concurrency, direct and through the
  worker, and the latency the worker adds;
- for a 300-token stream: time to first byte and total, direct and through;
- the worker's RSS idle (before any request) and after load;
- the cost of counting a 250-word prompt's tokens.
"""

from __future__ import annotations

import argparse
import asyncio
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
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyworker.dev.ports import free_port, wait_port  # noqa: E402
from pyworker.loadtest.stats import percentile  # noqa: E402
from pyworker.tokens import TokenCounter  # noqa: E402
from pyworker.words import random_words  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def http_post(path: str, port: int, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _LoadConnection(asyncio.Protocol):
    """Sends one request, waits for the whole Content-Length response, repeats."""

    def __init__(self, request: bytes, stop_at: float, latencies: list[float], done: asyncio.Future[None]) -> None:
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
        length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        if not head.startswith(b"http/1.1 200"):
            raise RuntimeError(f"bad answer {self.buf[:200]!r}")
        now = time.perf_counter()
        self.latencies.append(now - self.sent_at)
        self.buf = self.buf[end + 4 + length :]
        if now < self.stop_at:
            self._send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def closed_loop(port: int, request: bytes, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """`concurrency` keep-alive connections, each sending back to back for `seconds`."""
    loop = asyncio.get_running_loop()
    # Warm-up: one request per connection, not measured.
    await _run_round(loop, port, request, concurrency, time.perf_counter() + 0.3, [])
    latencies: list[float] = []
    start = time.perf_counter()
    await _run_round(loop, port, request, concurrency, start + seconds, latencies)
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


async def _run_round(
    loop: asyncio.AbstractEventLoop, port: int, request: bytes, concurrency: int, stop_at: float, latencies: list[float]
) -> None:
    dones = []
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(functools.partial(_LoadConnection, request, stop_at, latencies, done), "127.0.0.1", port)
        dones.append(done)
    await asyncio.gather(*dones)


async def stream_once(port: int, request: bytes) -> tuple[float, float]:
    """Time to the first body byte and to the end of a streamed answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    writer.write(request)
    await reader.readuntil(b"\r\n\r\n")
    await reader.readuntil(b"data:")
    first = time.perf_counter() - start
    await reader.readuntil(b"data: [DONE]")
    total = time.perf_counter() - start
    writer.close()
    return first, total


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


def pct(values: list[float], q: float) -> float:
    """The q-th quantile of latencies in seconds, in ms (by the load test's nearest-rank rule)."""
    return (percentile(values, q) or 0.0) * 1000


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


class Stack:
    """The processes of one benchmark: the stand-in autoscaler, and model+worker pairs.

    As in production: each worker fetches the autoscaler's key, checks every
    signature and reports once a second. Pinned, the worker runs on core 1
    and everything else (this load generator included) on core 0.
    """

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.tmp = Path(tempfile.mkdtemp(prefix="pyworker-bench-"))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs: list[subprocess.Popen[bytes]] = []
        if pin:
            os.sched_setaffinity(0, {0})
        self.scaler_port = free_port()
        self._spawn(0, ["-m", "pyworker.dev.autoscaler", "--port", str(self.scaler_port), "--key", str(self.tmp / "key.json")])
        wait_port(self.scaler_port, 60)

    def _spawn(self, core: int, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        taskset = ["taskset", "-c", str(core)] if self.pin else []
        proc = subprocess.Popen(
            [*taskset, sys.executable, *args], env=env or self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.procs.append(proc)
        return proc

    def route(self) -> dict[str, object]:
        """A signed route from the autoscaler, once a worker has reported ready."""
        data = json.dumps({"endpoint": "bench", "api_key": "", "cost": 1}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.scaler_port}/route/", data=data)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(req, timeout=5) as res:
                    auth: dict[str, object] = json.loads(res.read())
                    return auth
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # no worker has reported ready yet

    def start_pair(self, name: str, *model_args: str) -> tuple[int, int, subprocess.Popen[bytes]]:
        """A stand-in model (core 0) and a hello_world worker in front of it (core 1)."""
        model_port, worker_port = free_port(), free_port()
        log = str(self.tmp / f"{name}.log")
        # The worker follows its own copy of the log, written by mark_loaded, so
        # that its memory can be measured before the model "loads" as well as after.
        worker_log = str(self.tmp / f"{name}.worker-view.log")
        self._spawn(0, ["-m", "pyworker.dev.model", "--port", str(model_port), "--log", log, *model_args])
        worker_env = {
            **self.env,
            "WORKER_PORT": str(worker_port),
            "WORKER_HOST": "127.0.0.1",
            "MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
            "MODEL_LOG": worker_log,
            "REPORT_ADDR": f"http://127.0.0.1:{self.scaler_port}",
            "CONTAINER_ID": str(len(self.procs)),
            "PUBLIC_IPADDR": "127.0.0.1",
            f"VAST_TCP_PORT_{worker_port}": str(worker_port),
            "PYWORKER_STATE_DIR": str(self.tmp / f"state-{name}"),
            "PYWORKER_LOG_LEVEL": "WARNING",
        }
        worker = self._spawn(1, ["-m", "pyworker", "workers.hello_world"], worker_env)
        wait_port(model_port)
        wait_port(worker_port)
        return model_port, worker_port, worker

    def mark_loaded(self, name: str) -> None:
        with open(self.tmp / f"{name}.worker-view.log", "a") as f:
            f.write("infer server has started\n")
        time.sleep(1.5)  # the benchmark against the stand-in takes well under a second

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def requests_section(
    levels: list[int], seconds: float, model_port: int, worker_port: int, auth: dict[str, object], prompt: str, pid: int
) -> float:
    """Requests/s and latency, direct and through the worker; returns the worker's peak RSS seen."""
    payload = {"prompt": prompt, "max_response_tokens": 16}
    direct_req = http_post("/generate", model_port, json.dumps(payload).encode())
    worker_req = http_post("/generate", worker_port, json.dumps({"auth_data": auth, "payload": payload}).encode())
    print("\n/generate, 250-word prompt, 16-token answer, keep-alive connections")
    print(f"{'conc':>5} {'direct rps':>11} {'p50 ms':>8} {'p99 ms':>8} | {'worker rps':>11} {'p50 ms':>8} {'p99 ms':>8} | {'added p50':>10} {'added p99':>10}")
    peak_rss = rss_mb(pid)
    for c in levels:
        d_rps, d_lat = asyncio.run(closed_loop(model_port, direct_req, c, seconds))
        w_rps, w_lat = asyncio.run(closed_loop(worker_port, worker_req, c, seconds))
        peak_rss = max(peak_rss, rss_mb(pid))
        print(
            f"{c:>5} {d_rps:>11.0f} {pct(d_lat, .5):>8.3f} {pct(d_lat, .99):>8.3f} | "
            f"{w_rps:>11.0f} {pct(w_lat, .5):>8.3f} {pct(w_lat, .99):>8.3f} | "
            f"{pct(w_lat, .5) - pct(d_lat, .5):>10.3f} {pct(w_lat, .99) - pct(d_lat, .99):>10.3f}"
        )
    return peak_rss


def stream_section(stack: Stack, prompt: str) -> None:
    """Time to first byte and total of a 300-token stream from a model at 1 ms per token, as a (fast) real one."""
    stream_model, stream_worker, _ = stack.start_pair("stream", "--token-delay", "0.001")
    stack.mark_loaded("stream")
    stream_auth = next(a for a in iter(stack.route, None) if str(a["url"]).endswith(f":{stream_worker}"))
    print("\n/generate_stream, 300 tokens, one SSE event per token, 1 ms apart (median of 20)")
    s_payload = {"prompt": prompt, "max_response_tokens": 300}
    d_stream = http_post("/generate_stream", stream_model, json.dumps(s_payload).encode())
    w_stream = http_post(
        "/generate_stream", stream_worker, json.dumps({"auth_data": stream_auth, "payload": s_payload}).encode()
    )
    asyncio.run(stream_once(stream_worker, w_stream))  # warm-up: the worker loads its tokenizer
    d = [asyncio.run(stream_once(stream_model, d_stream)) for _ in range(20)]
    w = [asyncio.run(stream_once(stream_worker, w_stream)) for _ in range(20)]
    d_first, d_total = statistics.median(x[0] for x in d) * 1000, statistics.median(x[1] for x in d) * 1000
    w_first, w_total = statistics.median(x[0] for x in w) * 1000, statistics.median(x[1] for x in w) * 1000
    print(f"  first byte: direct {d_first:.3f} ms, worker {w_first:.3f} ms, added {w_first - d_first:.3f} ms")
    print(f"  total:      direct {d_total:.3f} ms, worker {w_total:.3f} ms, added {w_total - d_total:.3f} ms")


def huge_prompt_section(worker_port: int, auth: dict[str, object]) -> None:
    print("\na 32k-token prompt of words the worker has not seen (counted off the event loop)")
    words = random_words(25_000, random.Random(5)) + " " + " ".join(f"w{i}x" for i in range(4000))
    huge = {"prompt": words, "max_response_tokens": 1}
    huge_req = http_post("/generate", worker_port, json.dumps({"auth_data": auth, "payload": huge}).encode())
    idle_worst, busy_worst, huge_ms = asyncio.run(ping_lag_during(worker_port, huge_req))
    print(f"  answered in {huge_ms:.1f} ms; longest /ping meanwhile {busy_worst:.2f} ms (idle: {idle_worst:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    stack = Stack(pin)
    try:
        model_port, worker_port, worker = stack.start_pair("fast")
        time.sleep(0.3)
        loading_rss = rss_mb(worker.pid)
        stack.mark_loaded("fast")
        idle_rss = rss_mb(worker.pid)
        print(f"pinned: {'worker on core 1, model and load generator on core 0' if pin else 'no'}; "
              "signatures checked and reports sent, as in production")
        print(f"worker RSS: {loading_rss:.1f} MB idle before the model loaded (no tokenizer yet), "
              f"{idle_rss:.1f} MB idle once ready (tokenizer loaded, benchmark done)")
        prompt = random_words(250, random.Random(11))
        # Under the platform's signature scheme every route to a worker carries the same signature.
        auth = stack.route()
        peak_rss = requests_section(levels, args.seconds, model_port, worker_port, auth, prompt, worker.pid)
        stream_section(stack, prompt)
        huge_prompt_section(worker_port, auth)
        print(f"\nworker RSS: idle when ready {idle_rss:.1f} MB, under load (peak seen) {max(peak_rss, idle_rss):.1f} MB, "
              f"after {rss_mb(worker.pid):.1f} MB")
        print("\ncounting a 250-word prompt's tokens (GPT-2 BPE)")
        print(f"  warm cache (every request after the first few): {count_cost_ms():.3f} ms")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
