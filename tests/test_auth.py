"""Authentication: REST and socket register/login/logout, connect auth, JWT handling, secrets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import socketio

from tests.conftest import ROOT, Client, ServerProcess, free_port, login, unique_user

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET_KEY = "k" * 32  # the shortest key the server accepts
PASSWORD = "secret-pw"
SAMPLE_ROW = {
    "user": "switched",
    "broker": "Zerodha",
    "API key": "k",
    "API secret": "s",
    "pnl": 1.5,
    "margin": 100.0,
    "max_risk": 3,
}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", {"SECRET_KEY": SECRET_KEY}).start()
    yield proc
    proc.stop()


async def request(
    method: str,
    url: str,
    *,
    body: Any = None,
    data: str | bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        kwargs: dict[str, Any] = {"headers": sent}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with http.request(method, url, **kwargs) as resp:
            payload = await resp.json(content_type=None)
            assert isinstance(payload, dict), payload
            return resp.status, payload


async def rest_login(url: str, username: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
    return await request("POST", f"{url}/api/login", body={"username": username, "password": password})


async def rest_register(url: str, username: str, password: str = PASSWORD) -> tuple[int, dict[str, Any]]:
    return await request("POST", f"{url}/api/register", body={"username": username, "password": password})


async def rest_fetch_status(url: str, token: str) -> int:
    status, body = await request("GET", f"{url}/api/fetch_csv?limit=1", token=token)
    if status != 200:
        assert body["ok"] is False
        assert body["error"]["code"] == "unauthorized", body
    return status


def assert_error(status: int, body: dict[str, Any], http_status: int, code: str) -> None:
    assert status == http_status, body
    assert body["ok"] is False, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)


async def connect_error(
    url: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """Connect expecting a refusal; returns the data of the client's connect_error event."""
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []

    async def on_connect_error(data: Any = None) -> None:
        errors.append(data)

    client.on("connect_error", on_connect_error)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(
                url,
                auth={"token": token} if token is not None else None,
                headers=headers or {},
                transports=["websocket"],
                wait_timeout=10,
            )
    finally:
        await client.disconnect()
    assert errors, "connect_error was not raised"
    return errors[0]


@contextlib.asynccontextmanager
async def polling_client(url: str, token: str | None = None, **kwargs: Any) -> AsyncIterator[Client]:
    """A long-polling client, dropped without waiting for its pending poll to return."""
    client = Client()
    await client.connect(
        url, auth={"token": token} if token else None, transports=["polling"], wait_timeout=10, **kwargs
    )
    try:
        yield client
    finally:
        await client.drop()


async def raw_polling_connect(url: str, auth: dict[str, Any] | None) -> tuple[str, Any]:
    """Engine.IO v4 long-polling by hand: open, send the CONNECT packet, read the answer."""
    async with aiohttp.ClientSession() as http:
        base = f"{url}/socket.io/?EIO=4&transport=polling"
        async with http.get(base) as resp:
            assert resp.status == 200
            opened = await resp.text()
        assert opened.startswith("0"), opened
        sid = json.loads(opened[1:])["sid"]
        connect_packet = "40" + (json.dumps(auth) if auth is not None else "")
        async with http.post(f"{base}&sid={sid}", data=connect_packet.encode()) as resp:
            assert resp.status == 200
        async with http.get(f"{base}&sid={sid}") as resp:
            assert resp.status == 200
            answer = await resp.text()
        first = answer.split("\x1e")[0]
        assert first[:2] in ("40", "44"), answer
        data = json.loads(first[2:]) if len(first) > 2 else None
        with contextlib.suppress(aiohttp.ClientError):
            async with http.post(f"{base}&sid={sid}", data=b"1"):
                pass
        return first[:2], data


async def assert_refused(url: str, **kwargs: Any) -> None:
    data = await connect_error(url, **kwargs)
    assert isinstance(data, dict), data
    assert data["code"] == "unauthorized", data
    assert isinstance(data["message"], str)


async def is_authenticated(client: Client) -> bool:
    ack = await client.ask("fetch_csv", {"limit": 1})
    if ack["ok"]:
        return True
    assert ack["error"]["code"] == "unauthorized", ack
    return False


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    claims = jwt.decode(token, options={"verify_signature": False})
    assert isinstance(claims, dict)
    return claims


# ---- REST register / login / logout ------------------------------------------------------


async def test_register_answers_201_with_the_username(server: ServerProcess) -> None:
    name = unique_user()
    status, body = await rest_register(server.url, name)
    assert status == 201, body
    assert body == {"ok": True, "username": name}


