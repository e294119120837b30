"""A client that stops reading is a slow consumer: once more than MAX_SEND_QUEUE_BYTES waits
to be sent to it, the server disconnects it instead of buffering without end. Its memory is
freed, the other clients get every broadcast, and it can reconnect and catch up with
`fetch_csv {since}`."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.conftest import Client, ServerProcess, login

Connect = Callable[..., Awaitable[Client]]
CELL = "x" * 9000
UPDATES = 600


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def small_receive_buffer(addr_info: tuple[int, int, int, str, tuple[str, int]]) -> socket.socket:
    """A client socket whose kernel buffer holds little, so an unread stream backs up fast."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_client_that_stops_reading_is_disconnected_and_can_catch_up(
    make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    srv = make_server(
        {"MAX_SEND_QUEUE_BYTES": "262144", "RANDOM_INTERVAL_S": "60", "CSV_FLUSH_S": "5", "HISTORY_KEEP": "10"}
    )
    assert srv.proc is not None
    token = await login(srv.url, "slow_reader")
    editor = await connect(srv.url, await login(srv.url))
    reader = await connect(srv.url, await login(srv.url))
    assert (await editor.ask("lock_row", {"id": 1}))["ok"]
    start_seq = (await reader.ask("fetch_csv", {"limit": 1}))["seq"]
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as http:
        slow = await http.ws_connect(f"{srv.url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0)
        assert (await slow.receive_str()).startswith("0{")
        await slow.send_str("40" + json.dumps({"token": token}))
        assert (await slow.receive_str()).startswith("40{")  # connected; from here on it reads nothing
        await asyncio.sleep(0.5)
        baseline = rss_kb(srv.proc.pid)
        acks_ms: list[float] = []
        for n in range(UPDATES):
            sent = time.perf_counter()
            ack = await editor.ask("update_csv", {"id": 1, "values": {"user": f"{n}{CELL}"}})
            acks_ms.append((time.perf_counter() - sent) * 1000)
            assert ack["ok"], ack
        final = ack["row"]["version"]
        await reader.wait_for("csv_update", lambda c: c["seq"] == final, timeout=30)
        assert "slow consumer disconnected" in srv.log()
        await asyncio.sleep(1.0)
        after = rss_kb(srv.proc.pid)
        # Unbounded, the server would still hold every unread broadcast (~10 MB here).
        assert after - baseline < 6 * 1024, (baseline, after)
        # Figures for the README (pytest -s shows them); the editor's acks are not judged by time.
        evicted_at = len(reader.of("csv_update"))
        print(
            json.dumps(
                {
                    "slow_consumer": {"bound_bytes": 262144, "updates": UPDATES, "cell_bytes": len(CELL)},
                    "rss_kb": {"baseline": baseline, "after": after},
                    "editor_ack_ms": {"p50": round(statistics.median(acks_ms), 2), "max": round(max(acks_ms), 2)},
                    "reader_updates": evicted_at,
                }
            )
        )
        await slow.close()
    seqs = [c["seq"] for c in reader.of("csv_update")]
    assert seqs == list(range(start_seq + 1, final + 1))  # the others missed nothing
    assert reader.connected
    assert editor.connected
    back = await connect(srv.url, token)  # the slow client returns and catches up
    # More than HISTORY_KEEP changes were missed: the answer is a reset page.
    caught_up = await back.ask("fetch_csv", {"since": start_seq, "limit": 1000})
    assert caught_up["ok"], caught_up
    assert caught_up["seq"] == final
