"""The direct fan-out layer (`server/fanout/`): frames, the per-tick writer, the start-up
self-check, binary broadcasts to mixed transports, and composition under a pub/sub manager.

The pieces run in-process; the broadcast tests serve a real aiohttp app on an ephemeral port
and talk to it with python-socketio clients over real websockets and long-polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager

from server.fanout import DirectManager, FanoutServer, check_support
from server.fanout.frames import OP_BINARY, OP_TEXT, TickWriter, frame, websocket_frames
from tests.conftest import Client


def parse_frame(data: bytes) -> tuple[int, int, bytes, bytes]:
    """(first byte, mask bit, payload, rest) of one RFC 6455 frame."""
    first, second = data[0], data[1]
    size, offset = second & 0x7F, 2
    if size == 126:
        (size,) = struct.unpack("!H", data[2:4])
        offset = 4
    elif size == 127:
        (size,) = struct.unpack("!Q", data[2:10])
        offset = 10
    return first, second & 0x80, data[offset : offset + size], data[offset + size :]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_lengths_follow_rfc6455(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    first, masked, body, rest = parse_frame(frame(OP_TEXT, payload))
    assert first == 0x80 | OP_TEXT  # FIN, no RSV bits (no deflate)
    assert masked == 0  # a server never masks
    assert body == payload
    assert rest == b""


def test_frame_header_uses_the_shortest_length_form() -> None:
    assert len(frame(OP_TEXT, b"x" * 125)) - 125 == 2
    assert len(frame(OP_TEXT, b"x" * 126)) - 126 == 4
    assert len(frame(OP_TEXT, b"x" * 65536)) - 65536 == 10


def test_engine_packets_become_text_and_binary_frames() -> None:
    text = eio_packet.Packet(eio_packet.MESSAGE, '2["ev",{"a":"é"}]')
    blob = eio_packet.Packet(eio_packet.MESSAGE, b"\x00\xff")
    data = websocket_frames([text, blob])
    first, _, body, rest = parse_frame(data)
    assert first == 0x80 | OP_TEXT
    assert body.decode() == '42["ev",{"a":"é"}]'
    first, _, body, rest = parse_frame(rest)
    assert first == 0x80 | OP_BINARY
    assert body == b"\x00\xff"
    assert rest == b""


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class FakeSink:
    def __init__(self) -> None:
        self.fake = FakeTransport()
        self.open = True

    @property
    def transport(self) -> Any:
        return self.fake

    def writable(self) -> bool:
        return self.open


async def test_tick_writer_sends_one_write_per_connection_per_tick() -> None:
    writer = TickWriter()
    a, b = FakeSink(), FakeSink()
    writer.write(a, b"1")
    writer.write(b, b"x")
    writer.write(a, b"22")
    assert writer.pending(a) == 3
    assert a.fake.writes == []  # nothing leaves before the tick ends
    await asyncio.sleep(0)
    assert a.fake.writes == [b"122"]
    assert b.fake.writes == [b"x"]
    assert writer.pending(a) == 0
    writer.write(a, b"3")
    await asyncio.sleep(0)
    assert a.fake.writes == [b"122", b"3"]


async def test_tick_writer_drops_frames_for_a_connection_gone_within_the_tick() -> None:
    writer = TickWriter()
    gone, fine = FakeSink(), FakeSink()
    for sink in (gone, fine):
        writer.write(sink, b"frame")
    gone.open = False
    await asyncio.sleep(0)
    assert gone.fake.writes == []
    assert fine.fake.writes == [b"frame"]


def test_self_check_passes_on_aiohttp_and_installs_the_driver() -> None:
    from engineio.async_drivers import aiohttp as eio_aiohttp

    assert check_support(socketio.AsyncServer(async_mode="aiohttp")) is None
    manager = DirectManager()
    sio = FanoutServer(client_manager=manager, async_mode="aiohttp")
    assert manager.direct
    assert manager.disabled_reason is None
    assert sio.eio._async["websocket"] is not eio_aiohttp.WebSocket
    # The driver module's table is shared by every server: it must stay untouched.
    assert eio_aiohttp._async["websocket"] is eio_aiohttp.WebSocket


def test_self_check_falls_back_to_the_library_path_when_something_is_missing() -> None:
    manager = DirectManager()
    socketio.AsyncServer(client_manager=manager, async_mode="asgi")
    assert not manager.direct
    assert manager.disabled_reason is not None
    assert "aiohttp" in manager.disabled_reason


class LoopbackPubSub(AsyncPubSubManager, DirectManager):  # type: ignore[misc]
    """A pub/sub manager whose 'backend' is an in-process queue: it publishes and listens
    like AsyncRedisManager does, and delivers locally through `super().emit`."""

    name = "loopback"

    def __init__(self) -> None:
        super().__init__(channel="tablecast-test")  # type: ignore[call-arg]  # AsyncPubSubManager.__init__
        self.bus: asyncio.Queue[Any] = asyncio.Queue()

    async def _publish(self, data: Any) -> None:
        await self.bus.put(data)

    async def _listen(self) -> AsyncIterator[Any]:
        while True:
            yield await self.bus.get()


ServeFn = Callable[[socketio.AsyncManager], Awaitable[tuple[socketio.AsyncServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Serve a Socket.IO app built on a given manager; every client joins room `r`."""
    runners: list[web.AppRunner] = []

    async def start(manager: socketio.AsyncManager) -> tuple[socketio.AsyncServer, str]:
        sio = FanoutServer(client_manager=manager, async_mode="aiohttp")

        async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            await sio.enter_room(sid, "r")

        async def on_echo(sid: str, data: Any) -> Any:
            return data

        sio.on("connect", on_connect)
        sio.on("echo", on_echo)
        app = web.Application()
        sio.attach(app)
        runner = web.AppRunner(app, shutdown_timeout=1)  # pending long-polls end with the test
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return sio, f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


