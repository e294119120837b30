"""The server under bench/crash.py: `python run.py` on a free port at each start, with short
checkpoint and backup intervals so kills land in the middle of them, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.harness import ROOT, BenchError, free_port

SETTINGS = {
    "CSV_FLUSH_S": "0.1",  # a checkpoint every ~0.1-0.4 s of the storm: kills land mid-export too
    "BACKUP_INTERVAL_S": "1",  # backups (hard links before the rename) happen during storms too
    "EDIT_COOLDOWN_S": "0.5",
    "LOCK_SWEEP_S": "0.2",
    "AUTO_REGISTER": "true",
    "RATE_LIMIT": "0",
    "LOG_LEVEL": "WARNING",
}


KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


START_TIMEOUT_S = 120.0


STOP_TIMEOUT_S = 60.0


class Server:
    """`python run.py` on one DATA_DIR, on a fresh free port at every start."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Spawn and wait for /healthz; the seconds that took."""
        started = time.perf_counter()
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in KEPT_ENV}
        env.update(SETTINGS)
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": str(self.data_dir)})
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py")],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = started + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if self._healthy():
                return time.perf_counter() - started
            time.sleep(0.02)
        raise BenchError(f"server not ready after {START_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait for the final checkpoint; the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise BenchError(f"server did not stop on SIGTERM:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
