"""Every Tablecast benchmark in one run, each against the real server and, in the same run,
against the Node socket.io reference server (bench/reference: the same events, everything
in memory), with the ratio Tablecast / reference for each headline figure.

    npm ci --prefix bench/reference && npm ci --prefix bench/load
    python bench/run_all.py [--quick] [--only PREFIX[,PREFIX...]] > results.jsonl

Each scenario starts a fresh server per side: Tablecast as `python run.py` on a generated
table in a temporary DATA_DIR (RATE_LIMIT=0), the reference as `node bench/reference/server.mjs`
on a copy of the same CSV. All load comes from one Node process (bench/load/load.mjs, socket.io-
client over websockets), the same for both servers; server CPU (the process with its forked
children, utime + stime from /proc/PID/stat, in percent of one core) and RSS are sampled at
the start and end of each measurement window.

Scenarios (full run; `--quick` uses the small sizes in QUICK and names the results after
them, e.g. `fanout_200x20`, and every line carries `"quick": true`):

- `fanout_1000x20`, `fanout_1000x40`, `fanout_5000x4`: N receivers (one user, one token), one
  editor sending `update_csv` open-loop at R/s for 20 s after a warm-up; delivered %, delivery
  and ack latency, server and load-generator CPU.
- `editors_50`: 50 users, each on its own locked row, back to back; durable writes/s, ack latency.
- `editor_1`: one editor back to back.
- `idle_rss_2000`, `idle_rss_5000`: server RSS before and after N idle authenticated sockets; KB
  per connection.
- `edit_latency_1k`, `_100k`, `_1m`: sequential `update_csv` acks on the middle row; p50, p99
  and their ratio to the 1k figures.
- `start_1m` (first start on a CSV without an id column, restart on the same DATA_DIR, RSS),
  `page_1m` (fetch_csv pages of 1,000 across the table), `download_1m` (the whole CSV over REST).

Output: stdout carries JSON lines only, one object per line: first
`{"scenario": "machine", ...}` (cores, CPU model, versions), then per scenario
`{"scenario", "quick", "sizes", "tablecast": {...}, "reference": {...}, "ratio": {...},
"target"?}` (a side that failed has `{"error": ...}` instead of figures). Figures carry their
unit in their name (`_ms`, `_s`, `_pct`, `_per_s`, `_mb`, `kb_per_conn`); `*_cpu_pct` is percent
of one core; `other_cpu_cores` is what the rest of the machine used meanwhile (high = the
figures were taken on a contended machine). Progress, and at the end a human-readable table
of the headline figures, go to stderr. The exit status is 1 when a side of some scenario
failed (every other scenario still ran), 0 otherwise; a missed `target` is not a failure.

How to read the fan-out figures: a delivery counts when it arrives before the drain ends
(`drain_s` after the last send); acks slower than ACK_TIMEOUT_MS count as `ack_timeouts` and
their latencies are not in the ack percentiles. One Node process decodes every receiver's
copy, so delivery latency includes the generator's own work on each burst for both servers
alike; `load_cpu_pct` and `send_lag_p99_ms` (how late the open-loop sends went out) show when
it is the bottleneck. `first_quarter_p50_ms` against `last_quarter_p50_ms` tells a steady
state from a growing backlog (then every latency grows with the run's length). Every wait is
bounded: a server that cannot keep up gives figures, not a hang.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    LOAD_DIR,
    REFERENCE_DIR,
    BenchError,
    LoadRun,
    Probe,
    Server,
    TableCache,
    cpu_pct,
    cpu_seconds,
    emit,
    node_path,
    note,
    other_cpu_cores,
    rss_kb,
    run_load,
    running_reference,
    running_server,
    size_label,
)

SIDES = ("tablecast", "reference")
SETTLE_S = 1.0  # after a server is ready, before load: start-up tasks finish first
WAVE = 200
CONNECT_BUDGET_S = 120.0
ACK_TIMEOUT_MS = 10_000
Figures = dict[str, Any]


@dataclass(frozen=True)
class Fanout:
    receivers: int
    rate: int
    duration_s: float

    @property
    def name(self) -> str:
        return f"fanout_{self.receivers}x{self.rate}"


@dataclass(frozen=True)
class Plan:
    quick: bool
    small_rows: int
    fanouts: tuple[Fanout, ...]
    fanout_warmup_s: float
    fanout_drain_s: float
    editors: int
    editors_s: float
    editor_1_s: float
    idle: tuple[int, ...]
    idle_settle_s: float
    edit_sizes: tuple[int, ...]
    edit_updates: int
    edit_warmup: int
    big_rows: int
    page_requests: int
    download_runs: int


FULL = Plan(
    quick=False,
    small_rows=1_000,
    fanouts=(Fanout(1_000, 20, 20.0), Fanout(1_000, 40, 20.0), Fanout(5_000, 4, 20.0)),
    fanout_warmup_s=3.0,
    fanout_drain_s=10.0,
    editors=50,
    editors_s=10.0,
    editor_1_s=10.0,
    idle=(2_000, 5_000),
    idle_settle_s=5.0,
    edit_sizes=(1_000, 100_000),
    edit_updates=2_000,
    edit_warmup=100,
    big_rows=1_000_000,
    page_requests=100,
    download_runs=2,
)

QUICK = Plan(
    quick=True,
    small_rows=1_000,
    fanouts=(Fanout(200, 20, 3.0), Fanout(200, 40, 3.0), Fanout(500, 4, 3.0)),
    fanout_warmup_s=1.0,
    fanout_drain_s=5.0,
    editors=10,
    editors_s=3.0,
    editor_1_s=3.0,
    idle=(200,),
    idle_settle_s=3.0,
    edit_sizes=(1_000, 10_000),
    edit_updates=300,
    edit_warmup=30,
    big_rows=100_000,
    page_requests=40,
    download_runs=1,
)

# Headline figures: the ones given a ratio and shown in the table, per scenario kind.
HEADLINES: dict[str, tuple[str, ...]] = {
    "fanout": (
        "delivered_pct",
        "delivery_p50_ms",
        "delivery_p99_ms",
        "delivery_max_ms",
        "ack_p50_ms",
        "ack_p99_ms",
        "server_cpu_pct",
    ),
    "editors": ("writes_per_s", "ack_p50_ms", "ack_p99_ms", "server_cpu_pct"),
    "idle": ("kb_per_conn", "rss_after_mb"),
    "edit_latency": ("p50_ms", "p99_ms", "p50_ratio_to_1k", "writes_per_s"),
    "start": ("start_s", "restart_s", "rss_loaded_mb"),
    "page": ("page_p50_ms", "page_p99_ms"),
    "download": ("download_s", "bytes"),
}

# Shown in the table without a ratio: what tells a backlog, a saturated load generator or a
# contended machine apart from the server's own cost.
CONTEXT: dict[str, tuple[str, ...]] = {
    "fanout": (
        "first_quarter_p50_ms",
        "last_quarter_p50_ms",
        "ack_timeouts",
        "permessage_deflate",
        "load_cpu_pct",
        "other_cpu_cores",
    ),
    "editors": ("load_cpu_pct", "other_cpu_cores"),
    "idle": ("permessage_deflate",),
    "start": ("stop_s",),
}

# Fan-out at the reference's level: everything delivered, p99 latency and CPU within 1.5x
# of what socket.io itself costs on the same machine in the same run.
TARGETS: dict[str, tuple[tuple[str, str, str, float], ...]] = {
    "fanout": (
        ("tablecast", "delivered_pct", ">=", 99.9),
        ("ratio", "delivery_p99_ms", "<=", 1.5),
        ("ratio", "server_cpu_pct", "<=", 1.5),
    ),
}


class Run:
    """The scenarios of one plan: their JSON lines as they complete, and the rows of the
    closing table."""

    def __init__(self, plan: Plan, only: Sequence[str], tables: TableCache) -> None:
        self.plan = plan
        self.only = only
        self.tables = tables
        self.records: list[dict[str, Any]] = []
        # p50/p99 at the smallest edit_latency size, per side: the baseline of the ratios.
        self.edit_baseline: dict[str, Figures] = {}

    def wanted(self, *names: str) -> bool:
        return not self.only or any(name.startswith(prefix) for name in names for prefix in self.only)

    def record(self, name: str, kind: str, sides: Mapping[str, Figures], sizes: Mapping[str, Any]) -> None:
        tablecast, reference = sides.get("tablecast", {}), sides.get("reference", {})
        ratio = {key: _ratio(tablecast.get(key), reference.get(key)) for key in HEADLINES[kind]}
        record: dict[str, Any] = {
            "scenario": name,
            "quick": self.plan.quick,
            "sizes": dict(sizes),
            "tablecast": tablecast,
            "reference": reference,
            "ratio": {key: value for key, value in ratio.items() if value is not None},
        }
        if kind in TARGETS:
            record["target"] = _target(TARGETS[kind], record)
        emit(record)
        self.records.append({**record, "kind": kind})

    # -- running a measurement on both servers --------------------------------------------

    def on_both(self, rows: int, measure: Callable[[Server], Figures]) -> dict[str, Figures]:
        table = self.tables.path(rows)
        sides: dict[str, Figures] = {}
        for side in SIDES:
            opener = running_server if side == "tablecast" else running_reference
            try:
                with opener(rows, table=table) as server:
                    time.sleep(SETTLE_S)
                    sides[side] = measure(server)
            except Exception as exc:
                # One side failing (a server that does not start, a malformed result) must not
                # cost the rest of the run: it is reported as that side's error.
                note(f"{side}: {_describe(exc)}")
                sides[side] = {"error": _describe(exc)}
        return sides

    # -- scenarios ------------------------------------------------------------------------------

    def fanout(self, case: Fanout) -> None:
        plan = self.plan

        def measure(server: Server) -> Figures:
            config = {
                "mode": "fanout",
                "receivers": case.receivers,
                "rate": case.rate,
                "duration_s": case.duration_s,
                "warmup_s": plan.fanout_warmup_s,
                "drain_s": plan.fanout_drain_s,
                "row_id": (server.rows + 1) // 2,
                "reader_user": "bench_reader",
                "editor_user": "bench_editor",
                "wave": WAVE,
                "connect_budget_s": CONNECT_BUDGET_S,
                "ack_timeout_ms": ACK_TIMEOUT_MS,
            }
            bound = CONNECT_BUDGET_S + plan.fanout_warmup_s + case.duration_s + plan.fanout_drain_s + 90
            run = run_load(config, server, bound)
            if run.error:
                return {"error": run.error}
            r = run.result
            delivery, ack = r["delivery"], r["ack"]
            return {
                "receivers": r["receivers_connected"],
                "receivers_failed": r["receivers_failed"],
                "receivers_dropped": r["receivers_dropped"],
                "rate_per_s": r["rate_per_s"],
                "duration_s": case.duration_s,
                "updates": r["updates_sent"],
                "delivered_pct": r["delivered_pct"],
                "delivery_p50_ms": delivery["p50_ms"],
                "delivery_p99_ms": delivery["p99_ms"],
                "delivery_max_ms": delivery["max_ms"],
                "first_quarter_p50_ms": r["first_quarter_p50_ms"],
                "last_quarter_p50_ms": r["last_quarter_p50_ms"],
                "ack_p50_ms": ack["p50_ms"],
                "ack_p99_ms": ack["p99_ms"],
                "acks_ok": r["acks_ok"],
                "ack_timeouts": r["ack_timeouts"] + r["acks_unanswered"],
                "ack_errors": r["ack_errors"],
                "out_of_order": r["out_of_order"],
                "permessage_deflate": r["permessage_deflate"],
                **_window_cpu(run),
                "connect_s": r["connect_s"],
                "drain_s": r["drain_s"],
                "send_lag_p99_ms": r["send_lag_p99_ms"],
            }

        sizes = {
            "rows": plan.small_rows,
            "receivers": case.receivers,
            "rate_per_s": case.rate,
            "duration_s": case.duration_s,
            "warmup_s": plan.fanout_warmup_s,
            "drain_s": plan.fanout_drain_s,
        }
        self.record(case.name, "fanout", self.on_both(plan.small_rows, measure), sizes=sizes)

    def editors(self, name: str, count: int, duration_s: float) -> None:
        def measure(server: Server) -> Figures:
            step = server.rows // count
            config = {
                "mode": "editors",
                "editors": count,
                "user_prefix": "bench_writer_",
                "row_ids": [1 + i * step for i in range(count)] if count > 1 else [(server.rows + 1) // 2],
                "duration_s": duration_s,
                "warmup_updates": 20,
                "ack_timeout_ms": ACK_TIMEOUT_MS,
            }
            return _editor_figures(run_load(config, server, duration_s + 120))

        sizes = {"rows": self.plan.small_rows, "editors": count, "duration_s": duration_s}
        self.record(name, "editors", self.on_both(self.plan.small_rows, measure), sizes=sizes)

    def idle(self, connections: int) -> None:
        plan = self.plan

        def measure(server: Server) -> Figures:
            config = {
                "mode": "idle",
                "receivers": connections,
                "settle_s": plan.idle_settle_s,
                "reader_user": "bench_reader",
                "wave": WAVE,
                "connect_budget_s": CONNECT_BUDGET_S,
            }
            run = run_load(config, server, CONNECT_BUDGET_S + plan.idle_settle_s + 90)
            if run.error:
                return {"error": run.error}
            r = run.result
            before, after = _rss(run.marks.get("before")), _rss(run.marks.get("after"))
            connected = int(r["receivers_connected"])
            return {
                "connections": connected,
                "connections_failed": r["receivers_failed"],
                "rss_before_mb": _mb(before),
                "rss_after_mb": _mb(after),
                "kb_per_conn": round((after - before) / connected, 1) if before and after and connected else None,
                "random_numbers_per_conn_per_s": r["random_numbers_per_conn_per_s"],
                "connect_s": r["connect_s"],
                "settle_s": r["settle_s"],
                "permessage_deflate": r["permessage_deflate"],
            }

        sizes = {"rows": plan.small_rows, "connections": connections, "settle_s": plan.idle_settle_s}
        self.record(f"idle_rss_{connections}", "idle", self.on_both(plan.small_rows, measure), sizes=sizes)

    def edit_latency(self, server: Server) -> Figures:
        plan = self.plan
        config = {
            "mode": "editors",
            "editors": 1,
            "user_prefix": "bench_editor_",
            "row_ids": [(server.rows + 1) // 2],
            "updates": plan.edit_updates,
            "duration_s": 120,
            "warmup_updates": plan.edit_warmup,
            "ack_timeout_ms": ACK_TIMEOUT_MS,
        }
        figures = _editor_figures(run_load(config, server, 240))
        if "error" in figures:
            return figures
        return {
            "rows": server.rows,
            "updates": figures["writes_ok"],
            "p50_ms": figures["ack_p50_ms"],
            "p99_ms": figures["ack_p99_ms"],
            "mean_ms": figures["ack_mean_ms"],
            "max_ms": figures["ack_max_ms"],
            "writes_per_s": figures["writes_per_s"],
            "ack_timeouts": figures["ack_timeouts"],
            "ack_errors": figures["ack_errors"],
            "server_cpu_us_per_update": figures["server_cpu_us_per_update"],
            "server_cpu_pct": figures["server_cpu_pct"],
            "other_cpu_cores": figures["other_cpu_cores"],
            "server_start_s": round(server.load_s, 3),
        }

    def record_edit_latency(self, rows: int, sides: Mapping[str, Figures]) -> None:
        for side, figures in sides.items():
            if "error" in figures:
                continue
            baseline = self.edit_baseline.setdefault(side, {"rows": rows, **figures})
            label = size_label(int(baseline["rows"]))
            for stat in ("p50", "p99"):
                figures[f"{stat}_ratio_to_{label}"] = _ratio(figures[f"{stat}_ms"], baseline[f"{stat}_ms"])
        sizes = {"rows": rows, "updates": self.plan.edit_updates, "warmup_updates": self.plan.edit_warmup}
        self.record(f"edit_latency_{size_label(rows)}", "edit_latency", sides, sizes=sizes)

    def big_table(self) -> None:
        """One server per side on the big table: first start, edit latency, pages, download,
        then a restart on the same directory."""
        rows = self.plan.big_rows
        label = size_label(rows)
        parts = ("start", "edit_latency", "page", "download")
        results: dict[str, dict[str, Figures]] = {part: {} for part in parts}

        def measure(server: Server) -> Figures:
            side = server.name
            rss_loaded = rss_kb(server.pid)
            for part, step in (
                ("edit_latency", self.edit_latency),
                ("page", self.page),
                ("download", self.download),
            ):
                try:
                    results[part][side] = step(server)
                except Exception as exc:
                    note(f"{side} {part}: {_describe(exc)}")
                    results[part][side] = {"error": _describe(exc)}
            start: Figures = {
                "rows": rows,
                "csv_bytes": self.tables.path(rows).stat().st_size,
                "start_s": round(server.load_s, 3),
                "rss_loaded_mb": _mb(rss_loaded),
            }
            try:
                start["restart_s"] = round(server.restart(), 3)
                start["stop_s"] = round(server.stop_s, 3)
                time.sleep(SETTLE_S)
                start["rss_restarted_mb"] = _mb(rss_kb(server.pid))
            except Exception as exc:
                note(f"{side} restart: {_describe(exc)}")
                start["restart_error"] = _describe(exc)
            results["start"][side] = start
            return {}

        for side, outcome in self.on_both(rows, measure).items():
            if "error" in outcome:
                for part in parts:
                    results[part].setdefault(side, outcome)
        self.record_edit_latency(rows, results["edit_latency"])
        self.record(f"start_{label}", "start", results["start"], sizes={"rows": rows})
        sizes = {"rows": rows, "limit": 1000, "requests": self.plan.page_requests}
        self.record(f"page_{label}", "page", results["page"], sizes=sizes)
        sizes = {"rows": rows, "runs": self.plan.download_runs}
        self.record(f"download_{label}", "download", results["download"], sizes=sizes)

    def page(self, server: Server) -> Figures:
        config = {"mode": "page", "limit": 1000, "positions": 20, "requests": self.plan.page_requests}
        run = run_load(config, server, 240)
        if run.error:
            return {"error": run.error}
        r = run.result
        page = r["page"]
        return {
            "rows": r["total_rows"],
            "limit": r["limit"],
            "requests": r["requests"],
            "page_p50_ms": page["p50_ms"],
            "page_p99_ms": page["p99_ms"],
            "page_max_ms": page["max_ms"],
            "short_pages": r["short_pages"],
            "page_json_chars": r["page_json_chars"],
        }

    def download(self, server: Server) -> Figures:
        run = run_load({"mode": "download", "runs": self.plan.download_runs}, server, 600)
        if run.error:
            return {"error": run.error}
        r = run.result
        return {
            "rows": r["rows"],
            "bytes": r["bytes"],
            "download_s": r["download_s"],
            "ttfb_ms": r["ttfb_ms"],
            "mb_per_s": r["mb_per_s"],
            "runs_s": [one["s"] for one in r["runs"]],
        }

    def all(self) -> None:
        plan = self.plan
        for case in plan.fanouts:
            if self.wanted(case.name):
                self.fanout(case)
        if self.wanted(f"editors_{plan.editors}"):
            self.editors(f"editors_{plan.editors}", plan.editors, plan.editors_s)
        if self.wanted("editor_1"):
            self.editors("editor_1", 1, plan.editor_1_s)
        for connections in plan.idle:
            if self.wanted(f"idle_rss_{connections}"):
                self.idle(connections)
        for rows in plan.edit_sizes:
            if self.wanted(f"edit_latency_{size_label(rows)}"):
                self.record_edit_latency(rows, self.on_both(rows, self.edit_latency))
        label = size_label(plan.big_rows)
        if self.wanted(*(f"{part}_{label}" for part in ("edit_latency", "start", "page", "download"))):
            self.big_table()


# -- figures ----------------------------------------------------------------------------------


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"


def _ratio(tablecast: Any, reference: Any) -> float | None:
    numbers = (int, float)
    if isinstance(tablecast, bool) or isinstance(reference, bool):
        return None
    if not isinstance(tablecast, numbers) or not isinstance(reference, numbers) or reference == 0:
        return None
    return round(tablecast / reference, 3)


def _target(checks: Sequence[tuple[str, str, str, float]], record: Mapping[str, Any]) -> dict[str, Any]:
    """The checks as text, and `met`: true when all pass, false when one fails, null when a
    figure is missing (a side failed)."""
    described: dict[str, Any] = {}
    passed: list[bool | None] = []
    for where, key, op, bound in checks:
        described[f"{where}.{key}"] = f"{op} {bound}"
        value = record.get(where, {}).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            passed.append(None)
        else:
            passed.append(value >= bound if op == ">=" else value <= bound)
    described["met"] = False if False in passed else (None if None in passed else True)
    return described


def _mb(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _rss(probe: Probe | None) -> int | None:
    return None if probe is None else probe.rss.get("server")


def _window_cpu(run: LoadRun) -> Figures:
    before, after = run.window()
    return {
        "server_cpu_pct": cpu_pct(before, after, "server"),
        "load_cpu_pct": cpu_pct(before, after, "load"),
        "other_cpu_cores": other_cpu_cores(before, after),
        "server_rss_mb": _mb(_rss(after)),
    }


def _editor_figures(run: LoadRun) -> Figures:
    if run.error:
        return {"error": run.error}
    r = run.result
    ack = r["ack"]
    before, after = run.window()
    server_s = cpu_seconds(before, after, "server")
    writes = int(r["writes_ok"])
    return {
        "editors": r["editors"],
        "window_s": r["window_s"],
        "writes_ok": writes,
        "writes_per_s": r["writes_per_s"],
        "ack_p50_ms": ack["p50_ms"],
        "ack_p99_ms": ack["p99_ms"],
        "ack_mean_ms": ack["mean_ms"],
        "ack_max_ms": ack["max_ms"],
        "ack_timeouts": r["ack_timeouts"],
        "ack_errors": r["ack_errors"],
        "broadcasts_received_pct": r["broadcasts_received_pct"],
        "server_cpu_us_per_update": round(server_s / writes * 1e6, 1) if server_s is not None and writes else None,
        **_window_cpu(run),
    }


# -- the machine and the closing table ----------------------------------------------------------


def _npm_version(prefix: Path, package: str) -> str | None:
    try:
        manifest = json.loads((prefix / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def _python_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(plan: Plan) -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    node = subprocess.run([node_path(), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "scenario": "machine",
        "quick": plan.quick,
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "python_socketio": _python_version("python-socketio"),
        "python_engineio": _python_version("python-engineio"),
        "aiohttp": _python_version("aiohttp"),
        "socket_io": _npm_version(REFERENCE_DIR, "socket.io"),
        "socket_io_client": _npm_version(LOAD_DIR, "socket.io-client"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _first_and_last_line(text: str, width: int = 160) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    short = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return short if len(short) <= width else short[: width - 3] + "..."


def table(records: Sequence[Mapping[str, Any]], wall_s: float) -> str:
    header = ("scenario", "figure", "tablecast", "reference", "ratio")
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    for record in records:
        tablecast, reference = record["tablecast"], record["reference"]
        for side in SIDES:
            if "error" in record[side]:
                failures.append(f"{record['scenario']} {side}: {_first_and_last_line(str(record[side]['error']))}")
        for key in HEADLINES[record["kind"]]:
            if key in tablecast or key in reference:
                rows.append(
                    (
                        record["scenario"],
                        key,
                        _cell(tablecast.get(key)),
                        _cell(reference.get(key)),
                        _cell(record["ratio"].get(key)),
                    )
                )
        for key in CONTEXT.get(record["kind"], ()):
            if key in tablecast or key in reference:
                rows.append((record["scenario"], key, _cell(tablecast.get(key)), _cell(reference.get(key)), ""))
        if "target" in record:
            rows.append((record["scenario"], "target met", _cell(record["target"]["met"]), "", ""))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.extend(f"FAILED {failure}" for failure in failures)
    lines.append(f"wall time {wall_s:.0f}s; ratio = tablecast / reference; cpu_pct = percent of one core")
    return "\n".join(lines)


# -- entry point --------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in about two minutes")
    parser.add_argument(
        "--only", default="", help="comma-separated scenario name prefixes to run (e.g. fanout,edit_latency_1k)"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def _tables() -> Iterator[TableCache]:
    cache = TableCache()
    try:
        yield cache
    finally:
        cache.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    only = [part.strip() for part in args.only.split(",") if part.strip()]
    started = time.perf_counter()
    emit(machine(plan))
    with _tables() as tables:
        run = Run(plan, only, tables)
        run.all()
    wall_s = time.perf_counter() - started
    note(f"done in {wall_s:.0f}s")
    print(table(run.records, wall_s), file=sys.stderr, flush=True)
    failed = any("error" in record[side] for record in run.records for side in SIDES)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        note(f"failed: {exc}")
        sys.exit(1)
