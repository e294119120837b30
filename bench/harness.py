"""Shared pieces of the benchmarks: a generated table (cached per size), the real server and
the Node reference server (bench/reference) as subprocesses in private temporary directories,
the Node load generator (bench/load) driven with measurement marks, REST login, websocket
clients, CPU and memory readings from /proc, and latency statistics.

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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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
    port = free_port()
    server = Server(
        name="tablecast",
        rows=rows,
        data_dir=data_dir,
        log_path=workdir / "server.log",
        port=port,
        argv=[sys.executable, str(ROOT / "run.py")],
        env=_server_env(data_dir, port, settings or {}),
    )
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


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not on PATH (Node 18 or newer runs the reference server and the load)")
    return node


def rss_kb(pid: int | str) -> int | None:
    """VmRSS of a process in KiB; None when it is gone or there is no /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_ticks(pid: int | str, with_children: bool = False) -> int | None:
    """CPU ticks (utime + stime, every thread) used so far by a process and, if asked, by its
    forked children, live or reaped (Tablecast's CSV checkpoints run in one)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = _own_ticks(fields)
    if with_children:
        try:
            ticks += _reaped_ticks(fields) + _live_children_ticks(int(pid))
        except (OSError, ValueError, IndexError):
            return None
    return ticks


@dataclass(frozen=True)
class Probe:
    """One instant: the wall clock, the machine's busy ticks, and CPU ticks and RSS of each
    named process (None where unreadable)."""

    wall_s: float
    machine_ticks: int | None
    ticks: dict[str, int | None]
    rss: dict[str, int | None]


def probe(pids: Mapping[str, int], with_children: frozenset[str] = frozenset()) -> Probe:
    try:
        machine: int | None = _machine_busy_ticks()
    except (OSError, ValueError):
        machine = None
    return Probe(
        wall_s=time.perf_counter(),
        machine_ticks=machine,
        ticks={name: process_ticks(pid, name in with_children) for name, pid in pids.items()},
        rss={name: rss_kb(pid) for name, pid in pids.items()},
    )


def _tick_delta(before: Probe, after: Probe, name: str) -> int | None:
    a, b = before.ticks.get(name), after.ticks.get(name)
    return None if a is None or b is None else b - a


def cpu_pct(before: Probe | None, after: Probe | None, name: str) -> float | None:
    """Percent of one core the named process used between two probes."""
    if before is None or after is None or after.wall_s <= before.wall_s:
        return None
    ticks = _tick_delta(before, after, name)
    if ticks is None:
        return None
    return round(100.0 * ticks / os.sysconf("SC_CLK_TCK") / (after.wall_s - before.wall_s), 1)


def cpu_seconds(before: Probe | None, after: Probe | None, name: str) -> float | None:
    if before is None or after is None:
        return None
    ticks = _tick_delta(before, after, name)
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")


def other_cpu_cores(before: Probe | None, after: Probe | None) -> float | None:
    """Cores used between two probes by everything on the machine but the named processes: a
    high figure means the run was measured on a contended machine."""
    if before is None or after is None or before.machine_ticks is None or after.machine_ticks is None:
        return None
    ours = 0
    for name in before.ticks:
        delta = _tick_delta(before, after, name)
        if delta is None:
            return None
        ours += delta
    wall_s = after.wall_s - before.wall_s
    if wall_s <= 0:
        return None
    other = max(0, after.machine_ticks - before.machine_ticks - ours)
    return round(other / os.sysconf("SC_CLK_TCK") / wall_s, 2)


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
