"""Background loops. Each survives its own failures: one bad round is logged, not fatal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import socketio

from handlers.sockets import LEGACY_OHLC_ROOM, RANDOM_ROOM, SocketRegistry, ohlc_room
from server.broadcast import emit
from server.metrics import Metrics
from storage.numbers import StreamService
from storage.table_service import TableService
from storage.users import AuthService

log = logging.getLogger("tablecast.tasks")

MAINTENANCE_S = 60.0


async def every(period_s: float, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` on a fixed schedule (no drift), logging and skipping failed rounds."""
    next_run = time.monotonic() + period_s
    while True:
        await asyncio.sleep(max(0.0, next_run - time.monotonic()))
        next_run = max(next_run + period_s, time.monotonic())
        try:
            await work()
        except Exception:
            log.exception("background task failed", extra={"task": name})


async def sweep_locks(tables: TableService, sockets: SocketRegistry) -> None:
    await tables.sweep()
    await sockets.expire_sessions()


async def draw_number(sio: socketio.AsyncServer, streams: StreamService, metrics: Metrics | None = None) -> None:
    tick, candles = await streams.draw()
    if metrics is not None:
        metrics.random_drawn()
    await emit(sio, metrics, "random_number", tick.wire(), RANDOM_ROOM)
    for candle in candles:
        await emit(sio, metrics, "ohlc", candle.wire(), ohlc_room(candle.interval))
        if candle.closed and candle.interval == "1m":
            bar = {k: v for k, v in candle.wire().items() if k in ("time", "open", "high", "low", "close")}
            await emit(sio, metrics, "ohlc-data", bar, LEGACY_OHLC_ROOM)


async def maintenance(streams: StreamService, auth: AuthService) -> None:
    await streams.prune()
    await auth.prune_sessions()
