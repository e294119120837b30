"""Shared pieces of the benchmarks: a generated table, the real server as a subprocess in a
private temporary DATA_DIR, REST login, websocket clients and latency statistics.

Everything the benchmarks report goes to stdout as JSON lines; progress and server trouble
go to stderr through `note`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio

ROOT = Path(__file__).resolve().parents[1]
CSV_NAME = "backend_table.csv"
HEADER = ("user", "broker", "API key", "API secret", "pnl", "margin", "max_risk")
BROKERS = ("Zerodha", "Upstox", "Angel One", "ICICI Direct", "Kotak Securities", "Fyers", "Dhan", "5paisa")
BENCH_SETTINGS = {"RATE_LIMIT": "0", "LOG_LEVEL": "WARNING"}
PASSWORD = "bench-password-0123"
LOAD_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class BenchError(RuntimeError):
    """The benchmark cannot go on: the server failed, or an ack was not ok."""


def note(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def emit(record: Mapping[str, Any]) -> None:
    print(json.dumps(record, separators=(", ", ": ")), flush=True)


def size_label(rows: int) -> str:
    for unit, suffix in ((1_000_000, "m"), (1_000, "k")):
        if rows >= unit and rows % unit == 0:
            return f"{rows // unit}{suffix}"
    return str(rows)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise ValueError("sizes must be positive and at least one must be given")
    return sizes


def write_table(path: Path, rows: int, seed: int = 1) -> None:
    """A table of `rows` trading accounts under the protocol's sample header, without an id
    column (the server adds one: ids 1..rows in file order)."""
    rng = random.Random(seed)
    brokers = BROKERS

    def generate() -> Iterator[tuple[str | int, ...]]:
        for n in range(1, rows + 1):
            yield (
                f"user_{n}",
                brokers[rng.randrange(len(brokers))],
                f"ak_{rng.getrandbits(80):020x}",
                f"sk_{rng.getrandbits(160):040x}",
                f"{rng.uniform(-25_000, 25_000):.2f}",
                f"{rng.uniform(1_000, 500_000):.2f}",
                rng.randrange(1_000, 100_001, 250),
            )

    with path.open("w", newline="", encoding="utf-8", buffering=1 << 20) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(generate())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    """A running `python run.py` on a private DATA_DIR."""

    rows: int
    data_dir: Path
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes]
    load_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> None:
        started = time.perf_counter()
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode} while loading:\n{self.log_tail()}")
            if _healthy(self.url):
                return
            time.sleep(0.05)
        raise BenchError(f"server not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, then wait for the final checkpoint and a clean exit."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            note(f"server {self.pid} still running {STOP_TIMEOUT_S:.0f}s after SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait(10)
            raise BenchError(f"server did not stop on SIGTERM:\n{self.log_tail()}") from None
        note(f"server stopped in {time.perf_counter() - started:.2f}s (exit code {code})")
        if code != 0:
            note(f"server exit code {code}; log tail:\n{self.log_tail()}")
        return code


def _server_env(data_dir: Path, port: int, settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEPT_ENV}
    env.update(BENCH_SETTINGS)
    env.update(settings)
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(data_dir)})
    return env


@contextlib.contextmanager
def running_server(rows: int, settings: Mapping[str, str] | None = None, seed: int = 1) -> Iterator[Server]:
    """Generate a `rows`-row table in a fresh temporary DATA_DIR, start the server on it and
    wait until it serves; on exit stop it with SIGTERM and remove the directory."""
    workdir = Path(tempfile.mkdtemp(prefix="tablecast-bench-"))
    server: Server | None = None
    try:
        data_dir = workdir / "data"
        data_dir.mkdir()
        started = time.perf_counter()
        write_table(data_dir / CSV_NAME, rows, seed)
        note(f"{rows} rows generated in {time.perf_counter() - started:.2f}s")
        port = free_port()
        log_path = workdir / "server.log"
        with log_path.open("ab") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py")],
                cwd=ROOT,
                env=_server_env(data_dir, port, settings or {}),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(rows=rows, data_dir=data_dir, log_path=log_path, port=port, proc=proc)
        server.wait_ready(LOAD_TIMEOUT_S)
        server.load_s = time.perf_counter() - started
        note(f"server pid {server.pid} serving {rows} rows on port {port} after {server.load_s:.2f}s")
        yield server
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


async def login(http: aiohttp.ClientSession, url: str, username: str, password: str = PASSWORD) -> str:
    """A bearer token over REST (the server registers an unknown username on first login)."""
    async with http.post(f"{url}/api/login", json={"username": username, "password": password}) as response:
        body = await response.json()
    if response.status != 200 or not body.get("ok"):
        raise BenchError(f"login of {username} failed: HTTP {response.status} {body}")
    return str(body["access_token"])


async def connect(url: str, token: str) -> socketio.AsyncClient:
    """An authenticated python-socketio client on the websocket transport. Broadcasts it
    receives are decoded and dropped (no handlers)."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=30)
    return client


