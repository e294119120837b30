"""WebSocket frames built once per message, and a writer that coalesces them per connection.

A server frame is unmasked (RFC 6455 section 5.1), so the same bytes can go to every recipient.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from typing import Protocol

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked data frame."""
    size = len(payload)
    first = _FIN | opcode
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = _LEN16.pack(first, 126, size)
    else:
        header = _LEN64.pack(first, 127, size)
    return header + payload


class EnginePacket(Protocol):
    """What is read of an Engine.IO packet."""

    def encode(self) -> str | bytes: ...


def websocket_frames(packets: Iterable[EnginePacket]) -> bytes:
    """Engine.IO packets as websocket frames: text packets as text frames, binary as binary."""
    chunks = []
    for p in packets:
        wire = p.encode()
        chunks.append(frame(OP_BINARY, wire) if isinstance(wire, bytes) else frame(OP_TEXT, wire.encode()))
    return b"".join(chunks)


class Sink(Protocol):
    """A connection frames can be written to."""

    @property
    def transport(self) -> asyncio.WriteTransport: ...

    def writable(self) -> bool: ...


class TickWriter:
    """Frames bound for one connection within an event-loop tick leave in one `write` call.

    A group commit releases many acks and broadcasts in the same tick; one write per socket
    instead of one per message is what makes a batch cheap. Callers append only while the
    socket's own queue is idle, and the flush is scheduled before any packet queued later can
    be woken, so per-socket order holds.
    """

    def __init__(self) -> None:
        self._pending: dict[Sink, list[bytes]] = {}
        self._scheduled = False

    def pending(self, sink: Sink) -> int:
        """Bytes appended for `sink` and not yet written."""
        chunks = self._pending.get(sink)
        return sum(map(len, chunks)) if chunks else 0

    def write(self, sink: Sink, data: bytes) -> None:
        chunks = self._pending.get(sink)
        if chunks is not None:
            chunks.append(data)
            return
        self._pending[sink] = [data]
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._scheduled = False
        for sink, chunks in pending.items():
            if sink.writable():  # else the connection went away within the tick
                sink.transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
