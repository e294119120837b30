"""Long-polling answers sized for every client.

python-engineio clients refuse a polling answer of more than 16 packets (its
`Payload.max_decode_packets`) and drop the connection. A burst of broadcasts written in one
tick would exceed that between two polls, so each answer carries at most 16 packets and the
rest wait in the queue for the next poll, in order.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

from engineio import exceptions as eio_exceptions

MAX_POLL_PACKETS = 16


async def _capped_poll(socket: Any) -> list[Any]:
    """The socket's `poll`: wait for one packet, then take what is queued, up to the cap.
    `None` in the queue means the socket is over; it stays there for the next poll."""
    queue: asyncio.Queue[Any] = socket.queue
    try:
        first = await asyncio.wait_for(queue.get(), socket.server.ping_interval + socket.server.ping_timeout)
    except (TimeoutError, asyncio.CancelledError):
        raise eio_exceptions.QueueEmpty() from None
    queue.task_done()
    if first is None:
        return []
    packets = [first]
    while len(packets) < MAX_POLL_PACKETS and not queue.empty():
        pkt = queue.get_nowait()
        queue.task_done()
        if pkt is None:
            queue.put_nowait(None)
            break
        packets.append(pkt)
    return packets


def cap_poll_answers(socket: Any) -> None:
    """Give one Engine.IO socket the capped `poll` (used by its long-polling GETs only)."""
    if callable(getattr(socket, "poll", None)) and isinstance(getattr(socket, "queue", None), asyncio.Queue):
        socket.poll = types.MethodType(_capped_poll, socket)