async def test_register_twice_is_username_taken_and_keeps_the_first_password(server: ServerProcess) -> None:
    name = unique_user()
    assert (await rest_register(server.url, name, "first-pw"))[0] == 201
    status, body = await rest_register(server.url, name, "second-pw")
    assert_error(status, body, 409, "username_taken")
    assert (await rest_login(server.url, name, "first-pw"))[0] == 200
    assert_error(*await rest_login(server.url, name, "second-pw"), 401, "unauthorized")


async def test_login_returns_a_bearer_token_expiring_after_the_ttl(server: ServerProcess) -> None:
    name = unique_user()
    assert (await rest_register(server.url, name))[0] == 201
    before = time.time() * 1000
    status, body = await rest_login(server.url, name)
    after = time.time() * 1000
    assert status == 200, body
    assert set(body) == {"ok", "access_token", "token_type", "expires_at", "username"}
    assert body["ok"] is True
    assert body["token_type"] == "bearer"
    assert body["username"] == name
    assert isinstance(body["expires_at"], int)
    assert before + 86400_000 - 2000 <= body["expires_at"] <= after + 86400_000 + 1000
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = claims_of(token)
    assert claims["sub"] == name
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["exp"] * 1000 == body["expires_at"]
    assert isinstance(claims["jti"], str)
    assert claims["jti"]
    assert await rest_fetch_status(server.url, token) == 200


async def test_each_login_issues_a_distinct_session(server: ServerProcess) -> None:
    name = unique_user()
    first = await login(server.url, name)
    second = await login(server.url, name)
    assert claims_of(first)["jti"] != claims_of(second)["jti"]


async def test_wrong_password_is_unauthorized(server: ServerProcess) -> None:
    name = unique_user()
    assert (await rest_register(server.url, name, "right-pw"))[0] == 201
    assert_error(*await rest_login(server.url, name, "wrong-pw"), 401, "unauthorized")


async def test_auto_register_creates_the_user_on_first_login(server: ServerProcess) -> None:
    name = unique_user()
    status, body = await rest_login(server.url, name, "chosen-pw")
    assert status == 200, body
    assert body["username"] == name
    assert (await rest_login(server.url, name, "chosen-pw"))[0] == 200
    assert_error(*await rest_login(server.url, name, "other-pw"), 401, "unauthorized")
    assert_error(*await rest_register(server.url, name, "chosen-pw"), 409, "username_taken")


async def test_without_auto_register_unknown_users_are_unauthorized(make_server: MakeServer) -> None:
    srv = make_server({"AUTO_REGISTER": "false"})
    name = unique_user()
    assert_error(*await rest_login(srv.url, name), 401, "unauthorized")
    assert_error(*await rest_login(srv.url, name), 401, "unauthorized")
    status, body = await rest_register(srv.url, name)
    assert status == 201, body
    assert (await rest_login(srv.url, name))[0] == 200
    assert_error(*await rest_login(srv.url, name, "other-pw"), 401, "unauthorized")


async def test_logout_revokes_only_that_token(server: ServerProcess, connect: Connect) -> None:
    name = unique_user()
    token = await login(server.url, name)
    other = await login(server.url, name)
    status, body = await request("POST", f"{server.url}/api/logout", token=token)
    assert status == 200, body
    assert body == {"ok": True}
    assert await rest_fetch_status(server.url, token) == 401
    assert_error(*await request("POST", f"{server.url}/api/logout", token=token), 401, "unauthorized")
    await assert_refused(server.url, token=token)
    assert await rest_fetch_status(server.url, other) == 200
    assert await is_authenticated(await connect(server.url, other))


async def test_logout_without_a_token_is_unauthorized(server: ServerProcess) -> None:
    assert_error(*await request("POST", f"{server.url}/api/logout"), 401, "unauthorized")
    assert_error(
        *await request("POST", f"{server.url}/api/logout", headers={"Authorization": "Basic dXNlcjpwdw=="}),
        401,
        "unauthorized",
    )


# ---- invalid input -------------------------------------------------------------------------

