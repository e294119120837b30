"""The scenarios of bench/run_all.py: each runs against Tablecast and the Node reference in turn,
with the same load, and emits one JSON line with both sides' figures and their ratios."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.harness import (
    BenchError,
    Server,
    TableCache,
    emit,
    note,
    running_reference,
    running_server,
    size_label,
)
from bench.loadgen import LoadRun, run_load
from bench.measure import Probe, cpu_pct, cpu_seconds, other_cpu_cores, rss_kb
from bench.plan import (
    ACK_TIMEOUT_MS,
    CONNECT_BUDGET_S,
    HEADLINES,
    SETTLE_S,
    SIDES,
    TARGETS,
    WAVE,
    Fanout,
    Figures,
    Plan,
)


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
