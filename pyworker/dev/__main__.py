"""`python -m pyworker.dev WORKER_MODULE`: the whole stack on this machine.

Starts the stand-in model server and the worker in front of it, waits until
both answer, prints where they listen and a request to try, and runs until
Ctrl-C, which stops everything it started.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from .ports import free_port, wait_port
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyworker.dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("module", nargs="?", default="workers.hello_world", help="worker module (default: %(default)s)")
    parser.add_argument("--worker-port", type=int, default=3000)
    parser.add_argument("--model-port", type=int, default=0, help="stand-in model port (default: a free one)")
    parser.add_argument("--token-delay", type=float, default=0.005, help="stand-in model: seconds per token")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="pyworker-dev-"))
    model_log = workdir / "model.log"
    model_port = args.model_port or free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], extra_env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        out = open(workdir / f"{name}.out", "wb")
        proc = subprocess.Popen([sys.executable, *cmd], env={**env, **extra_env}, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        model = start(
            ["-m", "pyworker.dev.model", "--port", str(model_port), "--log", str(model_log), "--token-delay", str(args.token_delay)],
            {},
            "model",
        )
        wait_port(model_port, 30, model, "the stand-in model")
        worker = start(
            ["-m", "pyworker", args.module],
            {
                "WORKER_PORT": str(args.worker_port),
                "WORKER_HOST": "127.0.0.1",
                "MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
                "MODEL_LOG": str(model_log),
                "UNSECURED": "true",
                "REPORT_ADDR": "off",
            },
            "worker",
        )
        wait_port(args.worker_port, 30, worker, f"the worker (see {workdir / 'worker.out'})")
        payload = '{"auth_data":{"cost":"1","endpoint":"dev","reqnum":1,"request_idx":1,"signature":"","url":""},"payload":{"prompt":"Hello","max_response_tokens":8}}'
        print(
            f"stand-in model  http://127.0.0.1:{model_port}  (log {model_log})\n"
            f"worker          http://127.0.0.1:{args.worker_port}  ({args.module}, signatures off)\n"
            f"output          {workdir}\n\n"
            f"try:\n  curl -s http://127.0.0.1:{args.worker_port}/generate -d '{payload}'\n"
            f"  curl -sN http://127.0.0.1:{args.worker_port}/generate_stream -d '{payload}'\n\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        dead = next(i for i, p in enumerate(procs) if p.poll() is not None)
        name = ("the stand-in model", "the worker")[dead]
        print(f"pyworker.dev: {name} exited with status {procs[dead].returncode}; see {workdir}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
