"""Driving the Node load generator (bench/load/load.mjs): one process of socket.io-client
connections, told what to do in JSON and read back as JSON lines, with /proc probes taken at
its measurement marks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from bench.harness import LOAD_DIR, PASSWORD, ROOT, BenchError, Server, node_path, note
from bench.measure import Probe, probe


@dataclass
class LoadRun:
    """What one run of the Node load generator gave: its JSON result, a probe at each of its
    `@mark` lines, and its wall time."""

    result: dict[str, Any]
    marks: dict[str, Probe]
    wall_s: float

    @property
    def error(self) -> str | None:
        error = self.result.get("error")
        return None if error is None else str(error)

    def window(self, start: str = "window_start", end: str = "window_end") -> tuple[Probe | None, Probe | None]:
        return self.marks.get(start), self.marks.get(end)


def _pump(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(raw.decode(errors="replace").rstrip("\n"))


def run_load(config: Mapping[str, Any], server: Server, timeout_s: float) -> LoadRun:
    """Run bench/load/load.mjs once against `server` with `config` (see DEFAULTS there) and
    wait for its one JSON line, at most `timeout_s`. At each `@mark NAME` it prints, the
    server, the generator and this process are probed (the server with its forked children)
    before the generator is let go on."""
    node = node_path()
    if not (LOAD_DIR / "node_modules" / "socket.io-client").is_dir():
        raise BenchError(f"the load generator is not installed: run `npm ci --prefix {LOAD_DIR}`")
    full = {"url": server.url, "password": PASSWORD, **config, "marks": True}
    # The generator's own deadline comes first, so a stuck run still yields its JSON line.
    full.setdefault("deadline_s", max(10.0, timeout_s - 15.0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [node, str(LOAD_DIR / "load.mjs"), json.dumps(full)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:
        raise BenchError("the load generator's pipes did not open")
    stdin = proc.stdin
    pids = {"server": server.pid, "load": proc.pid, "self": os.getpid()}
    marks: dict[str, Probe] = {}
    out: list[str] = []

    def on_stderr(line: str) -> None:
        if line.startswith("@mark "):
            marks[line[6:].strip()] = probe(pids, with_children=frozenset({"server"}))
            with contextlib.suppress(OSError):
                stdin.write(b"\n")
                stdin.flush()
        elif line:
            note(f"load: {line}")

    readers = [
        threading.Thread(target=_pump, args=(proc.stderr, on_stderr), daemon=True),
        threading.Thread(target=_pump, args=(proc.stdout, out.append), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise BenchError(f"the load generator ({config.get('mode')}) did not finish in {timeout_s:.0f}s") from None
    finally:
        for reader in readers:
            reader.join(5)
        with contextlib.suppress(OSError):
            stdin.close()
    lines = [line for line in out if line.strip()]
    if not lines:
        raise BenchError(f"the load generator ({config.get('mode')}) exited with {proc.returncode} and no result")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise BenchError(f"the load generator printed no JSON: {lines[-1][:200]!r}") from None
    if not isinstance(result, dict):
        raise BenchError(f"the load generator printed {result!r}, not an object")
    return LoadRun(result=result, marks=marks, wall_s=time.perf_counter() - started)
