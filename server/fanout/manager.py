"""The client manager that writes each broadcast once and straight to every idle websocket.

The library's `AsyncManager.emit` encodes a broadcast once but then spends an asyncio task,
a queue hop and a writer wake-up per recipient. Here a recipient costs one append: the
message's websocket frames are built once and appended to the connection's per-tick write,
provided nothing could overtake them. Whenever writing directly could reorder — something in
the socket's Engine.IO queue, its writer busy with packets it has taken, polling, an upgrade
under way, a backed-up connection — the packets go into the socket's own queue instead,
exactly where the library puts them.

It relies on internals of python-engineio (the socket's flags, queue and `receive`, the
aiohttp driver table) and aiohttp (connection flow control). `check_support` looks for each
at start; if one is missing the manager logs why and every call takes the library's path.

A pub/sub manager composes by listing this class after it:
`class Fanout(AsyncRedisManager, DirectManager)` — the pub/sub layer delivers locally through
`super().emit`, which lands here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp.base_protocol import BaseProtocol
from engineio import async_socket as eio_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from server.fanout.engine import FanoutEngine
from server.fanout.frames import websocket_frames
from server.fanout.inbound import BinaryBudget
from server.fanout.packets import Packet
from server.fanout.pings import PingWheel
from server.fanout.polling import bound_posts, cap_poll_answers
from server.fanout.websocket import Link, Wire, driver, packet_size

log = logging.getLogger("tablecast.fanout")

# Past this much unsent data a connection is backed up: packets wait in its queue, where its
# writer drains them at the pace the client reads.
WRITE_BUFFER_LIMIT = 64 * 1024
_SOCKET_NEEDS = ("queue", "connected", "upgraded", "upgrading", "closing", "closed", "sid")
# Handler names a client's event must never reach by name: the lifecycle handlers and the catch-all.
_NOT_CLIENT_EVENTS = frozenset({"connect", "disconnect", "*"})
_SERVER_NEEDS = ("sockets", "ping_interval", "ping_timeout", "max_http_buffer_size", "reason")


@dataclass(frozen=True)
class Message:
    """One Socket.IO packet, encoded once: its websocket frames and its Engine.IO packets."""

    frames: bytes
    packets: tuple[eio_packet.Packet, ...]
    binary: bool

    @property
    def size(self) -> int:
        return sum(packet_size(p) for p in self.packets)

    @classmethod
    def of(cls, pkt: sio_packet.Packet) -> Message:
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        packets = tuple(eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts)
        return cls(websocket_frames(packets), packets, any(p.binary for p in packets))

    def queued(self) -> tuple[eio_packet.Packet, ...]:
        """Packets for one socket's queue. Binary ones are never shared: an Engine.IO packet
        caches its first encoding whatever `b64` it was asked for, so a polling recipient
        would be handed raw bytes meant for a websocket."""
        if not self.binary:
            return self.packets
        return tuple(eio_packet.Packet(eio_packet.MESSAGE, p.data) for p in self.packets)


def check_support(server: Any) -> str | None:
    """Why the direct path cannot run on `server`; None when all it relies on is there."""
    eio: Any = getattr(server, "eio", None)
    table = getattr(eio, "_async", None)
    if not isinstance(table, dict) or any(not hasattr(eio, name) for name in _SERVER_NEEDS):
        return "engine.io server internals not found"
    if not hasattr(eio.reason, "TRANSPORT_CLOSE") or not isinstance(eio.sockets, dict):
        return "engine.io server internals not found"
    websocket = table.get("websocket")
    if not (isinstance(websocket, type) and issubclass(websocket, eio_aiohttp.WebSocket)):
        return f"async mode {getattr(eio, 'async_mode', None)!r} is not aiohttp"
    for name in ("UnknownPacketError", "SocketIsClosedError"):
        if not hasattr(eio_exceptions, name):
            return f"engine.io lacks {name}"
    for name in ("receive", "close", "_websocket_handler"):
        if not callable(getattr(eio_socket.AsyncSocket, name, None)):
            return f"engine.io socket lacks {name}"
    probe = eio_socket.AsyncSocket(eio, "probe")
    missing = [name for name in _SOCKET_NEEDS if not hasattr(probe, name)]
    if missing or not isinstance(probe.queue, asyncio.Queue):
        return f"engine.io socket lacks {missing or ['an asyncio queue']}"
    if not callable(getattr(BaseProtocol, "_drain_helper", None)) or not hasattr(BaseProtocol, "writing_paused"):
        return "aiohttp protocol lacks flow control"
    return None


class DirectManager(socketio.AsyncManager):  # type: ignore[misc]
    """`max_queue_bytes` (0: no bound): a socket with more than this yet to send is a slow
    consumer, disconnected rather than buffered for without end; it reconnects and catches
    up with `fetch_csv {since}`."""

    def __init__(self, write_buffer_limit: int = WRITE_BUFFER_LIMIT, max_queue_bytes: int = 0) -> None:
        super().__init__()
        self.wire = Wire(limit=write_buffer_limit)
        self._max_queue_bytes = max_queue_bytes
        self._evicting: set[str] = set()
        self.direct = False
        self.disabled_reason: str | None = "not attached to a server"

    def set_server(self, server: Any) -> None:
        super().set_server(server)
        reason = check_support(server)
        if reason is None:
            # This server's own table, not the driver module's shared one.
            server.eio._async = {**server.eio._async, "websocket": driver(self.wire)}
        else:
            log.warning("direct fan-out off, using the library's emit", extra={"reason": reason})
        self.direct = reason is None
        self.disabled_reason = reason

    async def emit(  # noqa: PLR0917 - the library's signature
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if not self.direct or callback is not None:  # acks from many clients: the library's way
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        if namespace not in self.rooms:
            return
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        message = Message.of(self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]))
        for sid, eio_sid in self.get_participants(namespace, to or room):
            if sid not in skip:
                self._deliver(eio_sid, message)

    def send(self, eio_sid: str, pkt: sio_packet.Packet) -> bool:
        """Write one packet for one socket directly if it is idle; False: queue it as usual."""
        if not self.direct:
            return False
        link = self._idle(eio_sid)
        if link is None:
            return False
        self.wire.writer.write(link, Message.of(pkt).frames)
        return True

    def _deliver(self, eio_sid: str, message: Message) -> None:
        link = self._idle(eio_sid)
        if link is not None:
            self.wire.writer.write(link, message.frames)
            return
        socket = self.server.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or eio_sid in self._evicting:
            return
        self.wire.enqueued(eio_sid, message.size)
        if self._max_queue_bytes and (unsent := self.wire.unsent(eio_sid)) > self._max_queue_bytes:
            self._evict(eio_sid, socket, unsent)
            return
        for p in message.queued():
            socket.queue.put_nowait(p)

    def _evict(self, eio_sid: str, socket: Any, unsent: int) -> None:
        """Disconnect a slow consumer: what it has not read is dropped with the connection."""
        self._evicting.add(eio_sid)
        log.info("slow consumer disconnected", extra={"eio_sid": eio_sid, "unsent_bytes": unsent})
        link = self.wire.links.get(eio_sid)
        if link is not None:
            link.transport.abort()  # its buffer goes now, not after a close handshake it cannot read
        task = asyncio.get_running_loop().create_task(socket.close(wait=False, abort=True))
        task.add_done_callback(lambda _: self._evicting.discard(eio_sid))

    def _idle(self, eio_sid: str) -> Link | None:
        """The socket's websocket, if a frame written now cannot overtake anything. (A
        connection that closes within the tick is skipped when the tick's writes go out.)"""
        link = self.wire.links.get(eio_sid)
        if link is None or not link.idle:
            return None
        socket = link.socket
        if socket.closing or socket.closed or not socket.queue.empty() or self.wire.backed_up(link):
            return None
        return link


