"""Accounts, hosts, headers and file modes (PROTOCOL §9): the login throttle across REST and
sockets, ADMIN_USERS, ALLOWED_HOSTS against DNS rebinding, JSON-only login bodies, the
console's security headers, and an owner-only data directory. Against the real server,
except for the throttle's own unit tests (a pure piece with a clock parameter)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from protocol.errors import RateLimited
from storage.login_throttle import LoginThrottle
from tests.conftest import Client, ServerProcess, login, unique_user

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]


async def post_login(url: str, username: str, password: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/api/login", **kw) as resp:
        return resp.status, await resp.json()


async def rest_login(url: str, username: str, password: str) -> tuple[int, dict[str, Any]]:
    return await post_login(url, username, password, json={"username": username, "password": password})


# ---- the throttle as a pure piece ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_counts_failures_per_user_and_per_address_for_a_minute() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, clock=clock)
    for _ in range(3):
        throttle.begin("alice", "10.0.0.1")  # three failures: never released
    with pytest.raises(RateLimited) as refused:
        throttle.begin("alice", "10.0.0.2")  # another address: the username is at its limit
    assert refused.value.details["retry_after"] == 60
    with pytest.raises(RateLimited):
        throttle.begin("bob", "10.0.0.1")  # another user: the address is at its limit
    throttle.release(throttle.begin("bob", "10.0.0.9"))  # neither at its limit: let in
    clock.now += 59.5
    with pytest.raises(RateLimited) as later:
        throttle.begin("alice", None)
    assert later.value.details["retry_after"] == 0.5
    clock.now += 0.5  # the oldest failures are a minute old
    throttle.begin("alice", "10.0.0.1")


def test_a_success_gives_its_places_back_and_attempts_in_flight_count() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, clock=clock)
    first, second = throttle.begin("carol", "a"), throttle.begin("carol", "a")
    with pytest.raises(RateLimited):  # two guesses still being checked fill the limit
        throttle.begin("carol", "a")
    throttle.release(first)
    throttle.release(second)
    assert throttle.tracked() == 0
    throttle.begin("carol", "a")


def test_a_zero_limit_turns_the_throttle_off() -> None:
    throttle = LoginThrottle(0)
    for _ in range(100):
        throttle.begin("dave", "a")
    assert throttle.tracked() == 0


def test_usernames_tried_once_do_not_pile_up() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, clock=clock)
    for i in range(3000):
        throttle.begin(f"user{i}", None)
        clock.now += 0.1
    assert throttle.tracked() < 2100  # swept: only what the last minute holds, and a little more


# ---- the throttle against the server -----------------------------------------------------


async def test_failed_logins_are_throttled_across_rest_and_sockets(make_server: MakeServer, connect: Connect) -> None:
    srv = make_server({"LOGIN_RATE_LIMIT": "4"})
    user = unique_user("throttled")
    await login(srv.url, user, "right-pw")  # auto-registered
    for _ in range(2):
        status, body = await rest_login(srv.url, user, "wrong-pw")
        assert (status, body["error"]["code"]) == (401, "unauthorized"), body
    guest = await connect(srv.url)
    for _ in range(2):
        ack = await guest.ask("login", {"username": user, "password": "wrong-pw"})
        assert ack["error"]["code"] == "unauthorized", ack
    # The limit is reached: even the right password is refused, on both, with the wait.
    ack = await guest.ask("login", {"username": user, "password": "right-pw"})
    assert ack["error"]["code"] == "rate_limited", ack
    assert 0 < ack["error"]["retry_after"] <= 60
    status, body = await rest_login(srv.url, user, "right-pw")
    assert (status, body["error"]["code"]) == (429, "rate_limited"), body
    assert 0 < body["error"]["retry_after"] <= 60
    # A new socket does not start the count again.
    await guest.disconnect()
    again = await connect(srv.url)
    ack = await again.ask("login", {"username": user, "password": "right-pw"})
    assert ack["error"]["code"] == "rate_limited", ack
    assert srv.log().count("Traceback") == 0


async def test_the_address_is_throttled_whatever_the_usernames(make_server: MakeServer) -> None:
    srv = make_server({"LOGIN_RATE_LIMIT": "3", "AUTO_REGISTER": "0"})
    for i in range(3):
        status, _ = await rest_login(srv.url, unique_user(f"guess{i}"), "pw")
        assert status == 401
    status, body = await rest_login(srv.url, unique_user("guess"), "pw")
    assert (status, body["error"]["code"]) == (429, "rate_limited"), body


async def test_successful_logins_are_never_throttled(make_server: MakeServer) -> None:
    srv = make_server({"LOGIN_RATE_LIMIT": "2"})
    user = unique_user("often")
    for _ in range(10):
        status, body = await rest_login(srv.url, user, "same-pw")
        assert status == 200, body


# ---- ADMIN_USERS -------------------------------------------------------------------------


async def test_only_admin_users_may_restore_a_backup(make_server: MakeServer, connect: Connect) -> None:
    srv = make_server({"ADMIN_USERS": "boss, second_boss"})
    worker = await connect(srv.url, await login(srv.url, unique_user("worker")))
    ack = await worker.ask("restore_backup", {})
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == "forbidden", ack
    assert "ADMIN_USERS" in ack["error"]["message"]
    # A malformed name is still judged first: bad input wins over who asks.
    bad = await worker.ask("restore_backup", {"name": "../backend.db"})
    assert bad["error"]["code"] == "invalid_input", bad
    boss = await connect(srv.url, await login(srv.url, "boss"))
    assert (await boss.ask("restore_backup", {}))["ok"] is True
    # Listing stays open to every user: it changes nothing.
    assert (await worker.ask("list_backups", {}))["ok"] is True


# ---- ALLOWED_HOSTS -----------------------------------------------------------------------


async def get_status(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_a_request_for_an_unknown_host_is_refused(server: ServerProcess) -> None:
    for path in ("/", "/healthz", "/api/fetch_csv", "/socket.io/?EIO=4&transport=polling"):
        status, _, text = await get_status(f"{server.url}{path}", {"Host": "evil.example"})
        assert status == 400, (path, status, text)
        body = json.loads(text)
        assert body["error"]["code"] == "invalid_input"
        assert "ALLOWED_HOSTS" in body["error"]["message"]
    for host in ("127.0.0.1", "localhost:1234", "LOCALHOST", "[::1]:80"):
        status, _, _ = await get_status(f"{server.url}/healthz", {"Host": host})
        assert status == 200, host


async def test_dns_rebinding_cannot_pass_the_socketio_origin_check(server: ServerProcess) -> None:
    # A page at http://evil.example:PORT, its name resolving to this server: its requests carry
    # that very Host and Origin. Before ALLOWED_HOSTS the pair passed as "the server's own".
    port = server.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, headers, _ = await get_status(f"{server.url}/socket.io/?EIO=4&transport=polling", rebound)
    assert status == 400
    assert "Access-Control-Allow-Origin" not in headers
    own = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
    status, headers, _ = await get_status(f"{server.url}/socket.io/?EIO=4&transport=polling", own)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == own["Origin"]
    # An allowed Host does not make any origin the server's own.
    mixed = {"Host": f"127.0.0.1:{port}", "Origin": f"http://localhost:{port}"}
    status, headers, _ = await get_status(f"{server.url}/socket.io/?EIO=4&transport=polling", mixed)
    assert status != 200
    assert "Access-Control-Allow-Origin" not in headers


async def test_allowed_hosts_names_the_hosts_the_server_answers_to(make_server: MakeServer) -> None:
    srv = make_server({"ALLOWED_HOSTS": "tablecast.test"})
    port = srv.url.rsplit(":", 1)[1]
    status, _, _ = await get_status(f"{srv.url}/healthz", {"Host": f"tablecast.test:{port}"})
    assert status == 200
    status, _, text = await get_status(f"{srv.url}/healthz", {"Host": f"127.0.0.1:{port}"})
    assert status == 400, text
    own = {"Host": f"tablecast.test:{port}", "Origin": f"http://tablecast.test:{port}"}
    status, headers, _ = await get_status(f"{srv.url}/socket.io/?EIO=4&transport=polling", own)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == own["Origin"]


# ---- REST bodies ---------------------------------------------------------------------------


async def test_login_and_register_take_json_bodies_only(server: ServerProcess) -> None:
    user = unique_user("formpost")
    text = json.dumps({"username": user, "password": "planted-pw"})
    for path in ("/api/login", "/auth/login", "/api/register"):
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}{path}", data=text, headers={"Content-Type": "text/plain"}) as resp,
        ):
            body = await resp.json()
        assert resp.status == 400, (path, body)
        assert body["error"]["code"] == "invalid_input"
        assert "application/json" in body["error"]["message"]
    # No account was made by those posts: the name is still free for another password.
    status, body = await rest_login(server.url, user, "my-own-pw")
    assert status == 200, body


@pytest.mark.parametrize(
    "raw",
    [
        '{"username": "x", "password": ' + "9" * 5000 + "}",
        "[" * 3000 + "]" * 3000,
        '{"username": "x", "password": "y"',
        "\xff\xfe",
    ],
    ids=["5000 digits", "3000 levels", "truncated", "not utf-8"],
)
async def test_bodies_json_cannot_take_are_invalid_input(server: ServerProcess, raw: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/api/login",
            data=raw.encode("utf-8", "surrogateescape") if raw != "\xff\xfe" else b"\xff\xfe",
            headers={"Content-Type": "application/json"},
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "invalid_input"


# ---- the console's headers ----------------------------------------------------------------


async def test_the_console_page_sends_its_security_headers(server: ServerProcess) -> None:
    status, headers, _ = await get_status(f"{server.url}/", {})
    assert status == 200
    csp = {part.split()[0]: part.split()[1:] for part in headers["Content-Security-Policy"].split("; ")}
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["default-src"] == ["'self'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    for path in ("/static/console.js", "/healthz"):
        _, headers, _ = await get_status(f"{server.url}{path}", {})
        assert headers["X-Content-Type-Options"] == "nosniff", path


# ---- files ---------------------------------------------------------------------------------


def modes(directory: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            path = Path(root, name)
            found[str(path.relative_to(directory))] = stat.S_IMODE(path.lstat().st_mode)
    return found


async def test_the_data_directory_is_owner_only(tmp_path: Path, make_server: MakeServer, connect: Connect) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    old = data / "backend_table.csv"
    old.write_text("user,pnl\nalice,1.5\n")
    old.chmod(0o644)  # as an earlier version left it
    srv = make_server({"CSV_FLUSH_S": "0.1"}, data_dir=data)
    client = await connect(srv.url, await login(srv.url, unique_user("files")))
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    assert (await client.ask("update_csv", {"id": 1, "values": {"user": "bob"}}))["ok"]
    assert (await client.ask("restore_backup", {}))["ok"]  # a backup, a replaced CSV
    await client.disconnect()
    assert srv.stop() == 0
    found = modes(data)
    assert "backups" in found
    assert any(name.startswith("backups/") for name in found), found
    assert "backend.db" in found
    wrong = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert not wrong, wrong
    dirs = [name for name in found if (data / name).is_dir()]
    assert all(found[name] == 0o700 for name in dirs), found
