"""REST table access, CORS and settings, against the real server."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.conftest import FAST_SETTINGS, ROOT, Client, ServerProcess, free_port, login, unique_user

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]

COLUMNS = [
    ("id", "integer"),
    ("user", "text"),
    ("broker", "text"),
    ("API key", "text"),
    ("API secret", "text"),
    ("pnl", "number"),
    ("margin", "number"),
    ("max_risk", "integer"),
]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
DEFAULT_ORIGINS = ("http://localhost:3000", "https://blackrose-frontend.pages.dev")
STRANGER = "http://evil.example"
SETTINGS = [
    "HOST",
    "PORT",
    "DATA_DIR",
    "SECRET_KEY",
    "TOKEN_TTL_S",
    "AUTO_REGISTER",
    "CORS_ORIGINS",
    "LOCK_TTL_S",
    "EDIT_COOLDOWN_S",
    "LOCK_SWEEP_S",
    "LOCK_GRACE_S",
    "HISTORY_KEEP",
    "RANDOM_INTERVAL_S",
    "RANDOM_RETENTION_S",
    "BACKUP_INTERVAL_S",
    "BACKUP_KEEP",
    "MAX_PAYLOAD_BYTES",
    "MAX_CELL_CHARS",
    "RATE_LIMIT",
    "LOGIN_RATE_LIMIT",
    "ADMIN_USERS",
    "ALLOWED_HOSTS",
    "MAX_SEND_QUEUE_BYTES",
    "CSV_FLUSH_S",
    "LOG_LEVEL",
]


async def get(
    url: str, token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=sent) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def get_json(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    status, _, raw = await get(url, token)
    body = json.loads(raw)
    assert isinstance(body, dict), body
    return status, body


def assert_invalid(status: int, body: dict[str, Any], field: str) -> None:
    assert status == 400, body
    assert body["ok"] is False
    assert body["error"]["code"] == "invalid_input", body
    assert body["error"]["field"] == field, body


def parse_csv(raw: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))


def escaped(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


# ---- GET /api/fetch_csv as JSON ------------------------------------------------------------


async def test_fetch_csv_answers_a_json_page(server: ServerProcess) -> None:
    status, body = await get_json(f"{server.url}/api/fetch_csv", await login(server.url))
    assert status == 200, body
    assert set(body) == {"ok", "columns", "rows", "total", "seq", "locks"}
    assert body["ok"] is True
    assert [(c["name"], c["type"]) for c in body["columns"]] == COLUMNS
    assert body["total"] >= 100
    assert len(body["rows"]) == min(body["total"], 1000)
    assert isinstance(body["seq"], int)
    assert isinstance(body["locks"], list)
    first = body["rows"][0]
    assert first["id"] == 1
    assert isinstance(first["version"], int)
    assert first["values"]["user"] == "user_1"
    assert isinstance(first["values"]["pnl"], float | int)
    assert isinstance(first["values"]["max_risk"], int)
    ids = [row["id"] for row in body["rows"]]
    assert len(set(ids)) == len(ids)


async def test_fetch_csv_pages_with_offset_and_limit(server: ServerProcess) -> None:
    token = await login(server.url)
    _, whole = await get_json(f"{server.url}/api/fetch_csv?limit=10000", token)
    status, page = await get_json(f"{server.url}/api/fetch_csv?offset=2&limit=3", token)
    assert status == 200, page
    assert page["rows"] == whole["rows"][2:5]
    assert page["total"] == whole["total"]
    _, tail = await get_json(f"{server.url}/api/fetch_csv?offset={whole['total'] - 1}&limit=5", token)
    assert tail["rows"] == whole["rows"][-1:]
    _, beyond = await get_json(f"{server.url}/api/fetch_csv?offset={whole['total'] + 10}", token)
    assert beyond["rows"] == []
    assert beyond["total"] == whole["total"]


async def test_fetch_csv_matches_the_socket_event(server: ServerProcess, connect: Connect) -> None:
    token = await login(server.url)
    client = await connect(server.url, token)
    ack = await client.ask("fetch_csv", {"offset": 5, "limit": 7})
    _, body = await get_json(f"{server.url}/api/fetch_csv?offset=5&limit=7", token)
    assert ack == body


async def test_fetch_csv_lists_the_locks(server: ServerProcess, connect: Connect) -> None:
    name = unique_user()
    token = await login(server.url, name)
    client = await connect(server.url, token)
    ack = await client.ask("lock_row", {"id": 3})
    assert ack["ok"] is True, ack
    try:
        _, body = await get_json(f"{server.url}/api/fetch_csv?limit=1", token)
        mine = [lock for lock in body["locks"] if lock["id"] == 3]
        assert len(mine) == 1, body["locks"]
        assert mine[0]["owner"] == name
        assert mine[0]["expires_at"] == ack["lock"]["expires_at"]
    finally:
        await client.ask("unlock_row", {"id": 3})


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=10001", "limit"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("limit=abc", "limit"),
        ("offset=1.5", "offset"),
        ("offset=", "offset"),
        ("limit=1e3", "limit"),
        ("limit=10&bogus=1", "bogus"),
    ],
)
async def test_fetch_csv_bad_query_is_invalid_input(server: ServerProcess, query: str, field: str) -> None:
    status, body = await get_json(f"{server.url}/api/fetch_csv?{query}", await login(server.url))
    assert_invalid(status, body, field)


async def test_fetch_csv_largest_limit_is_accepted(server: ServerProcess) -> None:
    status, body = await get_json(f"{server.url}/api/fetch_csv?limit=10000", await login(server.url))
    assert status == 200, body
    assert len(body["rows"]) == min(body["total"], 10000)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer "}],
    ids=["none", "garbage", "basic", "empty"],
)
async def test_fetch_csv_needs_a_token(server: ServerProcess, headers: dict[str, str]) -> None:
    for query in ("", "?format=csv"):
        status, _, raw = await get(f"{server.url}/api/fetch_csv{query}", headers=headers)
        assert status == 401, raw
        body = json.loads(raw)
        assert body["ok"] is False
        assert body["error"]["code"] == "unauthorized"


# ---- GET /api/fetch_csv as CSV -------------------------------------------------------------


async def add_row(client: Client, values: dict[str, Any]) -> int:
    ack = await client.ask("add_csv", {"values": values})
    assert ack["ok"] is True, ack
    return int(ack["row"]["id"])


@pytest.mark.parametrize(
    ("query", "headers"),
    [("?format=csv", {}), ("", {"Accept": "text/csv"}), ("?limit=1&format=csv", {})],
    ids=["format", "accept", "format-with-limit"],
)
async def test_csv_download_is_the_whole_table(server: ServerProcess, query: str, headers: dict[str, str]) -> None:
    token = await login(server.url)
    _, page = await get_json(f"{server.url}/api/fetch_csv?limit=10000", token)
    status, got_headers, raw = await get(f"{server.url}/api/fetch_csv{query}", token, headers)
    assert status == 200, raw
    assert got_headers["Content-Type"].startswith("text/csv")
    lines = parse_csv(raw)
    assert lines[0] == [name for name, _ in COLUMNS]
    body = lines[1:]
    assert len(body) == page["total"]
    for row, line in zip(page["rows"], body, strict=True):
        assert line[0] == str(row["id"])
        for (name, kind), cell in zip(COLUMNS[1:], line[1:], strict=True):
            value = row["values"][name]
            if value is None:
                assert cell == ""
            elif kind == "text":
                assert cell == escaped(value)
            else:
                assert float(cell) == value


def csv_rows_by_id(raw: bytes) -> dict[str, dict[str, str]]:
    names = [name for name, _ in COLUMNS]
    lines = parse_csv(raw)
    assert lines[0] == names
    broken = [line for line in lines[1:] if len(line) != len(names)]
    assert broken == [], "the CSV download does not parse back into rows of the header's width"
    return {line[0]: dict(zip(names, line, strict=True)) for line in lines[1:]}


async def test_csv_download_escapes_formula_text_but_not_numbers(server: ServerProcess, connect: Connect) -> None:
    token = await login(server.url)
    client = await connect(server.url, token)
    risky = await add_row(
        client,
        {
            "user": "=SUM(A1:A9)",
            "broker": "+cmd|' /C calc'!A0",
            "API key": "-2+3",
            "API secret": "@SUM(1)",
            "pnl": -1349.18,
            "margin": -0.5,
            "max_risk": -7,
        },
    )
    controls = await add_row(
        client,
        {
            "user": "\tTabbed",
            "broker": "a,b",
            "API key": "a=b",
            "API secret": "-",
            "pnl": 12.25,
            "margin": 0,
            "max_risk": 0,
        },
    )
    plain = await add_row(
        client,
        {
            "user": "plain",
            "broker": " =spaced",
            "API key": "'quoted",
            "API secret": "x-y",
            "pnl": -0.01,
            "margin": 1,
            "max_risk": 1,
        },
    )
    _, _, raw = await get(f"{server.url}/api/fetch_csv?format=csv", token)
    by_id = csv_rows_by_id(raw)

    row = by_id[str(risky)]
    assert row["user"] == "'=SUM(A1:A9)"
    assert row["broker"] == "'+cmd|' /C calc'!A0"
    assert row["API key"] == "'-2+3"
    assert row["API secret"] == "'@SUM(1)"
    assert row["pnl"] == "-1349.18"
    assert float(row["margin"]) == -0.5
    assert not row["margin"].startswith("'")
    assert row["max_risk"] == "-7"

    row = by_id[str(controls)]
    assert row["user"] == "'\tTabbed"
    assert row["broker"] == "a,b"
    assert row["API key"] == "a=b"
    assert row["API secret"] == "'-"
    assert float(row["margin"]) == 0

    row = by_id[str(plain)]
    assert row["user"] == "plain"
    assert row["broker"] == " =spaced"
    assert row["API key"] == "'quoted"
    assert row["API secret"] == "x-y"
    assert row["pnl"] == "-0.01"

    _, page = await get_json(f"{server.url}/api/fetch_csv?limit=10000", token)
    values = {r["id"]: r["values"] for r in page["rows"]}
    assert values[risky]["user"] == "=SUM(A1:A9)"
    assert values[controls]["user"] == "\tTabbed"


async def test_csv_download_escapes_text_starting_with_a_carriage_return(
    server: ServerProcess, connect: Connect
) -> None:
    token = await login(server.url)
    client = await connect(server.url, token)
    row_id = await add_row(
        client,
        {
            "user": "\rCarriage",
            "broker": "mid\rdle",
            "API key": "line\nfeed",
            "API secret": "s",
            "pnl": -3.5,
            "margin": 1,
            "max_risk": 1,
        },
    )
    try:
        _, _, raw = await get(f"{server.url}/api/fetch_csv?format=csv", token)
        row = csv_rows_by_id(raw)[str(row_id)]
        assert row["user"] == "'\rCarriage"
        assert row["broker"] == "mid\rdle"
        assert row["API key"] == "line\nfeed"
        assert row["pnl"] == "-3.5"
    finally:
        assert (await client.ask("lock_row", {"id": row_id}))["ok"] is True
        assert (await client.ask("delete_csv", {"id": row_id}))["ok"] is True


# ---- CORS ----------------------------------------------------------------------------------


async def preflight(url: str, origin: str, method: str = "POST", headers: str = "content-type") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.options(
            url,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": headers,
            },
        ) as resp,
    ):
        return resp.status, resp.headers


async def socketio_handshake(url: str, origin: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers


async def assert_origin_allowed(url: str, origin: str, token: str) -> None:
    status, headers = await preflight(f"{url}/api/login", origin)
    assert status == 200
    assert headers.get("Access-Control-Allow-Origin") == origin
    status, headers = await preflight(f"{url}/api/fetch_csv", origin, "GET", "authorization")
    assert status == 200
    assert headers.get("Access-Control-Allow-Origin") == origin
    assert "authorization" in headers.get("Access-Control-Allow-Headers", "").lower()
    status, got, _ = await get(f"{url}/api/fetch_csv?limit=1", token, {"Origin": origin})
    assert status == 200
    assert got.get("Access-Control-Allow-Origin") == origin
    status, headers = await socketio_handshake(url, origin)
    assert status == 200
    assert headers.get("Access-Control-Allow-Origin") == origin


async def assert_origin_refused(url: str, origin: str, token: str) -> None:
    _, headers = await preflight(f"{url}/api/login", origin)
    assert "Access-Control-Allow-Origin" not in headers
    _, headers = await preflight(f"{url}/api/fetch_csv", origin, "GET", "authorization")
    assert "Access-Control-Allow-Origin" not in headers
    status, got, _ = await get(f"{url}/api/fetch_csv?limit=1", token, {"Origin": origin})
    assert status == 200
    assert "Access-Control-Allow-Origin" not in got
    status, headers = await socketio_handshake(url, origin)
    assert status != 200
    assert headers.get("Access-Control-Allow-Origin") != origin


@pytest.mark.parametrize("origin", DEFAULT_ORIGINS)
async def test_cors_allows_the_default_origins(server: ServerProcess, origin: str) -> None:
    await assert_origin_allowed(server.url, origin, await login(server.url))


async def test_cors_ignores_an_unlisted_origin(server: ServerProcess) -> None:
    token = await login(server.url)
    await assert_origin_refused(server.url, STRANGER, token)
    await assert_origin_refused(server.url, "http://localhost:3001", token)


async def test_cors_origins_setting_replaces_the_list(make_server: MakeServer, connect: Connect) -> None:
    srv = make_server({"CORS_ORIGINS": "http://a.example, http://b.example:8080"})
    token = await login(srv.url)
    await assert_origin_allowed(srv.url, "http://a.example", token)
    await assert_origin_allowed(srv.url, "http://b.example:8080", token)
    await assert_origin_refused(srv.url, "http://localhost:3000", token)
    client = await connect(srv.url, token, headers={"Origin": "http://a.example"})
    assert (await client.ask("fetch_csv", {"limit": 1}))["ok"] is True
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(srv.url, token, headers={"Origin": "http://localhost:3000"})


# ---- settings ------------------------------------------------------------------------------


def run_env(tmp_path: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(FAST_SETTINGS)
    env.update({"HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data")})
    env.update(settings)
    return env


@pytest.mark.parametrize(
    ("settings", "flags", "named"),
    [
        ({"AUTO_REGISTER": "maybe"}, [], "AUTO_REGISTER"),
        ({"LOCK_TTL_S": "abc"}, [], "LOCK_TTL_S"),
        ({"PORT": "eighty"}, [], "PORT"),
        ({"TOKEN_TTL_S": "1.5"}, [], "TOKEN_TTL_S"),
        ({}, ["--auto-register", "maybe"], "AUTO_REGISTER"),
        ({}, ["--lock-ttl-s", "abc"], "LOCK_TTL_S"),
        ({"LOCK_TTL_S": "5"}, ["--lock-ttl-s", "soon"], "LOCK_TTL_S"),
    ],
    ids=["bool-env", "number-env", "port-env", "int-env", "bool-flag", "number-flag", "flag-over-good-env"],
)
def test_bad_setting_stops_the_server_naming_it(
    tmp_path: Path, settings: dict[str, str], flags: list[str], named: str
) -> None:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "run.py"), *flags],
            cwd=ROOT,
            env=run_env(tmp_path, settings),
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started despite a bad setting")
    assert done.returncode != 0
    assert named in done.stderr.decode()
    assert time.monotonic() - started < 10


def test_help_lists_every_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"],
        cwd=ROOT,
        env=run_env(tmp_path, {}),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    missing = [name for name in SETTINGS if "--" + name.lower().replace("_", "-") not in text or name not in text]
    assert missing == []
    assert not (tmp_path / "data").exists()


@contextlib.asynccontextmanager
async def server_with_flags(tmp_path: Path, settings: dict[str, str], flags: list[str]) -> AsyncIterator[str]:
    env = run_env(tmp_path, settings)
    url = f"http://127.0.0.1:{env['PORT']}"
    log_path = tmp_path / "flags-server.log"
    log = log_path.open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "run.py"),
        *flags,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    pytest.fail(f"server exited: {log_path.read_text(errors='replace')}")
                assert time.monotonic() < deadline, "server did not start"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_flags_win_over_the_environment(tmp_path: Path, connect: Connect) -> None:
    async with server_with_flags(
        tmp_path,
        {"LOCK_TTL_S": "5", "AUTO_REGISTER": "YES"},
        ["--lock-ttl-s", "1", "--auto-register", "Off"],
    ) as url:
        name = unique_user()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/api/login", json={"username": name, "password": "pw"}) as resp:
                assert resp.status == 401
            async with http.post(f"{url}/api/register", json={"username": name, "password": "pw"}) as resp:
                assert resp.status == 201
        client = await connect(url, await login(url, name, "pw"))
        before = time.time() * 1000
        ack = await client.ask("lock_row", {"id": 1})
        after = time.time() * 1000
        await client.disconnect()
        assert ack["ok"] is True, ack
        assert before + 1000 - 300 <= ack["lock"]["expires_at"] <= after + 1000 + 300