class Recorder(Client):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[Any] = []
        self.arrived = asyncio.Event()

        async def record(data: Any) -> None:
            self.got.append(data)
            self.arrived.set()

        self.on("bin", record)
        self.on("text", record)

    async def wait_count(self, n: int) -> None:
        async with asyncio.timeout(10):
            while len(self.got) < n:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def clients(url: str, transports: list[list[str]]) -> AsyncIterator[list[Recorder]]:
    made = [Recorder() for _ in transports]
    try:
        for client, kinds in zip(made, transports, strict=True):
            await client.connect(url, transports=kinds, wait_timeout=10)
        yield made
    finally:
        for client in made:
            with contextlib.suppress(Exception):
                await client.drop()


async def test_binary_broadcast_reaches_websocket_and_polling_clients(serve: ServeFn) -> None:
    manager = DirectManager()
    sio, url = await serve(manager)
    blob = bytes(range(256)) * 4
    async with clients(url, [["websocket"], ["polling"], ["websocket"], ["polling"]]) as made:
        for n in range(5):
            await sio.emit("bin", {"n": n, "blob": blob}, room="r")
            await sio.emit("text", {"n": n, "note": "é ✓"}, room="r")
        for client in made:
            await client.wait_count(10)
            bins = [d for d in client.got if "blob" in d]
            texts = [d for d in client.got if "note" in d]
            assert [d["n"] for d in bins] == list(range(5))
            assert all(d["blob"] == blob for d in bins)
            assert [d["n"] for d in texts] == list(range(5))
            assert all(d["note"] == "é ✓" for d in texts)
            assert client.connected  # a failed poll answer would have dropped the polling ones


