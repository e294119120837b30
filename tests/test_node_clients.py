"""The real server driven by the npm `socket.io-client` package under node.

Each scenario in tests/node/ prints one JSON result line and exits non-zero on any failed
check or timeout; these tests start a server, hand the scenario its URL and tokens through
the environment, and assert on the exit code and the reported values. Setup:
`npm ci --prefix tests/node`. Without node or tests/node/node_modules the tests are skipped,
or fail when CI is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Client, ServerProcess, login, node_with, unique_user

NODE_DIR = Path(__file__).resolve().parent / "node"
SETTINGS = {"RANDOM_INTERVAL_S": "0.2"}
CLOSE_WAIT_S = 75


@pytest.fixture
def node() -> str:
    """The node executable, once tests/node has its dependencies installed."""
    return node_with("socket.io-client", NODE_DIR / "node_modules")


async def run_node(node: str, script: str, variables: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a scenario; its last stdout line is its JSON result."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        cwd=NODE_DIR,
        env={**os.environ, **variables},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"{script} did not finish within {timeout} s")
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    assert proc.returncode == 0, f"{script} exited with {proc.returncode}\nstderr:\n{err}\nstdout:\n{out}"
    lines = out.strip().splitlines()
    assert lines, f"{script} printed nothing\nstderr:\n{err}"
    data = json.loads(lines[-1])
    assert isinstance(data, dict), lines[-1]
    assert data["ok"] is True, data
    assert data["scenario"] == script.removesuffix(".mjs"), data
    return data


async def rest_page(url: str, token: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{url}/api/fetch_csv", headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        assert resp.status == 200, body
        assert isinstance(body, dict), body
        return body


async def logout(url: str, token: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/api/logout", headers={"Authorization": f"Bearer {token}"})
        body = await resp.json()
        assert resp.status == 200, body
        assert body == {"ok": True}, body


async def test_websocket_table_scenario(node: str, make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server(SETTINGS)
    user_a, user_b = unique_user("node_a"), unique_user("node_b")
    token_a, token_b = await login(srv.url, user_a), await login(srv.url, user_b)

    result = await run_node(
        node,
        "table_websocket.mjs",
        {
            "TABLECAST_URL": srv.url,
            "TABLECAST_TOKEN_A": token_a,
            "TABLECAST_USER_A": user_a,
            "TABLECAST_TOKEN_B": token_b,
            "TABLECAST_USER_B": user_b,
        },
        timeout=60,
    )

    assert result["transport"] == "websocket"
    columns = result["columns"]
    assert columns[0] == {"name": "id", "type": "integer"}
    assert [c["name"] for c in columns[1:]] == ["user", "broker", "API key", "API secret", "pnl", "margin", "max_risk"]
    assert result["locks_before"] == 0
    assert result["total"] >= 1

    row_id, column, value = result["row_id"], result["column"], result["value"]
    assert column == "pnl"
    assert result["lock"]["owner"] == user_a
    assert result["lock"]["id"] == row_id

    updated = result["updated_row"]
    assert updated["id"] == row_id
    assert updated["values"][column] == value
    assert updated["version"] == result["seq_before"] + 1
    assert result["seq_after"] == updated["version"]
    update = result["csv_update"]
    assert update["op"] == "update"
    assert update["by"] == user_a
    assert update["seq"] == updated["version"]
    assert set(update["before"]) == {column}

    assert result["conflict"]["code"] == "conflict"
    assert result["conflict"]["row"] == updated
    assert result["locked"]["code"] == "locked"
    assert result["locked"]["owner"] == user_a
    assert result["locked"]["expires_at"] == result["lock"]["expires_at"]
    assert result["not_owner"]["code"] == "not_owner"
    assert result["released"]["state"] == "cooldown"
    assert result["released"]["owner"] == user_a
    assert 0 < result["cooldown"]["retry_after"] <= 15

    assert [(e["code"], e["field"]) for e in result["invalid_input"]] == [
        ("invalid_input", "id"),
        ("invalid_input", "colour"),
        ("invalid_input", "offset"),
    ]
    assert result["unknown_event"]["ok"] is False
    assert result["unknown_event"]["error"]["code"] == "invalid_input"
    assert result["unknown_event"]["error"]["field"] == "event"

    cooling = [lock for lock in result["page_after_locks"] if lock["id"] == row_id]
    assert len(cooling) == 1
    assert cooling[0]["state"] == "cooldown"
    assert cooling[0]["owner"] == user_a

    page = await rest_page(srv.url, token_b)
    assert page["seq"] == updated["version"]
    assert [row for row in page["rows"] if row["id"] == row_id] == [updated]


@pytest.mark.timeout(CLOSE_WAIT_S + 75)
async def test_legacy_dashboard_polling_ohlc(
    node: str, make_server: Callable[..., ServerProcess], connect: Callable[..., Awaitable[Client]]
) -> None:
    srv = make_server(SETTINGS)
    token = await login(srv.url)

    result = await run_node(
        node,
        "legacy_dashboard.mjs",
        {"TABLECAST_URL": srv.url, "TABLECAST_TOKEN": token, "TABLECAST_CLOSE_WAIT_MS": str(CLOSE_WAIT_S * 1000)},
        timeout=CLOSE_WAIT_S + 45,
    )

    assert result["transport"] == "polling"
    numbers = result["numbers"]
    assert len(numbers) == 3
    assert all(set(n) == {"value", "ts", "seq"} for n in numbers)
    seqs = [n["seq"] for n in numbers]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert result["random_count"] >= 3
    assert result["ohlc_intervals"] == ["1m"]
    assert result["live"]["interval"] == "1m"
    assert result["live"]["closed"] is False

    bar = result["ohlc_data"]
    assert set(bar) == {"time", "open", "high", "low", "close"}
    assert bar["time"] % 60 == 0
    closed = result["closed_candle"]
    assert {k: v for k, v in closed.items() if k != "ticks"} == {**bar, "interval": "1m", "closed": True}
    assert closed["ticks"] >= 1
    assert result["next_candle"]["time"] == bar["time"] + 60
    assert result["ohlc_data_count"] >= 1
    assert result["close_wait_ms"] <= CLOSE_WAIT_S * 1000

    # The closed candle the node client saw is the one the server rebuilds from stored numbers.
    client: Client = await connect(srv.url, token)
    history = await client.ask("subscribe", {"stream": "ohlc", "interval": "1m", "history": 5})
    assert history["ok"] is True, history
    rebuilt = [c for c in history["candles"] if c["time"] == bar["time"]]
    assert rebuilt == [closed]


async def test_bad_token_and_guest(node: str, make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server(SETTINGS)
    revoked = await login(srv.url)
    await logout(srv.url, revoked)

    variables = {"TABLECAST_URL": srv.url, "TABLECAST_REVOKED_TOKEN": revoked}
    result = await run_node(node, "auth.mjs", variables, timeout=45)

    refused = result["refused"]
    assert set(refused) == {"garbage_auth", "forged_auth", "bad_header_polling", "bad_query", "revoked_auth"}
    for name, refusal in refused.items():
        assert refusal["data"]["code"] == "unauthorized", name
        assert set(refusal["data"]) == {"code", "message"}, name
        assert refusal["data"]["message"], name

    guest = result["guest"]
    assert set(guest["ping"]) == {"ok", "ts"}
    assert abs(guest["ping"]["ts"] - time.time() * 1000) < 60_000
    for event in ("fetch_csv", "lock_row", "ohlc_stream"):
        assert guest[event]["code"] == "unauthorized", event
    assert guest["broadcasts"] == []
