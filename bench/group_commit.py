"""Durable write throughput under concurrency: N websocket clients, each a different user
holding the lock on a different row, send `update_csv` back to back (one in flight per
client) until each has had a fixed number of ok acks. Every ack is durable; changes that
arrive together may share one journal commit. One JSON line on stdout: durable writes per
second, ack latency, the server's CPU per update and the cores used meanwhile by this
process and by everything else on the machine (see `bench.harness.cpu_usage`).

    python bench/group_commit.py [--rows 1000] [--clients 20] [--updates 500] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import socketio

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
    running_server,
    summarize,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="rows in the generated table")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients, one user and one row each")
    parser.add_argument("--updates", type=int, default=500, help="timed update_csv acks per client")
    parser.add_argument("--warmup", type=int, default=20, help="untimed update_csv acks per client first")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated table and values")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rows < args.clients:
        parser.error("--clients must be at least 1 and at most --rows")
    if args.updates < 1 or args.warmup < 0 or args.clients * args.updates < 2:
        parser.error("--updates must be at least 1 (2 acks in all) and --warmup at least 0")
    return args


class Writer:
    """One user, one socket, one locked row."""

    def __init__(self, index: int, row_id: int, client: socketio.AsyncClient, seed: int) -> None:
        self.index = index
        self.row_id = row_id
        self.client = client
        self.rng = random.Random(seed * 1_000_003 + index)
        self.samples: list[float] = []

    def payload(self) -> dict[str, object]:
        return {"id": self.row_id, "values": {"pnl": round(self.rng.uniform(-25_000, 25_000), 2)}}

    async def warm_up(self, count: int) -> None:
        await call(self.client, "lock_row", {"id": self.row_id})
        for _ in range(count):
            await call(self.client, "update_csv", self.payload())

    async def run(self, count: int, start: asyncio.Event) -> None:
        await start.wait()
        for _ in range(count):
            payload = self.payload()
            started = time.perf_counter()
            ack = await self.client.call("update_csv", payload, timeout=CALL_TIMEOUT_S)
            self.samples.append((time.perf_counter() - started) * 1000.0)
            check_ack("update_csv", ack)


async def open_writers(server: Server, clients: int, seed: int) -> list[Writer]:
    async with aiohttp.ClientSession() as http:
        tokens = await asyncio.gather(*(login(http, server.url, f"bench_writer_{i}") for i in range(clients)))
    sockets = await asyncio.gather(*(connect(server.url, token) for token in tokens))
    step = server.rows // clients
    return [Writer(i, 1 + i * step, sock, seed) for i, sock in enumerate(sockets)]


async def measure(server: Server, clients: int, updates: int, warmup: int, seed: int) -> dict[str, object]:
    writers = await open_writers(server, clients, seed)
    try:
        await asyncio.gather(*(w.warm_up(warmup) for w in writers))
        note(f"{clients} clients connected, rows locked, {warmup} warm-up updates each; timing {updates} each")
        start = asyncio.Event()
        tasks = [asyncio.create_task(w.run(updates, start)) for w in writers]
        before = cpu_snapshot(server.pid)
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - began
        usage = cpu_usage(before, cpu_snapshot(server.pid), clients * updates)
    finally:
        await asyncio.gather(*(w.client.disconnect() for w in writers), return_exceptions=True)
    samples = [s for w in writers for s in w.samples]
    return {
        "bench": "group_commit",
        "rows": server.rows,
        "clients": clients,
        "updates_per_client": updates,
        "writes": len(samples),
        "wall_s": round(wall_s, 3),
        "writes_per_s": round(len(samples) / wall_s, 1),
        **summarize(samples),
        **usage,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with running_server(args.rows, seed=args.seed) as server:
        record = asyncio.run(measure(server, args.clients, args.updates, args.warmup, args.seed))
    emit(record)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        note(f"failed: {exc}")
        sys.exit(1)
