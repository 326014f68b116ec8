"""scripts/vendor.py: the folder runs the hello_world worker with `python3 -I`, nothing installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from pyworker.dev.ports import free_port, wait_port
from tests.support import ROOT, ModelProcess, body, http_call, wheelhouse

# The interpreter the venv was made from: it has no h11, no tokenizers, no pyworker.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


class Vendoring(unittest.TestCase):
    def test_the_vendored_folder_runs_with_an_isolated_interpreter(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "vendored"
            env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse())}
            made = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "vendor.py"), "workers.hello_world", "-o", str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            self.assertEqual(made.returncode, 0, made.stdout + made.stderr)
            self.assertIn("python3 -I", made.stdout)
            for part in (
                "run.py",
                "LICENSE",
                "pyworker/py.typed",
                "workers/hello_world/server.py",
                "site-packages/h11",
                "site-packages/tokenizers",
            ):
                self.assertTrue((out / part).exists(), part)
            self.assertFalse((out / "workers" / "openai").exists(), "only the chosen worker")
            tag = sys.implementation.cache_tag
            for module in ("pyworker/backend", "pyworker/http/server", "workers/hello_world/server"):
                folder, name = module.rsplit("/", 1)
                self.assertTrue((out / folder / "__pycache__" / f"{name}.{tag}.pyc").is_file(), module)

            # Everything it imports comes from the folder.
            probe = (
                f"import sys; sys.path[:0] = [{str(out)!r}, {str(out / 'site-packages')!r}]; "
                "import h11, tokenizers, pyworker, workers.hello_world.server as w; "
                "print(h11.__file__, tokenizers.__file__, pyworker.__file__, w.__file__)"
            )
            where = subprocess.run([BASE_PYTHON, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
            self.assertEqual(where.returncode, 0, where.stderr)
            self.assertTrue(all(p.startswith(str(out)) for p in where.stdout.split()), where.stdout)
            self.assertNotEqual(
                subprocess.run([BASE_PYTHON, "-I", "-c", "import h11"], capture_output=True).returncode,
                0,
                "the interpreter has no h11 of its own",
            )

            model = ModelProcess()
            self.addCleanup(model.stop)
            port = free_port()
            run_env = {
                "PATH": "/usr/bin:/bin",
                "WORKER_PORT": str(port),
                "WORKER_HOST": "127.0.0.1",
                "UNSECURED": "true",
                "REPORT_ADDR": "off",
                "MODEL_LOG": model.log,
                "MODEL_SERVER_URL": model.url,
                "WORKER_HTTP_PORT": "off",
                "PYWORKER_METRICS_PORT": "off",
                "PYWORKER_STATE_DIR": tmp,
            }
            worker = subprocess.Popen(
                [BASE_PYTHON, "-I", str(out / "run.py"), "workers.hello_world"],
                cwd=tmp,
                env=run_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                wait_port(port, 30)
                status, _, answer = http_call(port, "POST", "/generate", body(max_response_tokens=2))
                self.assertEqual(status, 200, answer)
            finally:
                worker.terminate()
                out_text, _ = worker.communicate(timeout=30)
            self.assertIn("listening on", out_text)


if __name__ == "__main__":
    unittest.main()
