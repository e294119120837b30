"""What a benchmark run measures: the scenarios' sizes (full and --quick), the headline figures
of each scenario, and the targets they are judged against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
