#!/usr/bin/env python3
"""Make a self-contained folder to copy into a base image: pyworker, one worker, its runtime.

    python scripts/vendor.py workers.hello_world -o build/pyworker
    python scripts/vendor.py workers.openai -o build/pyworker --python 3.10 --platform manylinux2014_x86_64

The folder holds `pyworker/`, `workers/<name>/`, the runtime distributions
(h11, tokenizers) for the given Python in `site-packages/`, and `run.py`. An
image build copies it in; the container runs it with a plain interpreter and
no pip at start:

    python3 -I /opt/pyworker/run.py workers.hello_world

(`-I` ignores PYTHONPATH, the user's site-packages and the working folder, so
only what is in the folder is imported.) Wheels come from the index pip is set
up for; PIP_NO_INDEX=1 and PIP_FIND_LINKS=DIR make it offline.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAUNCHER = '''"""Run a vendored pyworker: python3 -I run.py WORKER_MODULE (made by scripts/vendor.py)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "site-packages")]

from pyworker.__main__ import main  # noqa: E402

main()
'''

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "test_*.py")


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def vendor(worker: str, out: Path, python: str | None, platform: str | None) -> int:
    """Fill `out` (made anew); its size in bytes."""
    name = worker.removeprefix("workers.")
    source = ROOT / "workers" / name
    if not (source / "__init__.py").is_file():
        raise SystemExit(f"vendor: no worker package workers/{name}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(ROOT / "pyworker", out / "pyworker", ignore=_SKIP)
    (out / "workers").mkdir()
    shutil.copy2(ROOT / "workers" / "__init__.py", out / "workers" / "__init__.py")
    shutil.copytree(source, out / "workers" / name, ignore=_SKIP)
    shutil.copy2(ROOT / "LICENSE", out / "LICENSE")
    (out / "run.py").write_text(LAUNCHER)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(out / "site-packages")]
    if python or platform:
        pip += ["--only-binary=:all:", "--implementation", "cp"]
        pip += ["--python-version", python] if python else []
        pip += ["--platform", platform] if platform else []
    subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")], check=True)
    for leftover in (out / "site-packages").glob("bin"):
        shutil.rmtree(leftover)  # console scripts of the distributions: not used
    if python is None or python == f"{sys.version_info[0]}.{sys.version_info[1]}":
        # Bytecode for the image's Python, which is this one: an image often sets
        # PYTHONDONTWRITEBYTECODE or is read-only, and then each start would
        # compile every module again (30-60 ms). pip compiled site-packages.
        for package in ("pyworker", "workers"):
            if not compileall.compile_dir(out / package, quiet=1):
                raise SystemExit(f"vendor: {package} did not compile")
    return folder_size(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("worker", help="the worker package, e.g. workers.hello_world")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "build" / "pyworker", help="the folder to make")
    parser.add_argument("--python", help="the image's Python, e.g. 3.10 (default: this one)")
    parser.add_argument("--platform", help="the image's wheel platform, e.g. manylinux2014_x86_64 (default: this one)")
    args = parser.parse_args()
    size = vendor(args.worker, args.out.resolve(), args.python, args.platform)
    print(f"vendored {args.worker} into {args.out} ({size / 1e6:.1f} MB); run it with:")
    print(f"  python3 -I {os.path.join(args.out, 'run.py')} {args.worker}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
