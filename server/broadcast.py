"""Server->client broadcasts, emitted by one task in the order the changes happened."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web

from handlers.sockets import AUTHENTICATED
from protocol.broadcasts import LockStatus
from protocol.results import CsvUpdate
from server.metrics import Metrics, room_size
from storage.locks import LockEvent

log = logging.getLogger("tablecast.broadcast")


async def emit(sio: socketio.AsyncServer, metrics: Metrics | None, name: str, payload: Any, room: str) -> None:
    """Emit to a room; with metrics, count its recipients and time it."""
    if metrics is None:
        await sio.emit(name, payload, room=room)
        return
    recipients = room_size(sio, room)
    started = time.perf_counter()
    await sio.emit(name, payload, room=room)
    metrics.broadcast_sent(name, recipients, time.perf_counter() - started)


class Broadcaster:
    def __init__(self, sio: socketio.AsyncServer, metrics: Metrics | None = None) -> None:
        self._sio = sio
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[str, CsvUpdate | LockStatus]] = asyncio.Queue()

    def table_changed(self, payloads: list[CsvUpdate]) -> None:
        for payload in payloads:
            self._queue.put_nowait(("csv_update", payload))

    def lock_changed(self, event: LockEvent) -> None:
        self._queue.put_nowait(("lock_status", event.wire()))

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # The writers of these changes were woken by the same commit: one turn of the
            # loop lets their acks go out before the fan-out of their changes.
            await asyncio.sleep(0)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for name, payload in batch:
                try:
                    await emit(self._sio, self._metrics, name, payload, AUTHENTICATED)
                except Exception:
                    log.exception("broadcast failed", extra={"socket_event": name})

    async def _drain(self) -> None:
        while not self._queue.empty():
            await asyncio.sleep(0.01)

    async def ctx(self, app: web.Application) -> AsyncIterator[None]:
        """The cleanup_ctx that runs the broadcaster; placed first, so it outlives the
        services and sends what their last commits produce."""
        task = asyncio.create_task(self.run(), name="broadcaster")
        yield
        await self._drain()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
