"""Server->client broadcasts, emitted by one task in the order the changes happened."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio

from handlers.events import AUTHENTICATED
from storage.locks import LockEvent

log = logging.getLogger("tablecast.broadcast")


class Broadcaster:
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def table_changed(self, payloads: list[dict[str, Any]]) -> None:
        for payload in payloads:
            self._queue.put_nowait(("csv_update", payload))

    def lock_changed(self, event: LockEvent) -> None:
        self._queue.put_nowait(("lock_status", event.wire()))

    async def run(self) -> None:
        while True:
            name, payload = await self._queue.get()
            try:
                await self._sio.emit(name, payload, room=AUTHENTICATED)
            except Exception:
                log.exception("broadcast failed", extra={"socket_event": name})

    async def drain(self) -> None:
        while not self._queue.empty():
            await asyncio.sleep(0.01)