async def test_acks_and_broadcasts_keep_their_order_on_one_socket(serve: ServeFn) -> None:
    manager = DirectManager()
    sio, url = await serve(manager)
    async with clients(url, [["websocket"], ["polling"], ["websocket"]]) as made:
        # Fewer calls in flight than a polling POST may carry packets (python-engineio's cap).
        calls = [asyncio.ensure_future(c.call("echo", {"i": i}, timeout=10)) for c in made for i in range(10)]
        for i in range(50):
            await sio.emit("text", {"n": i, "note": ""}, room="r")
            await asyncio.sleep(0)
        answers = await asyncio.gather(*calls)
        assert answers == [{"i": i} for _ in made for i in range(10)]
        for client in made:
            await client.wait_count(50)
            assert [d["n"] for d in client.got] == list(range(50))


async def test_a_pubsub_manager_sits_on_top_and_delivers_through_the_direct_path(serve: ServeFn) -> None:
    manager = LoopbackPubSub()
    sio, url = await serve(manager)
    assert manager.direct
    direct_writes = 0
    original = manager.wire.writer.write

    def counting(sink: Any, data: bytes) -> None:
        nonlocal direct_writes
        direct_writes += 1
        original(sink, data)

    manager.wire.writer.write = counting  # type: ignore[method-assign]
    async with clients(url, [["websocket"], ["websocket"]]) as made:
        await asyncio.sleep(0.2)  # let both writers settle into waiting
        before = direct_writes
        for n in range(10):
            await sio.emit("text", {"n": n, "note": ""}, room="r")
        for client in made:
            await client.wait_count(10)
            assert [d["n"] for d in client.got] == list(range(10))
        assert direct_writes - before >= 10  # local delivery took the direct path
        # A broadcast published by another server arrives through the listener.
        await manager.bus.put(
            {
                "method": "emit",
                "event": "text",
                "data": [{"n": 10, "note": "remote"}],
                "binary": False,
                "namespace": "/",
                "room": "r",
                "skip_sid": None,
                "callback": None,
                "host_id": "another-server",
            }
        )
        for client in made:
            await client.wait_count(11)
            assert client.got[-1] == {"n": 10, "note": "remote"}


async def test_heartbeats_come_from_one_task_and_a_silent_peer_is_dropped() -> None:
    import aiohttp

    manager = DirectManager()
    sio = FanoutServer(client_manager=manager, async_mode="aiohttp", ping_interval=0.2, ping_timeout=0.3)
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        answering = [Recorder() for _ in range(3)]
        for client in answering:
            await client.connect(url, transports=["websocket"], wait_timeout=10)
        async with aiohttp.ClientSession() as http:
            silent = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket")
            assert (await silent.receive_str()).startswith("0{")  # OPEN
            await silent.send_str("40")  # the Socket.IO connect, then never a pong
            pings = 0
            async with asyncio.timeout(5):
                while True:
                    message = await silent.receive()
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break  # closed by the server
                    pings += message.data == "2"
            assert pings >= 1
            await asyncio.sleep(1.0)  # several ping cycles for the others
            assert all(client.connected for client in answering)
            names = [task.get_coro().__qualname__ for task in asyncio.all_tasks()]  # type: ignore[union-attr]
            assert names.count("PingWheel._run") == 1
            assert not any(name.endswith("_send_ping") for name in names)
        for client in answering:
            await client.drop()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "data",
    [
        None,
        1,
        "text",
        b"raw",
        bytearray(b"raw"),
        [],
        {},
        ["csv_update", {"row": {"id": 1, "values": {"a": None, "b": 2.5}}}],
        ["ev", {"deep": [[[{"x": [1, 2, {"y": b"\x00"}]}]]]}],
        ["ev", [{"a": 1}, {"b": [bytearray(b"!")]}]],
        {"k": ("tuple", b"not walked")},  # tuples are not lists to the library either
    ],
)
def test_binary_check_answers_as_the_library_does(data: Any) -> None:
    from socketio import packet as sio_packet

    from server.fanout.packets import Packet

    assert Packet.data_is_binary(data) == sio_packet.Packet.data_is_binary(data)
