"""Engine.IO heartbeats from one task per server instead of one sleeping task per socket.

python-engineio starts a task on every pong that sleeps `ping_interval` and then pings; with
thousands of idle sockets that is thousands of tasks, timers and frames held for nothing.
Here each socket's next ping joins one queue: every entry is due `ping_interval` after it was
added, so the queue is already in due order and one task serves it. Pings, pong checks and
timeouts behave as before (a socket that stops answering is closed by engine.io's own sweep).
"""

from __future__ import annotations

import asyncio
import time
import types
from collections import deque
from typing import Any

from engineio import packet as eio_packet


class PingWheel:
    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._due: deque[tuple[float, Any]] = deque()
        self._task: asyncio.Task[None] | None = None

    def install(self, socket: Any) -> None:
        """Take over one Engine.IO socket's `schedule_ping`."""
        if callable(getattr(socket, "schedule_ping", None)) and hasattr(socket, "last_ping"):
            socket.schedule_ping = types.MethodType(self._schedule, socket)

    def _schedule(self, socket: Any) -> None:
        # As engine.io: only once the previous ping was answered (or at the start).
        if not socket.last_ping:
            return
        socket.last_ping = None
        loop = asyncio.get_running_loop()
        self._due.append((loop.time() + self._interval_s, socket))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="eio-pings")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due:
            due, socket = self._due[0]
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue
            self._due.popleft()
            if not socket.closing and not socket.closed:
                socket.last_ping = time.time()
                await socket.send(eio_packet.Packet(eio_packet.PING))

    async def stop(self) -> None:
        self._due.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
