"""Shared pieces of the benchmarks: a generated table (cached per size), the real server and
the Node reference server (bench/reference) as subprocesses in private temporary directories,
REST login and websocket clients. The load generator is driven from `bench.loadgen`, and what
is read off /proc lives in `bench.measure`.

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
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT / "bench" / "reference"
LOAD_DIR = ROOT / "bench" / "load"
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


def _spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv), cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


@dataclass
class Server:
    """A running server process (`python run.py`, or the Node reference) on a private
    directory, serving `/healthz` once its table is loaded."""

    name: str
    rows: int
    data_dir: Path
    log_path: Path
    port: int
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] = field(init=False)
    load_s: float = 0.0
    stop_s: float = 0.0

    def start(self) -> float:
        """Spawn the process and wait until it serves; the seconds from spawn to ready."""
        started = time.perf_counter()
        self.proc = _spawn(self.argv, self.env, self.log_path)
        self.wait_ready(LOAD_TIMEOUT_S)
        self.load_s = time.perf_counter() - started
        note(f"{self.name} pid {self.pid} serving {self.rows} rows on port {self.port} after {self.load_s:.2f}s")
        return self.load_s

    def restart(self) -> float:
        """SIGTERM, then start again on the same directory; the seconds to ready again (the
        stop's are in `stop_s`)."""
        self.stop()
        return self.start()

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
                raise BenchError(f"{self.name} exited with {self.proc.returncode} while loading:\n{self.log_tail()}")
            if _healthy(self.url):
                return
            time.sleep(0.05)
        raise BenchError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs, as in a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, then wait for the final checkpoint and a clean exit."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            note(f"{self.name} {self.pid} still running {STOP_TIMEOUT_S:.0f}s after SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait(10)
            raise BenchError(f"{self.name} did not stop on SIGTERM:\n{self.log_tail()}") from None
        self.stop_s = time.perf_counter() - started
        note(f"{self.name} stopped in {self.stop_s:.2f}s (exit code {code})")
        if code != 0:
            note(f"{self.name} exit code {code}; log tail:\n{self.log_tail()}")
        return code


def _server_env(data_dir: Path, port: int, settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in _KEPT_ENV}
    env.update(BENCH_SETTINGS)
    env.update(settings)
    env.update({"HOST": "127.0.0.1", "PORT": str(port), "DATA_DIR": str(data_dir)})
    return env


class TableCache:
    """Generated tables, one file per (rows, seed), made once and copied into each server's
    directory: a million-row table takes seconds to generate."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tablecast-bench-tables-"))
        self._paths: dict[tuple[int, int], Path] = {}

    def path(self, rows: int, seed: int = 1) -> Path:
        key = (rows, seed)
        if key not in self._paths:
            path = self.dir / f"table-{rows}-{seed}.csv"
            started = time.perf_counter()
            write_table(path, rows, seed)
            note(f"{rows} rows generated in {time.perf_counter() - started:.2f}s")
            self._paths[key] = path
        return self._paths[key]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _place_table(path: Path, rows: int, seed: int, table: Path | None) -> None:
    if table is not None:
        shutil.copyfile(table, path)
        return
    started = time.perf_counter()
    write_table(path, rows, seed)
    note(f"{rows} rows generated in {time.perf_counter() - started:.2f}s")


@contextlib.contextmanager
def _serving(server: Server, workdir: Path) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        try:
            if hasattr(server, "proc"):
                server.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def tablecast_server(data_dir: Path, log_path: Path, settings: Mapping[str, str], rows: int = 0) -> Server:
    """`python run.py` on `data_dir` (not started), on a free port, with `settings` over the
    bench defaults."""
    port = free_port()
    return Server(
        name="tablecast",
        rows=rows,
        data_dir=data_dir,
        log_path=log_path,
        port=port,
        argv=[sys.executable, str(ROOT / "run.py")],
        env=_server_env(data_dir, port, settings),
    )


@contextlib.contextmanager
def running_server(
    rows: int, settings: Mapping[str, str] | None = None, seed: int = 1, table: Path | None = None
) -> Iterator[Server]:
    """Generate a `rows`-row table (or copy `table`, a file of that many rows) into a fresh
    temporary DATA_DIR, start the server on it and wait until it serves; on exit stop it with
    SIGTERM and remove the directory."""
    workdir = Path(tempfile.mkdtemp(prefix="tablecast-bench-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    try:
        _place_table(data_dir / CSV_NAME, rows, seed, table)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    server = tablecast_server(data_dir, workdir / "server.log", settings or {}, rows)
    with _serving(server, workdir) as serving:
        yield serving


@contextlib.contextmanager
def running_reference(rows: int, seed: int = 1, table: Path | None = None) -> Iterator[Server]:
    """The Node reference server (bench/reference/server.mjs) on a copy of the same table,
    as `running_server` does for Tablecast."""
    node = node_path()
    if not (REFERENCE_DIR / "node_modules" / "socket.io").is_dir():
        raise BenchError(f"the reference server is not installed: run `npm ci --prefix {REFERENCE_DIR}`")
    workdir = Path(tempfile.mkdtemp(prefix="tablecast-bench-reference-"))
    csv_path = workdir / CSV_NAME
    try:
        _place_table(csv_path, rows, seed, table)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    # A million rows of small objects do not fit V8's default old space on small machines.
    env["NODE_OPTIONS"] = "--max-old-space-size=8192"
    server = Server(
        name="reference",
        rows=rows,
        data_dir=workdir,
        log_path=workdir / "server.log",
        port=port,
        argv=[node, str(REFERENCE_DIR / "server.mjs"), "--csv", str(csv_path), "--port", str(port)],
        env=env,
    )
    with _serving(server, workdir) as serving:
        yield serving


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


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not on PATH (Node 18 or newer runs the reference server and the load)")
    return node