def check_ack(event: str, ack: Any) -> dict[str, Any]:
    if not isinstance(ack, dict) or ack.get("ok") is not True:
        raise BenchError(f"{event} was not acked ok: {ack!r}")
    return ack


async def call(client: socketio.AsyncClient, event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return check_ack(event, await client.call(event, dict(payload), timeout=CALL_TIMEOUT_S))


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; None when the process is gone or there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rindex(")") + 2 :].split()


def _own_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime, every thread


def _reaped_ticks(fields: list[str]) -> int:
    return int(fields[13]) + int(fields[14])  # cutime + cstime of waited-for children


def _live_children_ticks(ppid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and int(fields[1]) == ppid:
                total += _own_ticks(fields)
    return total


def _machine_busy_ticks() -> int:
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float
    machine: int
    client: int
    server: int
    server_children: int


def cpu_snapshot(server_pid: int) -> CpuSnapshot | None:
    """CPU ticks used so far by the machine, this process, the server and the server's forked
    children (CSV exports); None where /proc is not available."""
    client, server = _stat_fields("self"), _stat_fields(server_pid)
    if client is None or server is None:
        return None
    try:
        machine = _machine_busy_ticks()
        children = _reaped_ticks(server) + _live_children_ticks(server_pid)
    except (OSError, ValueError, IndexError):
        return None
    return CpuSnapshot(time.perf_counter(), machine, _own_ticks(client), _own_ticks(server), children)


def cpu_usage(before: CpuSnapshot | None, after: CpuSnapshot | None, operations: int) -> dict[str, float | None]:
    """Server CPU per operation (every thread, not its CSV export children), the average number
    of cores this benchmark's own process used, and the average number of cores used meanwhile
    by everything but this benchmark and the server: a high `other_cpu_cores` means the
    latencies were measured on a contended machine."""
    if before is None or after is None or operations < 1 or after.wall_s <= before.wall_s:
        return {"server_cpu_us_per_update": None, "client_cpu_cores": None, "other_cpu_cores": None}
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    wall_s = after.wall_s - before.wall_s
    server, client = after.server - before.server, after.client - before.client
    ours = client + server + (after.server_children - before.server_children)
    other = max(0, after.machine - before.machine - ours)
    return {
        "server_cpu_us_per_update": round(server * tick_s / operations * 1e6, 1),
        "client_cpu_cores": round(client * tick_s / wall_s, 2),
        "other_cpu_cores": round(other * tick_s / wall_s, 2),
    }


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p99 (inclusive linear interpolation), mean and max, in milliseconds."""
    if len(samples_ms) < 2:
        raise ValueError("need at least two samples")
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 4),
        "p99_ms": round(cuts[98], 4),
        "mean_ms": round(statistics.fmean(samples_ms), 4),
        "max_ms": round(max(samples_ms), 4),
    }
