"""Transport abuse against the real server: malformed Socket.IO frames, binary attachment
floods from guests, oversize and many-packet long-polling POSTs. Each ends with a clear
answer or a closed connection and at most one short log line, never a wedged socket, a
traceback or memory that grows with what the client sends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from tests.conftest import Client, ServerProcess, login
from tests.test_node_clients import node, run_node

__all__ = ["node"]  # the fixture

Connect = Callable[..., Awaitable[Client]]
SOCKET = "/socket.io/?EIO=4&transport=websocket"


async def open_raw(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    """A websocket speaking Engine.IO by hand, connected to the default namespace as a guest."""
    ws = await http.ws_connect(url + SOCKET)
    assert (await ws.receive_str()).startswith("0{")  # OPEN
    await ws.send_str("40")
    assert (await ws.receive_str()).startswith("40")  # CONNECT
    return ws


async def closed_within(ws: aiohttp.ClientWebSocketResponse, seconds: float = 5) -> bool:
    """Whether the server ends the connection (an Engine.IO CLOSE or the websocket closing)."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT or message.data == "1":
                    return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    "frame",
    [
        "46",  # a binary ack announcing nothing
        "45",  # a binary event announcing nothing
        '451-["ev",{"_placeholder":true,"num":5}]',  # an attachment that cannot exist
        "47",  # no such packet type
        "42[not json",
        "42",  # an event without data
    ],
)
async def test_a_malformed_frame_closes_the_connection_with_one_log_line(
    make_server: Callable[..., ServerProcess], connect: Connect, frame: str
) -> None:
    srv = make_server()
    bystander = await connect(srv.url, await login(srv.url))
    async with aiohttp.ClientSession() as http:
        ws = await open_raw(http, srv.url)
        await ws.send_str(frame)
        if frame.startswith("451-"):
            await ws.send_bytes(b"\x00")  # the one attachment it announced
        for _ in range(20):  # a wedged socket would log a traceback for each of these
            if ws.closed:
                break
            try:
                await ws.send_str('42["ping",{}]')
            except aiohttp.ClientConnectionResetError:  # the server's close is under way
                break
        assert await closed_within(ws), f"{frame!r} left the connection open"
    assert (await bystander.ask("ping"))["ok"]  # the server keeps serving
    log = srv.log()
    assert "Traceback" not in log
    told = [line for line in log.splitlines() if '"event": "socket closed: protocol error"' in line]
    assert len(told) <= 1, told


async def test_a_guest_cannot_make_the_server_buffer_attachments_without_bound(
    make_server: Callable[..., ServerProcess],
) -> None:
    srv = make_server({"MAX_PAYLOAD_BYTES": "65536"})
    chunk = b"\xff" * 60_000
    async with aiohttp.ClientSession() as http:
        many = await open_raw(http, srv.url)
        await many.send_str('45999-["ev",{"_placeholder":true,"num":0}]')
        assert await closed_within(many), "a header announcing 999 attachments was buffered"
        big = await open_raw(http, srv.url)
        await big.send_str('4516-["ev",' + ",".join(f'{{"_placeholder":true,"num":{n}}}' for n in range(16)) + "]")
        for _ in range(16):
            if big.closed:
                break
            try:
                await big.send_bytes(chunk)
            except ConnectionResetError:
                break
        assert await closed_within(big), "attachments beyond MAX_PAYLOAD_BYTES were buffered"
    log = srv.log()
    assert "Traceback" not in log
    assert "announcing 999 attachments" in log
    assert "binary packet over 65536 bytes" in log  # dropped at the second attachment, not the 16th


async def test_an_oversize_polling_post_is_answered_413(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server({"MAX_PAYLOAD_BYTES": "2048"})
    async with aiohttp.ClientSession() as http:
        resp = await http.get(srv.url + "/socket.io/?EIO=4&transport=polling")
        sid = (await resp.text()).split('"sid":"')[1].split('"')[0]
        resp = await http.post(
            f"{srv.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
            data="4" + "x" * 5000,
            headers={"Content-Type": "text/plain;charset=UTF-8"},
            timeout=aiohttp.ClientTimeout(total=10),
        )
        body = await resp.json()
    assert resp.status == 413
    assert body["ok"] is False
    assert body["error"]["code"] == "payload_too_large"


async def test_a_polling_post_of_many_packets_is_all_handled(
    node: str, make_server: Callable[..., ServerProcess]
) -> None:
    srv = make_server()
    token = await login(srv.url)
    result = await run_node(
        node, "polling_burst.mjs", {"TABLECAST_URL": srv.url, "TABLECAST_TOKEN": token, "TABLECAST_EMITS": "50"}, 90
    )
    assert result["acked"] == 50
    assert result["transport"] == "polling"
    assert "Too many packets" not in srv.log()
