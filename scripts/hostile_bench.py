#!/usr/bin/env python3
"""How the worker holds up under slow and idle clients, and what huge or abusive requests cost it.

    python scripts/hostile_bench.py [--seconds 15] [--skip-memory]

Starts the stand-in model and the hello_world worker (production defaults:
10 s head deadline from accept, 240 B/s minimum body rate after 5 s, 2048
connections), then for each attack sends valid requests at a steady rate
while the attack runs and prints their success rate and latency, and how
many attack connections the worker closed, after how long:

- idle: 2,100 connections that never send a byte (the limit is 2,048)
- slowloris: 200 connections sending a header line at 1 byte/s
- slow bodies: 20 requests sending their body at 1 byte/s

Then the worker's memory: the peak and lasting RSS growth of one request
with a 1, 10 and 64 MB prompt (item 6 of issue 8), and the RSS and open
files after 10,000 short abusive connections (item 8).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyworker.loadtest.stats import percentile  # noqa: E402
from tests.support import ModelProcess, WorkerProcess, body, post_bytes, wait_for  # noqa: E402

VALID_RPS = 20
Attack = Callable[[int, asyncio.Event, list[float]], Coroutine[Any, Any, None]]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of `pid`, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def request(port: int, data: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """One request on a new connection: (status, body); status 0 when it failed."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (OSError, asyncio.TimeoutError):
        return 0, b""
    try:
        writer.write(data)
        raw = await asyncio.wait_for(reader.read(), timeout)
        head, _, rest = raw.partition(b"\r\n\r\n")
        return (int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0), rest
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        return 0, b""
    finally:
        writer.close()


VALID = post_bytes("/generate", body("hello there", max_response_tokens=2), extra="Connection: close\r\n")


async def valid_traffic(port: int, seconds: float) -> tuple[int, int, list[float]]:
    """Valid requests at VALID_RPS for `seconds`: (sent, succeeded, latencies in ms)."""
    latencies: list[float] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        started = time.perf_counter()
        status, _ = await request(port, VALID)
        if status == 200:
            ok += 1
            latencies.append((time.perf_counter() - started) * 1000)

    tasks = []
    for _ in range(int(seconds * VALID_RPS)):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(1 / VALID_RPS)
    await asyncio.gather(*tasks)
    return len(tasks), ok, latencies