def _ignore(eio_sid: str, packets: list[Any]) -> None:
    pass


class FanoutServer(socketio.AsyncServer):  # type: ignore[misc]
    """An `AsyncServer` whose packets to one socket (acks, connect replies) take the manager's
        direct path too, so an ack leaves with the broadcasts of the same tick, not after them,
        whose long-polling answers stay within what every client accepts, whose heartbeats come
    from one task (`PingWheel`) instead of one per socket, and whose clients cannot reach the
    lifecycle handlers by naming them in an event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", Packet)
        super().__init__(*args, **kwargs)
        # Socket.IO already runs each event handler in a task of its own; a second task per
        # incoming Engine.IO message only adds cost, and inline handling keeps a socket's
        # packets decoded in the order they came.
        self.eio.async_handlers = False
        self._pings = PingWheel(self.eio.ping_interval)
        self._binary_budget = BinaryBudget(self.eio.max_http_buffer_size)

    def _engineio_server_class(self) -> type:
        return FanoutEngine

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        socket = self.eio.sockets.get(eio_sid)  # created just before this event, not yet polled
        if socket is not None:
            manager = self.manager
            cap_poll_answers(socket, manager.wire.taken if isinstance(manager, DirectManager) else _ignore)
            bound_posts(socket)
            self._pings.install(socket)
        return await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        refusal = self._binary_budget.admit(eio_sid, data, eio_sid in self._binary_packet)
        if refusal is None:
            try:
                await super()._handle_eio_message(eio_sid, data)
            # From decoding; RecursionError from a packet nested past the JSON decoder's limit.
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
                refusal = f"malformed socket.io packet ({type(exc).__name__})"
        if eio_sid not in self._binary_packet:
            self._binary_budget.done(eio_sid)
        if refusal is not None:
            await self._drop(eio_sid, refusal)

    async def _handle_event_internal(  # noqa: PLR0917 - the library's signature
        self, server: Any, sid: str, eio_sid: str, data: list[Any], namespace: str | None, id: int | None
    ) -> None:
        # The library looks a client's event name up among all handlers, lifecycle ones
        # included: `disconnect` from a client would run the disconnect handler on a live
        # socket, `*` the catch-all without a name, and a list or object name raises
        # `unhashable type`. Only a string naming an application event reaches it by name;
        # every other name goes to the catch-all, which answers it as unknown.
        name = data[0] if data else None
        handlers = self.handlers.get(namespace or "/", {})
        if isinstance(name, str) and name not in _NOT_CLIENT_EVENTS and name in handlers:
            await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
            return
        catch_all = handlers.get("*")
        if catch_all is None:
            return
        answer = catch_all(name, sid, *data[1:])
        if inspect.isawaitable(answer):
            answer = await answer
        if id is not None:
            args = [] if answer is None else list(answer) if isinstance(answer, tuple) else [answer]
            await server._send_packet(
                eio_sid, self.packet_class(sio_packet.ACK, namespace=namespace or "/", id=id, data=args)
            )

    async def _drop(self, eio_sid: str, reason: str) -> None:
        """End a connection whose client broke the protocol: one log line, no traceback."""
        self._binary_packet.pop(eio_sid, None)
        self._binary_budget.done(eio_sid)
        log.info("socket closed: protocol error", extra={"eio_sid": eio_sid, "reason": reason})
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None:
            await socket.close(wait=False, abort=False)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        manager = self.manager
        if isinstance(manager, DirectManager):
            manager.wire.closed(eio_sid)

    async def shutdown(self) -> None:
        await self._pings.stop()
        await super().shutdown()

    async def _send_packet(self, eio_sid: str, pkt: sio_packet.Packet) -> None:
        manager = self.manager
        if isinstance(manager, DirectManager) and manager.send(eio_sid, pkt):
            return
        await super()._send_packet(eio_sid, pkt)
