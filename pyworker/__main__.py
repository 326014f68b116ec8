"""`python -m pyworker WORKER_MODULE`: run a worker module's `backend` and `routes`."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from .backend import Backend
from .config import ConfigError
from .run import start_server


def load_worker(name: str) -> ModuleType:
    """The module that defines `backend` and `routes`: `name` itself or `name.server`."""
    module = importlib.import_module(name)
    if not hasattr(module, "routes"):
        try:
            module = importlib.import_module(f"{name}.server")
        except ModuleNotFoundError as exc:
            if exc.name != f"{name}.server":
                raise
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pyworker",
        description="Run a pyworker worker module (one that defines `backend` and `routes`).",
    )
    parser.add_argument("module", help="worker module, e.g. workers.hello_world")
    args = parser.parse_args(argv)
    try:
        module = load_worker(args.module)
    except ModuleNotFoundError as exc:
        print(f"pyworker: cannot import worker module {args.module!r}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigError as exc:  # a worker module reads its own settings when imported
        print(f"pyworker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    backend = getattr(module, "backend", None)
    routes = getattr(module, "routes", None)
    if not isinstance(backend, Backend) or routes is None:
        print(f"pyworker: {module.__name__} must define `backend` (a Backend) and `routes`", file=sys.stderr)
        raise SystemExit(2)
    start_server(backend, routes, name=args.module)


if __name__ == "__main__":
    main()
