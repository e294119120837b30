"""Faults: a full disk gives `unavailable` and changes nothing; a bug gives `internal`."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from handlers.events import SocketHandlers
from handlers.sockets import SocketRegistry, SocketState
from protocol.events import EventSpec
from protocol.payloads import Empty
from protocol.results import EmptyResult
from tests.conftest import Client, ServerProcess, login

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    with path.open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())


async def test_full_disk_is_unavailable_and_recovers(
    tiny_disk: Path, make_server: MakeServer, connect: Connect
) -> None:
    server = make_server({"CSV_FLUSH_S": "0.1"}, data_dir=tiny_disk / "data")
    client = await connect(server.url, await login(server.url))
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    before = await client.ask("fetch_csv", {"limit": 1})
    filler = tiny_disk / "filler"
    fill(filler)
    outcomes = []
    for n in range(20):  # SQLite may still have room in its pages for a few small writes
        ack = await client.ask("update_csv", {"id": 1, "values": {"user": "x" * 5000 + str(n)}})
        outcomes.append(ack)
        if not ack["ok"]:
            break
    failed = outcomes[-1]
    assert failed["ok"] is False, "the disk never filled"
    assert failed["error"]["code"] == "unavailable"
    row = (await client.ask("fetch_csv", {"limit": 1}))["rows"][0]
    stored = [a["row"] for a in outcomes if a["ok"]]
    assert row == (stored[-1] if stored else before["rows"][0])  # the failed write left no trace
    # Users and sessions live on the same full disk: a login cannot be stored either.
    answers = []
    async with aiohttp.ClientSession() as http:
        for n in range(10):
            resp = await http.post(f"{server.url}/api/login", json={"username": f"full_{n}", "password": "pw"})
            answers.append((resp.status, (await resp.json()).get("error", {}).get("code")))
            if resp.status != 200:
                break
    assert answers[-1] == (503, "unavailable"), answers
    filler.unlink()
    ack = await client.ask("update_csv", {"id": 1, "values": {"user": "room again"}})
    assert ack["ok"], ack
    server.kill()
    server.start()
    client = await connect(server.url, await login(server.url))
    assert (await client.ask("fetch_csv", {"limit": 1}))["rows"][0] == ack["row"]


async def test_an_unexpected_exception_is_acked_internal() -> None:
    async def broken(state: SocketState, payload: Empty) -> dict[str, object]:
        raise RuntimeError("a bug")

    sio = socketio.AsyncServer(async_mode="aiohttp")
    sockets = SocketRegistry(sio, None, rate_limit=0, rate_burst=0)  # type: ignore[arg-type]
    handlers = SocketHandlers(sio, None, sockets, None, None)  # type: ignore[arg-type]
    sockets.add("sid1", None)
    adapter = handlers._adapter("broken", EventSpec(Empty, EmptyResult, "EmptyResult", "", guest=True), broken)
    ack = await adapter("sid1", {})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "internal"
    assert "a bug" not in ack["error"]["message"]  # internals stay in the log