BAD_CREDENTIALS = [
    pytest.param({"username": "someone"}, "password", id="missing password"),
    pytest.param({"password": "pw"}, "username", id="missing username"),
    pytest.param({"username": "someone", "password": "pw", "admin": True}, "admin", id="unknown field"),
    pytest.param({"username": 123, "password": "pw"}, "username", id="username not a string"),
    pytest.param({"username": "someone", "password": ["pw"]}, "password", id="password not a string"),
    pytest.param({"username": "someone", "password": None}, "password", id="password null"),
]


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
@pytest.mark.parametrize(("body", "field"), BAD_CREDENTIALS)
async def test_rest_credentials_of_the_wrong_shape_are_invalid_input(
    server: ServerProcess, path: str, body: Any, field: str
) -> None:
    status, answer = await request("POST", f"{server.url}{path}", body=body)
    assert_error(status, answer, 400, "invalid_input")
    assert answer["error"]["field"] == field


@pytest.mark.parametrize("path", ["/api/register", "/api/login"])
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ("", "application/json"),
        ("username=a&password=b", "application/x-www-form-urlencoded"),
        ('["someone", "pw"]', "application/json"),
        ('"someone"', "application/json"),
        ("42", "application/json"),
        ("null", "application/json"),
    ],
    ids=["broken", "empty", "form", "array", "string", "number", "null"],
)
async def test_rest_bodies_that_are_not_a_json_object_are_invalid_input(
    server: ServerProcess, path: str, data: str, content_type: str
) -> None:
    status, answer = await request(
        "POST", f"{server.url}{path}", data=data.encode(), headers={"Content-Type": content_type}
    )
    assert_error(status, answer, 400, "invalid_input")
    assert isinstance(answer["error"].get("field"), str), answer
    assert answer["error"]["field"]


async def test_rest_bad_input_registers_nobody(server: ServerProcess) -> None:
    name = unique_user()
    status, _ = await request("POST", f"{server.url}/api/register", body={"username": name, "password": 5})
    assert status == 400
    assert (await rest_register(server.url, name))[0] == 201


async def test_rest_body_over_max_payload_bytes_is_payload_too_large(server: ServerProcess) -> None:
    def body_of(size: int) -> bytes:
        prefix = b'{"username": "big", "password": "'
        suffix = b'"}'
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    headers = {"Content-Type": "application/json"}
    for path in ("/api/register", "/api/login"):
        status, answer = await request("POST", f"{server.url}{path}", data=body_of(65537), headers=headers)
        assert_error(status, answer, 413, "payload_too_large")
        status, answer = await request("POST", f"{server.url}{path}", data=body_of(65536), headers=headers)
        assert_error(status, answer, 400, "invalid_input")
        assert answer["error"]["field"] == "password"


# ---- socket register / login / logout ------------------------------------------------------


async def test_guest_socket_may_ping_register_and_login_only(server: ServerProcess, connect: Connect) -> None:
    guest = await connect(server.url)
    before = time.time() * 1000
    pong = await guest.ask("ping", {})
    assert pong["ok"] is True, pong
    assert before - 1000 <= pong["ts"] <= time.time() * 1000 + 1000
    assert (await guest.ask("ping"))["ok"] is True

    seq = (await request("GET", f"{server.url}/api/fetch_csv?limit=1", token=await login(server.url)))[1]["seq"]
    refused = {
        "logout": {},
        "fetch_csv": {},
        "add_csv": {"values": {"user": "guest"}},
        "update_csv": {"id": 1, "values": {"user": "guest"}},
        "delete_csv": {"id": 1},
        "lock_row": {"id": 1},
        "unlock_row": {"id": 1},
        "list_backups": {},
        "restore_backup": {},
        "numbers": {},
        "subscribe": {"stream": "random_number"},
        "unsubscribe": {"stream": "random_number"},
        "ohlc-stream": {},
    }
    for event, payload in refused.items():
        ack = await guest.ask(event, payload)
        assert ack["ok"] is False, (event, ack)
        assert ack["error"]["code"] == "unauthorized", (event, ack)
    status, page = await request("GET", f"{server.url}/api/fetch_csv?limit=1", token=await login(server.url))
    assert status == 200
    assert page["seq"] == seq
    assert page["rows"][0]["id"] == 1

    name = unique_user()
    ack = await guest.ask("register", {"username": name, "password": PASSWORD})
    assert ack == {"ok": True, "username": name}
    ack = await guest.ask("register", {"username": name, "password": PASSWORD})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "username_taken"


async def test_guest_socket_gets_no_broadcasts(server: ServerProcess, connect: Connect) -> None:
    guest = await connect(server.url)
    member = await connect(server.url, await login(server.url))
    await member.wait_for("random_number", timeout=5)
    await asyncio.sleep(0.6)
    assert guest.events == []


