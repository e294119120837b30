"""What the benchmarks read off the machine: CPU ticks and RSS from /proc for a process (with
its forked children), the rest of the machine's load, and latency statistics."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


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
