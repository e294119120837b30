"""Writes under fan-out, against the real server with npm socket.io-client under node: an
editor's ack leaves before the fan-out of its own change, with many receivers and several
editors writing at once (their changes share group commits)."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import ServerProcess, login, unique_user
from tests.test_node_clients import node, run_node

__all__ = ["node"]  # the fixture


async def test_acks_go_out_before_the_broadcast_of_their_change(
    node: str, make_server: Callable[..., ServerProcess]
) -> None:
    srv = make_server({"RANDOM_INTERVAL_S": "60"})
    editors = [await login(srv.url, unique_user("editor")) for _ in range(6)]
    reader = await login(srv.url, unique_user("reader"))
    result = await run_node(
        node,
        "acks_first.mjs",
        {
            "TABLECAST_URL": srv.url,
            "TABLECAST_TOKENS": json.dumps(editors),
            "TABLECAST_READER_TOKEN": reader,
            "TABLECAST_READERS": "300",
            "TABLECAST_UPDATES": "40",
        },
        timeout=150,
    )
    assert result["misordered"] == 0
    assert result["editors"] == 6
