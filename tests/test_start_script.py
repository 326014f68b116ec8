"""start_server.sh end to end, from a scratch directory with a local repository:
a fresh install, a second start that installs nothing, and a port already served."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from pyworker.dev.ports import free_port, wait_port
from tests.support import ROOT, ModelProcess, body, http_call, wheelhouse


def local_repository(into: Path) -> Path:
    """A git repository holding the working tree as it is (committed or not)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    repo = into / "repo"
    for name in files:
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=repo, check=True)
    return repo


class StartScript(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = Path(tmp.name)
        self.repo = local_repository(self.tmp)
        self.workspace = self.tmp / "workspace"
        self.model = ModelProcess()
        self.addCleanup(self.model.stop)
        self.port = free_port()
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.tmp),
            "WORKSPACE_DIR": str(self.workspace),
            "BACKEND": "hello_world",
            "PYWORKER_REPO": str(self.repo),
            "USE_SSL": "false",
            "UNSECURED": "true",
            "REPORT_ADDR": "off",
            "WORKER_PORT": str(self.port),
            "WORKER_HOST": "127.0.0.1",
            "WORKER_HTTP_PORT": "off",
            "PYWORKER_METRICS_PORT": "off",
            "MODEL_LOG": self.model.log,
            "MODEL_SERVER_URL": self.model.url,
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(wheelhouse()),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }

    def start(self) -> subprocess.Popen[str]:
        """The script as a template runs it: `bash start_server.sh`, from the fetched repository's copy."""
        proc = subprocess.Popen(
            ["bash", str(self.repo / "start_server.sh")],
            cwd=self.tmp,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.addCleanup(self.kill, proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self, proc: subprocess.Popen[str]) -> str:
        """SIGTERM to the script: it stops the worker gracefully and exits 0."""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, out)
        return out

    def serve(self, proc: subprocess.Popen[str], timeout_s: float) -> None:
        wait_port(self.port, timeout_s, proc=None)
        self.assertEqual(http_call(self.port, "POST", "/generate", body(max_response_tokens=2))[0], 200)

    def test_fresh_install_second_start_and_a_port_already_served(self) -> None:
        first = self.start()
        self.serve(first, 180)
        out = self.stop(first)
        self.assertIn("creating the venv", out)
        self.assertIn("installing", out)
        self.assertTrue((self.workspace / "worker-env" / "bin" / "python").exists())
        worker_log = (self.workspace / "pyworker.log").read_text()
        self.assertIn("listening on http://127.0.0.1", worker_log, "the worker's log where templates look")
        self.assertIn("listening on http://127.0.0.1", out, "and on stdout")
        self.assertIn("launching", (self.workspace / "debug.log").read_text())

        started = time.monotonic()
        second = self.start()
        self.serve(second, 60)
        self.assertLess(time.monotonic() - started, 30)

        third = self.start()
        out3, _ = third.communicate(timeout=30)
        self.assertEqual(third.returncode, 1, out3)
        self.assertIn(f"port {self.port} is already served", out3)
        self.assertNotIn("launching", out3)

        out2 = self.stop(second)
        self.assertIn("requirements already installed", out2)
        self.assertIn("repository in place", out2)
        self.assertNotIn("installing", out2)
        self.assertNotIn("creating the venv", out2)

    def test_a_missing_backend_is_one_clear_line(self) -> None:
        self.env["BACKEND"] = ""
        proc = self.start()
        out, _ = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("BACKEND must be set", out)


if __name__ == "__main__":
    unittest.main()
