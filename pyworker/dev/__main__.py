"""`python -m pyworker.dev [WORKER_MODULE] [--workers N]`: the whole stack on this machine.

Starts the stand-in autoscaler, then N pairs of stand-in model server and
worker, with signatures on: each worker fetches the autoscaler's key, checks
every request's signature and reports to it, as on the platform. Waits until
every worker reports itself ready (benchmark included), prints where
everything listens and what the workers report, and runs until Ctrl-C, which
stops everything it started. Output of each process goes to a log file in
the run's folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .ports import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 120.0


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, *args], env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
        self.procs.append((name, proc))
        return proc

    def dead(self) -> tuple[str, int] | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return name, proc.returncode
        return None

    def stop(self) -> None:
        # A second Ctrl-C must not leave children behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def autoscaler_status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/status", timeout=5) as res:
        status: dict[str, Any] = json.loads(res.read())
        return status


def describe(worker: dict[str, Any]) -> str:
    if worker.get("error_msg"):
        state = f"error: {worker['error_msg']}"
    elif worker.get("ready"):
        state = f"ready, max_perf {worker.get('max_perf', 0):.0f} workload/s"
    else:
        state = "loading"
    return f"worker {worker['id']}  {worker.get('url')}  {state}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pyworker.dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("module", nargs="?", default="workers.hello_world", help="worker module (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="model+worker pairs to start (default: %(default)s)")
    parser.add_argument(
        "--worker-port", type=int, default=3000, help="first worker's port; the next ones follow (0: any free)"
    )
    parser.add_argument("--autoscaler-port", type=int, default=8081, help="(0: any free port)")
    parser.add_argument("--token-delay", type=float, default=0.002, help="stand-in model: seconds per token")
    parser.add_argument("--load-time", type=float, default=1.0, help="stand-in model: seconds before it says it loaded")
    parser.add_argument("--model-server", metavar="URL", help="a real model server to use instead of the stand-in")
    parser.add_argument("--model-log", metavar="FILE", help="that server's log file (with --model-server)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if bool(args.model_server) != bool(args.model_log):
        parser.error("--model-server and --model-log go together")
    if args.model_server and args.workers != 1:
        parser.error("--model-server runs one worker in front of it")
    return args


def start_workers(stack: Stack, args: argparse.Namespace, scaler_url: str) -> None:
    """Each worker, and the stand-in model in front of which it runs (unless --model-server)."""
    workdir = stack.workdir
    for i in range(args.workers):
        worker_port = args.worker_port + i if args.worker_port else free_port()
        if args.model_server:
            model_url, model_log = args.model_server, Path(args.model_log)
        else:
            model_port = free_port()
            model_url, model_log = f"http://127.0.0.1:{model_port}", workdir / f"model-{i}.stdout.log"
            stack.start(
                f"model-{i}",
                [
                    "-m",
                    "pyworker.dev.model",
                    "--port",
                    str(model_port),
                    "--log",
                    str(model_log),
                    "--token-delay",
                    str(args.token_delay),
                    "--load-time",
                    str(args.load_time),
                ],
            )
        # One worker keeps the side listeners' defaults (WORKER_PORT + 1 and + 2);
        # several would collide with each other's ports, so each gets free ones.
        side: dict[str, str] = {}
        if args.workers > 1 or not args.worker_port:
            side = {"WORKER_HTTP_PORT": str(free_port()), "PYWORKER_METRICS_PORT": str(free_port())}
        metrics_port = side.get("PYWORKER_METRICS_PORT", str(worker_port + 2))
        print(
            f"worker {i + 1}             http://127.0.0.1:{worker_port}  (metrics http://127.0.0.1:{metrics_port}/metrics)"
        )
        stack.start(
            f"worker-{i}",
            ["-m", "pyworker", args.module],
            {
                **side,
                "WORKER_PORT": str(worker_port),
                "WORKER_HOST": "127.0.0.1",
                "MODEL_SERVER_URL": model_url,
                "MODEL_LOG": str(model_log),
                "REPORT_ADDR": scaler_url,
                "CONTAINER_ID": str(i + 1),
                "PUBLIC_IPADDR": "127.0.0.1",
                f"VAST_TCP_PORT_{worker_port}": str(worker_port),
                "PYWORKER_STATE_DIR": str(workdir / f"state-{i}"),
            },
        )


def poll(stack: Stack, scaler_url: str, shown: dict[int, str]) -> list[dict[str, Any]]:
    """The workers the autoscaler knows, each printed when its state changed; exits if a process died."""
    dead = stack.dead()
    if dead is not None:
        raise SystemExit(f"pyworker.dev: {dead[0]} exited with status {dead[1]}; see {stack.workdir / dead[0]}.log")
    try:
        workers: list[dict[str, Any]] = autoscaler_status(scaler_url)["workers"]
    except (OSError, urllib.error.URLError, ValueError):
        return []
    for w in workers:
        line = describe(w)
        if shown.get(w["id"]) != line:
            print("  " + line, flush=True)
            shown[w["id"]] = line
    return workers


def wait_ready(stack: Stack, scaler_url: str, count: int, shown: dict[int, str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        workers = poll(stack, scaler_url, shown)
        if len(workers) == count and all(w.get("ready") for w in workers):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"pyworker.dev: workers not ready after {READY_TIMEOUT_S:g} s; see {stack.workdir}")
        time.sleep(0.25)


def load_test_hints(args: argparse.Namespace, scaler_port: int, scaler_url: str) -> str:
    where = "-l" if scaler_port == 8081 else f"--autoscaler {scaler_url}"
    if args.module != "workers.hello_world":
        where += f" --worker {args.module}"
    hints = [
        f"  python scripts/loadtest.py -n 200 -rps 20 {where}",
        f"  python scripts/loadtest.py -n 200 -rps 20 {where} --session 10   # in sessions of 10",
    ]
    if args.module == "workers.hello_world":
        hints.append(f"  python scripts/loadtest.py -n 20 -rps 2 {where} --route /generate_stream --stream")
    return "\n".join(hints)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pyworker-dev-"))
    stack = Stack(workdir)
    # Ctrl-C and SIGTERM both stop the stack, even when started from a shell
    # that set SIGINT to be ignored (as non-interactive shells do for `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    scaler_port = args.autoscaler_port or free_port()
    scaler_url = f"http://127.0.0.1:{scaler_port}"
    try:
        scaler = stack.start("autoscaler", ["-m", "pyworker.dev.autoscaler", "--port", str(scaler_port)])
        wait_port(scaler_port, 60, scaler, "the stand-in autoscaler")  # the first run makes its key
        start_workers(stack, args, scaler_url)
        print(f"stand-in autoscaler  {scaler_url}  (signs routes; GET /status shows what it knows)")
        print(f"logs                 {workdir}")
        print(f"waiting for {args.workers} worker(s) to load, benchmark and report ready ...", flush=True)
        shown: dict[int, str] = {}
        wait_ready(stack, scaler_url, args.workers, shown)
        hints = load_test_hints(args, scaler_port, scaler_url)
        print(f"\nall {args.workers} worker(s) ready. Try:\n{hints}\nCtrl-C stops everything.", flush=True)
        while True:
            poll(stack, scaler_url, shown)
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    except (RuntimeError, TimeoutError) as exc:  # a process that did not come up
        print(f"pyworker.dev: {exc}; its log is in {workdir}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
