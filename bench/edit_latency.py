"""Edit latency against table size: one websocket client holds the lock on a row in the
middle of the table and times sequential `update_csv` acks (each one durable, per PROTOCOL.md
section 8) at every size. One JSON line per size on stdout, ratios relative to the smallest;
each line also carries the server's CPU per update and the cores used meanwhile by this
process and by everything else on the machine (see `bench.harness.cpu_usage`).

    python bench/edit_latency.py [--sizes 1000,100000,1000000] [--updates 2000] [--warmup 100]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.harness import (
    CALL_TIMEOUT_S,
    BenchError,
    Server,
    call,
    check_ack,
    connect,
    cpu_snapshot,
    cpu_usage,
    emit,
    login,
    note,
    parse_sizes,
    running_server,
    size_label,
    summarize,
)

EDITOR = "bench_editor"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,100000,1000000", help="comma-separated table sizes, in rows")
    parser.add_argument("--updates", type=int, default=2000, help="timed update_csv acks per size")
    parser.add_argument("--warmup", type=int, default=100, help="untimed update_csv acks before timing")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated tables and values")
    args = parser.parse_args(argv)
    try:
        args.sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.updates < 2 or args.warmup < 0:
        parser.error("--updates must be at least 2 and --warmup at least 0")
    return args


async def time_updates(
    server: Server, updates: int, warmup: int, seed: int
) -> tuple[list[float], dict[str, float | None]]:
    """Milliseconds from emitting each `update_csv` to receiving its ok ack, and the CPU used
    meanwhile (see `cpu_usage`)."""
    async with aiohttp.ClientSession() as http:
        token = await login(http, server.url, EDITOR)
    client = await connect(server.url, token)
    rng = random.Random(seed)
    try:
        row_id = (server.rows + 1) // 2
        await call(client, "lock_row", {"id": row_id})
        for _ in range(warmup):
            await call(client, "update_csv", {"id": row_id, "values": {"pnl": round(rng.uniform(-25_000, 25_000), 2)}})
        note(f"{server.rows} rows: row {row_id} locked, {warmup} warm-up updates done; timing {updates}")
        samples: list[float] = []
        previous: float | None = None
        before = cpu_snapshot(server.pid)
        for _ in range(updates):
            pnl = round(rng.uniform(-25_000, 25_000), 2)
            if pnl == previous:
                pnl = round(pnl + 0.01, 2)
            payload = {"id": row_id, "values": {"pnl": pnl}}
            started = time.perf_counter()
            ack = await client.call("update_csv", payload, timeout=CALL_TIMEOUT_S)
            samples.append((time.perf_counter() - started) * 1000.0)
            row = check_ack("update_csv", ack)["row"]
            if row["id"] != row_id or row["values"]["pnl"] != pnl:
                raise BenchError(f"update_csv acked a different row: {row!r}")
            previous = pnl
        usage = cpu_usage(before, cpu_snapshot(server.pid), updates)
        await call(client, "unlock_row", {"id": row_id})
        return samples, usage
    finally:
        await client.disconnect()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    baseline: dict[str, Any] | None = None
    for rows in args.sizes:
        with running_server(rows, seed=args.seed) as server:
            samples, usage = asyncio.run(time_updates(server, args.updates, args.warmup, args.seed))
            load_s = server.load_s
        stats = summarize(samples)
        if baseline is None:
            baseline = {"label": size_label(rows), **stats}
        label = baseline["label"]
        record: dict[str, Any] = {
            "bench": "edit_latency",
            "rows": rows,
            "updates": len(samples),
            **stats,
            "load_s": round(load_s, 3),
            f"p50_ratio_to_{label}": round(stats["p50_ms"] / baseline["p50_ms"], 3),
            f"p99_ratio_to_{label}": round(stats["p99_ms"] / baseline["p99_ms"], 3),
            **usage,
        }
        emit(record)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        note(f"failed: {exc}")
        sys.exit(1)
