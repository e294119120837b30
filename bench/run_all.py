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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    LOAD_DIR,
    REFERENCE_DIR,
    BenchError,
    TableCache,
    emit,
    node_path,
    note,
)
from bench.plan import CONTEXT, FULL, HEADLINES, QUICK, SIDES, Plan
from bench.scenarios import Run

# -- figures ----------------------------------------------------------------------------------


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
