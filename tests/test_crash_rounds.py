"""bench/crash.py as a CI check: 20 rounds of a write storm cut short by `kill -9`, with no
acked write lost and the CSV on disk matching the served table after a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

ROUNDS = 20


@pytest.mark.timeout(600)
def test_kill_9_rounds_lose_no_acked_write() -> None:
    # A subprocess, as a user runs it; in a session of its own so that, whatever happens here,
    # no server it started outlives the test.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "crash.py"), "--rounds", str(ROUNDS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=570)  # below the pytest timeout: the output is kept
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"bench/crash.py still running after 570 s\nstdout:\n{stdout}\nstderr:\n{stderr[-5000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    report = f"stdout:\n{stdout}\nstderr (tail):\n{stderr[-5000:]}"
    assert proc.returncode == 0, report
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    summary = lines[-1]
    assert summary["rounds"] == ROUNDS, report
    assert summary["acked"] > 0, report
    assert summary["lost"] == 0, report
    assert [line["round"] for line in lines[:-1]] == list(range(ROUNDS)), report
