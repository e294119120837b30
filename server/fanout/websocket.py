"""Engine.IO's websocket transport for aiohttp: the handshake, a reader and a writer per
connection, and a registry of open websockets that the fan-out writes to directly.

python-engineio's own session spends six tasks and two timers per idle socket (`wait_for`
wraps each read and each queue wait in a task of its own); this one keeps the writer as the
only extra task, waits on the queue directly, and knows exactly when its writer is idle, which
is what decides whether a broadcast may skip the queue. It reuses the library's socket for
everything else: packet handling (`receive`), pings, the queue that acks and pings go
through, closing.

permessage-deflate is off, as in Node's engine.io: compressing every frame per recipient was
most of a broadcast's cost, and each connection's zlib state most of an idle socket's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

from server.fanout.frames import TickWriter, websocket_frames

log = logging.getLogger("tablecast.fanout")


def packet_size(pkt: Any) -> int:
    """An Engine.IO packet's size on the wire, near enough. A binary packet is not encoded
    to find out: it would cache the websocket form, and a polling answer then gets that."""
    return len(pkt.data) if pkt.binary else len(pkt.encode())


Handler = Callable[[Any], Awaitable[None]]


@dataclass(eq=False)
class Link:
    """One open websocket of one Engine.IO socket."""

    socket: Any  # engineio.async_socket.AsyncSocket
    response: web.WebSocketResponse
    transport: asyncio.WriteTransport
    protocol: Any  # aiohttp's connection protocol: flow control
    idle: bool = False  # the writer waits on an empty queue, holding nothing unwritten

    def writable(self) -> bool:
        return not self.response.closed and not self.transport.is_closing()


@dataclass
class Wire:
    """What the fan-out and the websocket sessions share: open websockets by Engine.IO sid,
    and the per-tick writer every frame to them goes through, so they stay in order."""

    limit: int  # unsent bytes past which a connection counts as backed up
    links: dict[str, Link] = field(default_factory=dict)
    writer: TickWriter = field(default_factory=TickWriter)
    # Bytes of broadcasts put in each socket's queue and not yet taken out of it.
    queued: dict[str, int] = field(default_factory=dict)

    def enqueued(self, eio_sid: str, size: int) -> int:
        total = self.queued[eio_sid] = self.queued.get(eio_sid, 0) + size
        return total

    def taken(self, eio_sid: str, packets: Iterable[Any]) -> None:
        """Packets left a socket's queue (pings and acks among them: the count may only err low)."""
        if eio_sid in self.queued:
            left = self.queued[eio_sid] - sum(packet_size(p) for p in packets if p is not None)
            self.queued[eio_sid] = max(left, 0)

    def unsent(self, eio_sid: str) -> int:
        """What a socket has yet to send: its queue, its per-tick writes, its transport's buffer."""
        total = self.queued.get(eio_sid, 0)
        link = self.links.get(eio_sid)
        if link is not None:
            total += link.transport.get_write_buffer_size() + self.writer.pending(link)
        return total

    def closed(self, eio_sid: str) -> None:
        """Engine.IO closed the socket: stop its writer, which closes the websocket and so
        ends the reader."""
        self.queued.pop(eio_sid, None)
        link = self.links.get(eio_sid)
        if link is not None:
            link.socket.queue.put_nowait(None)

    def backed_up(self, link: Link) -> bool:
        # Flow control pauses a transport past its high-water mark (64 KiB by default).
        return link.transport.get_write_buffer_size() + self.writer.pending(link) > self.limit


class DirectWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """Engine.IO builds one of these per websocket request as `driver(handler, server)`;
    the handler is the socket's own session, bound to the socket it serves."""

    def __init__(self, wire: Wire, handler: Handler, server: Any) -> None:
        super().__init__(handler, server)
        self._wire = wire

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        response = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await response.prepare(request)
        self._sock = response
        socket = getattr(self.handler, "__self__", None)
        if socket is None or request.transport is None:
            await self.handler(self)
        else:
            await _Session(self._wire, Link(socket, response, request.transport, request.protocol), self.server).run()
        return response


class _Session:
    def __init__(self, wire: Wire, link: Link, server: Any) -> None:
        self._wire = wire
        self._link = link
        self._server = server

    async def run(self) -> None:
        socket = self._link.socket
        if socket.connected:
            if not await self._upgrade():
                return
        else:
            socket.connected = True
            socket.upgraded = True
        self._wire.links[socket.sid] = self._link
        writer = asyncio.create_task(self._write(), name="eio-writer")
        try:
            await self._read()
        finally:
            if self._wire.links.get(socket.sid) is self._link:
                del self._wire.links[socket.sid]
            socket.queue.put_nowait(None)  # the writer stops there
            await writer
            await socket.close(wait=False, abort=True, reason=self._server.reason.TRANSPORT_CLOSE)

    async def _upgrade(self) -> bool:
        """A polling socket moving here: probe, end its pending poll, then the UPGRADE packet."""
        socket, response = self._link.socket, self._link.response
        socket.upgrading = True  # holds polling answers and direct writes meanwhile
        try:
            probe = await self._next()
            if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
                return False
            await response.send_str(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
            upgrade = await self._next()
            if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
                return False
            socket.upgraded = True
            return True
        finally:
            socket.upgrading = False

    async def _next(self) -> eio_packet.Packet | None:
        """The next packet from the client; None once the connection is over or misbehaves."""
        # No timeout of its own: a peer that stops answering pings is closed by engine.io's
        # sweep, which stops the writer (`Wire.closed`), which closes the websocket.
        try:
            msg = await self._link.response.receive()
        except OSError:
            return None
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None  # closed, closing or a protocol error
        if len(msg.data) > self._server.max_http_buffer_size:
            log.info("websocket closed: packet over the size limit", extra={"sid": self._link.socket.sid})
            return None
        try:
            return eio_packet.Packet(encoded_packet=msg.data)
        except (ValueError, TypeError, IndexError):
            log.info("websocket closed: malformed engine.io packet", extra={"sid": self._link.socket.sid})
            return None

    async def _read(self) -> None:
        socket = self._link.socket
        while (pkt := await self._next()) is not None:
            try:
                await socket.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                continue
            except eio_exceptions.SocketIsClosedError:
                return

    async def _write(self) -> None:
        link, queue = self._link, self._link.socket.queue
        try:
            while True:
                link.idle = True
                packets = [await queue.get()]
                link.idle = False
                while not queue.empty():
                    packets.append(queue.get_nowait())
                for _ in packets:
                    queue.task_done()  # `close(wait=True)` joins the queue
                self._wire.taken(link.socket.sid, packets)
                stop = None in packets
                ready = packets[: packets.index(None)] if stop else packets
                if ready and link.writable():
                    self._wire.writer.write(link, websocket_frames(ready))
                if stop or link.socket.closed or not link.writable():
                    return
                if link.protocol.writing_paused:
                    # Later packets wait in the queue (shared, not copied per socket) until
                    # the client reads.
                    await link.protocol._drain_helper()
        except ConnectionError:
            return
        finally:
            link.idle = False
            await link.response.close()


def driver(wire: Wire) -> Callable[[Handler, Any], DirectWebSocket]:
    """The `websocket` entry of one Engine.IO server's async driver table."""

    def make(handler: Handler, server: Any) -> DirectWebSocket:
        return DirectWebSocket(wire, handler, server)

    return make
