"""Long-polling, both ways, sized by what clients do.

Answers: python-engineio clients refuse a polling answer of more than 16 packets (its
`Payload.max_decode_packets`) and drop the connection. A burst of broadcasts written in one
tick would exceed that between two polls, so each answer carries at most 16 packets and the
rest wait in the queue for the next poll, in order.

Requests: the same limit, applied by python-engineio to what the server decodes, threw away
every POST of more than 16 packets, and socket.io-client batches every emit queued while a
POST is in flight into the next one. A POST is bounded by its bytes (MAX_PAYLOAD_BYTES, as
Node's engine.io does), not by how many packets it carries; a malformed one ends the
connection with one short log line.
"""

from __future__ import annotations

import asyncio
import logging
import types
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

log = logging.getLogger("tablecast.fanout")
_SEPARATOR = "\x1e"  # between the packets of one polling payload

MAX_POLL_PACKETS = 16


async def _capped_poll(socket: Any, on_taken: Callable[[str, list[Any]], None]) -> list[Any]:
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
    on_taken(socket.sid, packets)
    return packets


def cap_poll_answers(socket: Any, on_taken: Callable[[str, list[Any]], None]) -> None:
    """Give one Engine.IO socket the capped `poll` (used by its long-polling GETs only), which
    reports what it takes out of the queue."""
    if callable(getattr(socket, "poll", None)) and isinstance(getattr(socket, "queue", None), asyncio.Queue):
        socket.poll = types.MethodType(partial(_capped_poll, on_taken=on_taken), socket)


async def _bounded_post(socket: Any, environ: dict[str, Any]) -> None:
    """The socket's `handle_post_request`: every packet of the body, however many."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > socket.server.max_http_buffer_size:
        raise eio_exceptions.ContentTooLongError()
    try:
        body = (await environ["wsgi.input"].read(length)).decode("utf-8")
        if body.startswith("d="):  # the JSONP form
            body = urllib.parse.parse_qs(body)["d"][0]
        packets = [eio_packet.Packet(encoded_packet=part) for part in body.split(_SEPARATOR)] if body else []
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.info("socket closed: malformed polling payload", extra={"eio_sid": socket.sid, "error": type(exc).__name__})
        raise eio_exceptions.UnknownPacketError() from None  # engine.io answers 400 and closes
    for pkt in packets:
        await socket.receive(pkt)


def bound_posts(socket: Any) -> None:
    """Give one Engine.IO socket the byte-bounded `handle_post_request`."""
    if callable(getattr(socket, "handle_post_request", None)):
        socket.handle_post_request = types.MethodType(_bounded_post, socket)
