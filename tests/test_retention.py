"""Stored numbers older than RANDOM_RETENTION_S are dropped; the draw seq goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.conftest import Client, ServerProcess, login


async def test_numbers_past_retention_are_pruned(
    make_server: Callable[..., ServerProcess], connect: Callable[..., Awaitable[Client]]
) -> None:
    server = make_server({"RANDOM_INTERVAL_S": "0.1", "RANDOM_RETENTION_S": "1"})
    client = await connect(server.url, await login(server.url))
    await asyncio.sleep(3.2)
    numbers = (await client.ask("numbers", {"limit": 10000}))["numbers"]
    now_ms = time.time() * 1000
    assert numbers
    # pruning runs every half retention period, so nothing is older than 1.5 s (plus slack)
    assert now_ms - numbers[0]["ts"] < 2200, now_ms - numbers[0]["ts"]
    last_seq = client.of("random_number")[-1]["seq"]
    assert last_seq >= 20
    assert len(numbers) < last_seq - 5  # the oldest draws are gone, the seq kept counting