async def hold(port: int, stop: asyncio.Event, held: list[float], opening: bytes = b"", drip: bytes = b"") -> None:
    """One attack connection: send `opening`, then a byte of `drip` a second; reconnect when the worker closes it.

    How long the worker let each closed connection live goes into `held`.
    """
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened = time.monotonic()
        closed = asyncio.ensure_future(reader.read())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            writer.write(opening)
            while not closed.done() and not stop.is_set():
                await asyncio.wait([closed, stopping], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if drip and not closed.done():
                    writer.write(drip)
            if closed.done():
                held.append(time.monotonic() - opened)
        except OSError:
            held.append(time.monotonic() - opened)
        finally:
            closed.cancel()
            stopping.cancel()
            writer.close()


def attack_of(count: int, opening: bytes = b"", drip: bytes = b"") -> Attack:
    async def attack(port: int, stop: asyncio.Event, held: list[float]) -> None:
        await asyncio.gather(*(hold(port, stop, held, opening, drip) for _ in range(count)))

    return attack


async def no_attack(port: int, stop: asyncio.Event, held: list[float]) -> None:
    await stop.wait()


ATTACKS: dict[str, Attack] = {
    "none": no_attack,
    "idle: 2,100 silent connections": attack_of(2100),
    "slowloris: 200 heads at 1 B/s": attack_of(200, b"POST /generate HTTP/1.1\r\nHost: a\r\nX-Slow: ", b"a"),
    "slow bodies: 20 at 1 B/s": attack_of(
        20, b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n{", b" "
    ),
}


async def run_attacks(port: int, seconds: float) -> None:
    print(f"valid requests at {VALID_RPS}/s on new connections during each attack ({seconds:g} s):")
    print(f"  {'attack':<34} {'succeeded':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   attack connections closed")
    for name, attack in ATTACKS.items():
        stop = asyncio.Event()
        held: list[float] = []
        attacking = asyncio.create_task(attack(port, stop, held))
        await asyncio.sleep(1.0)  # let the attack take hold
        sent, ok, lat = await valid_traffic(port, seconds)
        stop.set()
        await asyncio.wait_for(attacking, 30)
        p50, p99 = percentile(lat, 0.5) or 0.0, percentile(lat, 0.99) or 0.0
        top = max(lat, default=0.0)
        closed = f"{len(held)}, after {percentile(held, 0.5):.1f} s (median)" if held else "none"
        print(
            f"  {name:<34} {ok:>5}/{sent:<5} {100 * ok / sent:4.0f}% {p50:8.1f} {p99:8.1f} {top:8.1f}   {closed}",
            flush=True,
        )
        await asyncio.sleep(2)


async def huge_prompts(port: int, pid: int) -> None:
    print("one request with a huge prompt (RSS of the worker, MB):")
    words = (ROOT / "pyworker" / "data" / "words.txt").read_text().split()
    rng = random.Random(1)
    for mb in (1, 10, 64):
        text = " ".join(rng.choice(words) for _ in range(mb * 1024 * 1024 // 7))[: mb * 1024 * 1024]
        data = body(text, max_response_tokens=2)
        await asyncio.sleep(1)
        reset_peak(pid)
        before, _ = rss_mb(pid)
        started = time.perf_counter()
        status, _ = await request(port, post_bytes("/generate", data, extra="Connection: close\r\n"), 300)
        took = time.perf_counter() - started
        await asyncio.sleep(1)
        after, peak = rss_mb(pid)
        size = len(data) / 2**20
        print(
            f"  {mb:>2} MB prompt: {status} in {took:.1f} s; peak +{peak - before:.1f} MB "
            f"({(peak - before) / size:.1f}x the body), after +{after - before:.1f} MB",
            flush=True,
        )


ABUSE = [
    b"garbage\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 18 + b"\r\n",
    b"GET /generate HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20_000 + b"\r\n\r\n",
    b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{",  # then gone
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
]


async def abusive_connections(port: int, pid: int, count: int = 10_000) -> None:
    for _ in range(3):
        await request(port, VALID)
    await asyncio.sleep(1)
    before, _ = rss_mb(pid)
    fds_before = len(os.listdir(f"/proc/{pid}/fd"))
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            data = ABUSE[i % len(ABUSE)]
            if i % len(ABUSE) == 4:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(data)
                    writer.close()
                except OSError:
                    pass
            else:
                await request(port, data, 10)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    took = time.perf_counter() - started
    await asyncio.sleep(7)  # lingering closes end
    after, _ = rss_mb(pid)
    fds_after = len(os.listdir(f"/proc/{pid}/fd"))
    print(
        f"{count:,} short abusive connections in {took:.1f} s: RSS {before:.1f} -> {after:.1f} MB "
        f"({after - before:+.1f}), open files {fds_before} -> {fds_after}"
    )


async def main_async(args: argparse.Namespace, port: int, pid: int) -> None:
    await run_attacks(port, args.seconds)
    if not args.skip_memory:
        await huge_prompts(port, pid)
        await abusive_connections(port, pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="valid traffic per attack (default 15)")
    parser.add_argument("--skip-memory", action="store_true", help="only the attacks")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10_000), hard))
    model = ModelProcess("--max-body-mb", "128")
    worker = WorkerProcess(
        "workers.hello_world",
        model.url,
        model.log,
        {"PYWORKER_LOG_LEVEL": "INFO", "PYWORKER_MAX_BODY_BYTES": str(128 << 20)},
    )
    try:
        wait_for(lambda: "worker ready" in worker.output(), 120, "the worker to be ready")
        asyncio.run(main_async(args, worker.port, worker.proc.pid))
    finally:
        worker.stop()
        model.stop()


if __name__ == "__main__":
    main()