async def test_socket_login_authenticates_the_socket(server: ServerProcess, connect: Connect) -> None:
    guest = await connect(server.url)
    assert not await is_authenticated(guest)
    name = unique_user()
    ack = await guest.ask("login", {"username": name, "password": PASSWORD})
    assert ack["ok"] is True, ack
    assert set(ack) == {"ok", "access_token", "token_type", "expires_at", "username"}
    assert ack["token_type"] == "bearer"
    assert ack["username"] == name
    assert abs(ack["expires_at"] - (time.time() * 1000 + 86400_000)) < 5000
    assert await is_authenticated(guest)
    await guest.wait_for("random_number", timeout=5)
    assert await rest_fetch_status(server.url, ack["access_token"]) == 200


async def test_socket_login_with_a_wrong_password_leaves_a_guest(server: ServerProcess, connect: Connect) -> None:
    name = unique_user()
    assert (await rest_register(server.url, name))[0] == 201
    guest = await connect(server.url)
    ack = await guest.ask("login", {"username": name, "password": "wrong-pw"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unauthorized"
    assert not await is_authenticated(guest)


async def test_socket_login_as_another_user_switches_the_socket(server: ServerProcess, connect: Connect) -> None:
    client = await connect(server.url, await login(server.url))
    other = unique_user()
    ack = await client.ask("login", {"username": other, "password": PASSWORD})
    assert ack["ok"] is True, ack
    added = await client.ask("add_csv", {"values": SAMPLE_ROW})
    assert added["ok"] is True, added
    update = await client.wait_for("csv_update", lambda d: d["op"] == "add" and d["row"]["id"] == added["row"]["id"])
    assert update["by"] == other


@pytest.mark.parametrize("event", ["register", "login"])
@pytest.mark.parametrize(("body", "field"), BAD_CREDENTIALS)
async def test_socket_credentials_of_the_wrong_shape_are_invalid_input(
    server: ServerProcess, connect: Connect, event: str, body: Any, field: str
) -> None:
    guest = await connect(server.url)
    ack = await guest.ask(event, body)
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == "invalid_input"
    assert ack["error"]["field"] == field


@pytest.mark.parametrize("payload", [["someone", "pw"], "someone", 42], ids=["array", "string", "number"])
async def test_socket_payload_that_is_not_an_object_is_invalid_input(
    server: ServerProcess, connect: Connect, payload: Any
) -> None:
    guest = await connect(server.url)
    for event in ("register", "login"):
        ack = await guest.ask(event, payload)
        assert ack["ok"] is False, ack
        assert ack["error"]["code"] == "invalid_input"
        assert isinstance(ack["error"].get("field"), str), ack


async def test_socket_logout_demotes_the_socket_and_revokes_its_token(server: ServerProcess, connect: Connect) -> None:
    token = await login(server.url)
    client = await connect(server.url, token)
    assert await is_authenticated(client)
    ack = await client.ask("logout", {})
    assert ack == {"ok": True}
    assert not await is_authenticated(client)
    assert (await client.ask("ping", {}))["ok"] is True
    ack = await client.ask("logout", {})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unauthorized"
    assert await rest_fetch_status(server.url, token) == 401
    await assert_refused(server.url, token=token)

    client.events.clear()
    await asyncio.sleep(0.6)
    assert client.of("random_number") == []

    ack = await client.ask("login", {"username": unique_user(), "password": PASSWORD})
    assert ack["ok"] is True
    assert await is_authenticated(client)


async def test_socket_logout_after_socket_login_revokes_the_new_token(server: ServerProcess, connect: Connect) -> None:
    guest = await connect(server.url)
    ack = await guest.ask("login", {"username": unique_user(), "password": PASSWORD})
    token = ack["access_token"]
    assert (await guest.ask("logout", {}))["ok"] is True
    assert not await is_authenticated(guest)
    assert await rest_fetch_status(server.url, token) == 401


async def test_rest_logout_demotes_sockets_connected_with_that_token(server: ServerProcess, connect: Connect) -> None:
    name = unique_user()
    token = await login(server.url, name)
    other = await login(server.url, name)
    first = await connect(server.url, token)
    bystander = await connect(server.url, other)
    async with polling_client(server.url, token) as second:
        for client in (first, second, bystander):
            assert await is_authenticated(client)
        status, _ = await request("POST", f"{server.url}/api/logout", token=token)
        assert status == 200
        assert not await is_authenticated(first)
        assert not await is_authenticated(second)
        assert await is_authenticated(bystander)


# ---- connect auth --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_client(
    connect: Connect, url: str, transport: str, token: str | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    if transport == "polling":
        async with polling_client(url, token, **kwargs) as client:
            yield client
    else:
        yield await connect(url, token, transports=[transport], **kwargs)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_with_auth_token(server: ServerProcess, connect: Connect, transport: str) -> None:
    token = await login(server.url)
    async with open_client(connect, server.url, transport, token) as client:
        assert await is_authenticated(client)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_with_bearer_header(server: ServerProcess, connect: Connect, transport: str) -> None:
    headers = {"Authorization": f"Bearer {await login(server.url)}"}
    async with open_client(connect, server.url, transport, headers=headers) as client:
        assert await is_authenticated(client)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_with_query_token(server: ServerProcess, connect: Connect, transport: str) -> None:
    token = await login(server.url)
    async with open_client(connect, f"{server.url}/?token={token}", transport) as client:
        assert await is_authenticated(client)


async def test_connect_without_a_token_is_a_guest(server: ServerProcess, connect: Connect) -> None:
    client = await connect(server.url)
    assert client.connected
    assert not await is_authenticated(client)


async def test_auth_token_comes_before_header_and_query(server: ServerProcess, connect: Connect) -> None:
    good = await login(server.url)
    client = await connect(f"{server.url}/?token=garbage", good, headers={"Authorization": "Bearer garbage"})
    assert await is_authenticated(client)
    await assert_refused(server.url, token="garbage", headers={"Authorization": f"Bearer {good}"})


async def test_header_comes_before_query(server: ServerProcess, connect: Connect) -> None:
    good = await login(server.url)
    client = await connect(f"{server.url}/?token=garbage", headers={"Authorization": f"Bearer {good}"})
    assert await is_authenticated(client)
    await assert_refused(f"{server.url}/?token={good}", headers={"Authorization": "Bearer garbage"})


def tampered(token: str) -> str:
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["sub"] = unique_user("intruder")
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


@pytest.mark.parametrize("via", ["auth", "header", "query"])
@pytest.mark.parametrize("kind", ["garbage", "tampered", "revoked"])
async def test_connect_with_a_bad_token_is_refused(server: ServerProcess, via: str, kind: str) -> None:
    token = await login(server.url)
    if kind == "garbage":
        bad = "not-a-jwt"
    elif kind == "tampered":
        bad = tampered(token)
    else:
        assert (await request("POST", f"{server.url}/api/logout", token=token))[0] == 200
        bad = token
    if via == "auth":
        await assert_refused(server.url, token=bad)
    elif via == "header":
        await assert_refused(server.url, headers={"Authorization": f"Bearer {bad}"})
    else:
        await assert_refused(f"{server.url}/?token={bad}")
    assert await rest_fetch_status(server.url, bad) == 401


async def test_connect_refusal_on_the_wire_carries_the_code_for_every_client(server: ServerProcess) -> None:
    kind, data = await raw_polling_connect(server.url, {"token": "not-a-jwt"})
    assert kind == "44", data
    assert data["code"] == "unauthorized", data
    assert isinstance(data["message"], str)
    assert data["data"]["code"] == "unauthorized", data
    assert isinstance(data["data"]["message"], str)
    kind, data = await raw_polling_connect(server.url, {"token": await login(server.url)})
    assert kind == "40", data
    assert isinstance(data["sid"], str)


async def test_expired_token_is_refused(make_server: MakeServer, connect: Connect) -> None:
    srv = make_server({"TOKEN_TTL_S": "1"})
    name = unique_user()
    for _ in range(5):
        status, body = await rest_login(srv.url, name)
        assert status == 200, body
        assert abs(body["expires_at"] - time.time() * 1000 - 1000) <= 1500
        if body["expires_at"] - time.time() * 1000 > 500:
            break
        await asyncio.sleep(body["expires_at"] / 1000 - time.time() + 0.05)
    token = body["access_token"]
    client = await connect(srv.url, token)
    assert await is_authenticated(client)
    await asyncio.sleep(max(0.0, body["expires_at"] / 1000 - time.time()) + 0.3)
    assert await rest_fetch_status(srv.url, token) == 401
    await assert_refused(srv.url, token=token)
    assert not await is_authenticated(client)


# ---- JWT attacks ---------------------------------------------------------------------------


def forge(token: str, kind: str) -> str:
    claims = claims_of(token)
    if kind == "resigned":
        return jwt.encode(claims, SECRET_KEY, algorithm="HS256")
    if kind == "alg none":
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{b64url(json.dumps(claims).encode())}."
    if kind == "alg none keeping the signature":
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{token.split('.')[1]}.{token.split('.')[2]}"
    if kind == "other key":
        return jwt.encode(claims, "x" * 48, algorithm="HS256")
    if kind == "HS512 with the right key":
        return jwt.encode(claims, SECRET_KEY, algorithm="HS512")
    if kind == "HS384 with the right key":
        return jwt.encode(claims, SECRET_KEY, algorithm="HS384")
    if kind.startswith("no "):
        del claims[kind[3:]]
        return jwt.encode(claims, SECRET_KEY, algorithm="HS256")
    raise AssertionError(kind)


ATTACKS = [
    "alg none",
    "alg none keeping the signature",
    "other key",
    "HS512 with the right key",
    "HS384 with the right key",
    "no jti",
    "no exp",
    "no iat",
    "no sub",
]


async def test_resigning_the_same_claims_with_the_secret_key_is_accepted(
    keyed_server: ServerProcess, connect: Connect
) -> None:
    token = await login(keyed_server.url)
    forged = forge(token, "resigned")
    assert await rest_fetch_status(keyed_server.url, forged) == 200
    assert await is_authenticated(await connect(keyed_server.url, forged))


@pytest.mark.parametrize("kind", ATTACKS)
async def test_forged_tokens_are_refused(keyed_server: ServerProcess, kind: str) -> None:
    forged = forge(await login(keyed_server.url), kind)
    assert await rest_fetch_status(keyed_server.url, forged) == 401
    await assert_refused(keyed_server.url, token=forged)


async def test_a_token_for_an_unknown_session_is_refused(keyed_server: ServerProcess) -> None:
    claims = claims_of(await login(keyed_server.url))
    claims["jti"] = "f" * 32
    forged = jwt.encode(claims, SECRET_KEY, algorithm="HS256")
    assert await rest_fetch_status(keyed_server.url, forged) == 401
    await assert_refused(keyed_server.url, token=forged)


# ---- secrets and password storage ----------------------------------------------------------


async def test_secret_key_setting_signs_the_tokens(keyed_server: ServerProcess, server: ServerProcess) -> None:
    name = unique_user()
    token = await login(keyed_server.url, name)
    assert jwt.decode(token, SECRET_KEY, algorithms=["HS256"])["sub"] == name
    assert await rest_fetch_status(server.url, token) == 401


def test_generated_secret_key_file_is_private(server: ServerProcess) -> None:
    path = server.data_dir / "secret.key"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_size >= 32


async def test_tokens_survive_a_restart_with_the_generated_key(make_server: MakeServer, connect: Connect) -> None:
    srv = make_server()
    key = (srv.data_dir / "secret.key").read_bytes()
    token = await login(srv.url)
    assert srv.stop() == 0
    srv.start()
    assert (srv.data_dir / "secret.key").read_bytes() == key
    assert stat.S_IMODE((srv.data_dir / "secret.key").stat().st_mode) == 0o600
    assert await rest_fetch_status(srv.url, token) == 200
    assert await is_authenticated(await connect(srv.url, token))


@pytest.mark.parametrize("key", ["short", "k" * 31])
def test_short_secret_key_stops_the_server(tmp_path: Path, key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({"SECRET_KEY": key, "HOST": "127.0.0.1", "PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data")})
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "run.py")], cwd=ROOT, env=env, capture_output=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with a short SECRET_KEY")
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr.decode()


async def test_passwords_are_stored_as_salted_argon2id_hashes(server: ServerProcess) -> None:
    first, second = unique_user(), unique_user()
    password = f"plain-{unique_user('pw')}"
    assert (await rest_register(server.url, first, password))[0] == 201
    assert (await rest_login(server.url, second, password))[0] == 200
    db = sqlite3.connect(f"file:{server.data_dir / 'backend.db'}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "users" in tables
        hashes = []
        for name in (first, second):
            cursor = db.execute("SELECT * FROM users WHERE username = ?", (name,))
            rows = cursor.fetchall()
            assert len(rows) == 1, rows
            values = [v for v in rows[0] if isinstance(v, str)]
            assert not any(password in v for v in values), values
            found = [v for v in values if v.startswith("$argon2id$")]
            assert len(found) == 1, values
            hashes.append(found[0])
        assert hashes[0] != hashes[1]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                assert not any(isinstance(v, str) and password in v for v in row), table
    finally:
        db.close()
