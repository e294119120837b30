"""Row locks, cooldowns and their lock_status broadcasts (PROTOCOL.md sections 5 and 6).

Every test drives the real server with real python-socketio clients, one client per user.
The module's shared server keeps the default timers (15 s cooldown, 30 s grace, 900 s TTL);
`cool_server` and `expiring_server` shorten them for the timing rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Client, ServerProcess, login, unique_user

Connect = Callable[..., Awaitable[Client]]
Join = Callable[..., Awaitable[tuple[str, Client]]]

DEFAULT_TTL_MS = 900_000
DEFAULT_COOLDOWN_S = 15.0
COOL_SETTINGS = {"LOCK_TTL_S": "30", "EDIT_COOLDOWN_S": "1", "LOCK_SWEEP_S": "0.1", "LOCK_GRACE_S": "1"}
EXPIRING_SETTINGS = {"LOCK_TTL_S": "1", "EDIT_COOLDOWN_S": "1", "LOCK_SWEEP_S": "0.1", "LOCK_GRACE_S": "1"}
CLOCK_SLACK_MS = 1_500
LOCK_STATUS_KEYS = {"id", "state", "owner", "expires_at", "reason"}


def now_ms() -> int:
    return int(time.time() * 1000)


def ok(ack: dict[str, Any]) -> dict[str, Any]:
    assert ack.get("ok") is True, ack
    return ack


def error(ack: dict[str, Any], code: str) -> dict[str, Any]:
    assert ack.get("ok") is False, ack
    err = ack["error"]
    assert isinstance(err, dict), ack
    assert err["code"] == code, ack
    assert isinstance(err.get("message"), str), ack
    return err


def statuses(client: Client, row_id: int) -> list[dict[str, Any]]:
    found = [data for data in client.of("lock_status") if data["id"] == row_id]
    for data in found:
        assert set(data) == LOCK_STATUS_KEYS, data
    return found


async def status(client: Client, row_id: int, reason: str, within: float = 5) -> dict[str, Any]:
    data = await client.wait_for("lock_status", lambda d: d.get("id") == row_id and d.get("reason") == reason, within)
    assert isinstance(data, dict)
    assert set(data) == LOCK_STATUS_KEYS, data
    return data


async def wait_until(condition: Callable[[], bool], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def row_of(client: Client, row_id: int) -> dict[str, Any] | None:
    page = ok(await client.ask("fetch_csv", {"limit": 10000}))
    return next((row for row in page["rows"] if row["id"] == row_id), None)


async def locks_of(client: Client) -> list[dict[str, Any]]:
    page = ok(await client.ask("fetch_csv", {"limit": 1}))
    locks = page["locks"]
    assert isinstance(locks, list)
    return locks


async def lock(client: Client, row_id: int) -> dict[str, Any]:
    lock_view = ok(await client.ask("lock_row", {"id": row_id}))["lock"]
    assert isinstance(lock_view, dict)
    return lock_view


async def update(client: Client, row_id: int, broker: str, **extra: Any) -> dict[str, Any]:
    return await client.ask("update_csv", {"id": row_id, "values": {"broker": broker}, **extra})


def start_server(tmp_path_factory: pytest.TempPathFactory, name: str, settings: dict[str, str]) -> ServerProcess:
    return ServerProcess(tmp_path_factory.mktemp(name) / "data", settings).start()


@pytest.fixture(scope="module")
def cool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory, "cool", COOL_SETTINGS)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def expiring_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory, "expiring", EXPIRING_SETTINGS)
    yield proc
    proc.stop()


@pytest.fixture
def join(connect: Connect) -> Join:
    """`name, client = await join(server)`: a fresh (or the named) user on its own socket."""

    async def make(srv: ServerProcess, name: str | None = None) -> tuple[str, Client]:
        username = name or unique_user()
        token = await login(srv.url, username)
        return username, await connect(srv.url, token)

    return make


# ---- lock_row ----------------------------------------------------------------------------


async def test_lock_free_row_gives_lock_and_broadcasts_acquired(
    server: ServerProcess, join: Join, connect: Connect
) -> None:
    alice, a = await join(server)
    _, watcher = await join(server)
    guest = await connect(server.url)

    before = now_ms()
    ack = ok(await a.ask("lock_row", {"id": 1}))
    after = now_ms()
    view = ack["lock"]
    assert set(view) == {"id", "owner", "expires_at"}
    assert view["id"] == 1
    assert view["owner"] == alice
    assert isinstance(view["expires_at"], int)
    assert before + DEFAULT_TTL_MS - CLOCK_SLACK_MS <= view["expires_at"] <= after + DEFAULT_TTL_MS + CLOCK_SLACK_MS

    seen = await status(watcher, 1, "acquired")
    assert seen == {"id": 1, "state": "locked", "owner": alice, "expires_at": view["expires_at"], "reason": "acquired"}
    assert len([d for d in statuses(watcher, 1) if d["reason"] == "acquired"]) == 1
    await status(a, 1, "acquired")
    await asyncio.sleep(0.3)
    assert guest.of("lock_status") == []


async def test_owner_relock_renews_with_a_later_expiry(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, watcher = await join(server)

    first = await lock(a, 2)
    await asyncio.sleep(0.05)
    second = await lock(a, 2)
    assert second["owner"] == alice
    assert second["id"] == 2
    assert second["expires_at"] > first["expires_at"]

    renewed = await status(watcher, 2, "renewed")
    assert renewed == {
        "id": 2,
        "state": "locked",
        "owner": alice,
        "expires_at": second["expires_at"],
        "reason": "renewed",
    }
    assert [d["reason"] for d in statuses(watcher, 2)] == ["acquired", "renewed"]


async def test_lock_held_by_another_user_is_locked(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, b = await join(server)

    view = await lock(a, 3)
    await status(b, 3, "acquired")
    err = error(await b.ask("lock_row", {"id": 3}), "locked")
    assert err["owner"] == alice
    assert err["expires_at"] == view["expires_at"]
    assert [d["reason"] for d in statuses(b, 3)] == ["acquired"]
    assert [lk for lk in await locks_of(b) if lk["id"] == 3] == [
        {"id": 3, "state": "locked", "owner": alice, "expires_at": view["expires_at"]}
    ]


async def test_lock_and_unlock_of_a_missing_row_are_not_found(server: ServerProcess, join: Join) -> None:
    _, a = await join(server)
    error(await a.ask("lock_row", {"id": 100_000}), "not_found")
    error(await a.ask("unlock_row", {"id": 100_000}), "not_found")
    error(await a.ask("lock_row", {"id": 101}), "not_found")


@pytest.mark.parametrize("event", ["lock_row", "unlock_row"])
@pytest.mark.parametrize(
    "payload",
    [{"id": 0}, {"id": -1}, {"id": "3"}, {}, {"id": None}, {"id": 1.5}, {"id": True}, {"id": 2**53}],
    ids=["zero", "negative", "string", "missing", "null", "float", "bool", "too-big"],
)
async def test_bad_row_ids_are_invalid_input(
    server: ServerProcess, join: Join, event: str, payload: dict[str, Any]
) -> None:
    _, a = await join(server)
    err = error(await a.ask(event, payload), "invalid_input")
    assert err["field"] == "id"
    assert a.of("lock_status") == []


async def test_lock_row_with_an_unknown_field_is_invalid_input(server: ServerProcess, join: Join) -> None:
    _, a = await join(server)
    err = error(await a.ask("lock_row", {"id": 4, "ttl": 5}), "invalid_input")
    assert err["field"] == "ttl"
    assert [lk for lk in await locks_of(a) if lk["id"] == 4] == []


# ---- update_csv / delete_csv need the lock ----------------------------------------------


async def test_update_and_delete_without_any_lock_are_lock_required(server: ServerProcess, join: Join) -> None:
    _, a = await join(server)
    before = await row_of(a, 5)
    assert before is not None

    error(await update(a, 5, "nolock"), "lock_required")
    error(await update(a, 5, "nolock", version=before["version"]), "lock_required")
    error(await a.ask("delete_csv", {"id": 5}), "lock_required")
    error(await a.ask("delete_csv", {"id": 5, "version": before["version"]}), "lock_required")
    assert await row_of(a, 5) == before
    assert a.of("csv_update") == []


async def test_update_and_delete_under_another_users_lock_are_locked(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, b = await join(server)
    before = await row_of(b, 6)
    assert before is not None

    view = await lock(a, 6)
    for ack in (await update(b, 6, "intruder"), await b.ask("delete_csv", {"id": 6})):
        err = error(ack, "locked")
        assert err["owner"] == alice
        assert err["expires_at"] == view["expires_at"]
    assert await row_of(b, 6) == before
    assert b.of("csv_update") == []

    row = ok(await update(a, 6, "owner-edit"))["row"]
    assert row["values"]["broker"] == "owner-edit"


async def test_lock_belongs_to_the_user_not_the_socket(server: ServerProcess, join: Join) -> None:
    alice, first = await join(server)
    _, second = await join(server, alice)
    _, watcher = await join(server)

    view = await lock(first, 7)
    again = await lock(second, 7)
    assert again["owner"] == alice
    assert again["expires_at"] >= view["expires_at"]

    row = ok(await update(second, 7, "second-socket"))["row"]
    assert row["id"] == 7
    assert row["values"]["broker"] == "second-socket"
    ok(await second.ask("unlock_row", {"id": 7}))
    released = await status(watcher, 7, "released")
    assert released["owner"] == alice
    assert [lk for lk in await locks_of(watcher) if lk["id"] == 7 and lk["state"] == "locked"] == []


async def test_delete_by_the_owner_ends_the_lock_and_the_row(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, watcher = await join(server)

    await lock(a, 40)
    ok(await update(a, 40, "before-delete"))
    assert ok(await a.ask("delete_csv", {"id": 40})) == {"ok": True, "id": 40}

    deleted = await status(watcher, 40, "deleted")
    assert deleted["state"] == "unlocked"
    assert deleted["owner"] == alice
    await watcher.wait_for("csv_update", lambda d: d.get("op") == "delete" and d.get("id") == 40)
    assert [d["reason"] for d in statuses(watcher, 40)] == ["acquired", "deleted"]
    assert await row_of(watcher, 40) is None
    assert [lk for lk in await locks_of(watcher) if lk["id"] == 40] == []
    error(await a.ask("lock_row", {"id": 40}), "not_found")
    error(await watcher.ask("lock_row", {"id": 40}), "not_found")
    error(await update(a, 40, "ghost"), "not_found")


async def test_delete_with_a_version_under_the_lock(server: ServerProcess, join: Join) -> None:
    _, a = await join(server)
    _, watcher = await join(server)
    current = await row_of(a, 41)
    assert current is not None

    await lock(a, 41)
    err = error(await a.ask("delete_csv", {"id": 41, "version": current["version"] + 1000}), "conflict")
    assert err["row"] == current
    assert [lk["id"] for lk in await locks_of(a) if lk["id"] == 41] == [41]
    ok(await a.ask("delete_csv", {"id": 41, "version": current["version"]}))
    await status(watcher, 41, "deleted")


# ---- unlock_row --------------------------------------------------------------------------


async def test_unlock_by_a_non_owner_is_not_owner(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, b = await join(server)

    view = await lock(a, 8)
    await status(b, 8, "acquired")
    error(await b.ask("unlock_row", {"id": 8}), "not_owner")
    err = error(await b.ask("lock_row", {"id": 8}), "locked")
    assert err["owner"] == alice
    assert err["expires_at"] == view["expires_at"]
    assert [d["reason"] for d in statuses(b, 8)] == ["acquired"]
    ok(await update(a, 8, "still-mine"))


async def test_unlock_without_update_releases_with_no_cooldown(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    bob, b = await join(server)

    await lock(a, 9)
    assert ok(await a.ask("unlock_row", {"id": 9})) == {"ok": True}
    released = await status(b, 9, "released")
    assert released["state"] == "unlocked"
    assert released["owner"] == alice
    assert released["expires_at"] is None
    assert [lk for lk in await locks_of(b) if lk["id"] == 9] == []

    view = await lock(b, 9)
    assert view["owner"] == bob
    await a.wait_for("lock_status", lambda d: d["id"] == 9 and d["reason"] == "acquired" and d["owner"] == bob)
    assert [(d["reason"], d["owner"]) for d in statuses(a, 9)] == [
        ("acquired", alice),
        ("released", alice),
        ("acquired", bob),
    ]


async def test_unlock_after_update_starts_a_cooldown(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    _, b = await join(server)

    await lock(a, 10)
    ok(await update(a, 10, "edited"))
    before = now_ms()
    ok(await a.ask("unlock_row", {"id": 10}))
    after = now_ms()

    cooling = await status(b, 10, "released")
    assert cooling["state"] == "cooldown"
    assert cooling["owner"] == alice
    cooldown_ms = int(DEFAULT_COOLDOWN_S * 1000)
    assert before + cooldown_ms - CLOCK_SLACK_MS <= cooling["expires_at"] <= after + cooldown_ms + CLOCK_SLACK_MS
    for client in (a, b):
        err = error(await client.ask("lock_row", {"id": 10}), "cooldown")
        assert 0 < err["retry_after"] <= DEFAULT_COOLDOWN_S
        assert err["retry_after"] > DEFAULT_COOLDOWN_S - 5
    error(await update(a, 10, "after-unlock"), "lock_required")


async def test_failed_updates_under_the_lock_start_no_cooldown(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    bob, b = await join(server)
    current = await row_of(a, 17)
    assert current is not None

    await lock(a, 17)
    error(await update(a, 17, "stale", version=current["version"] + 1000), "conflict")
    error(await a.ask("update_csv", {"id": 17, "values": {"pnl": "not a number"}}), "invalid_input")
    error(await a.ask("update_csv", {"id": 17, "values": {"no such column": 1}}), "invalid_input")
    assert await row_of(a, 17) == current
    ok(await a.ask("unlock_row", {"id": 17}))
    released = await status(b, 17, "released")
    assert released["state"] == "unlocked"
    assert released["owner"] == alice
    assert (await lock(b, 17))["owner"] == bob


async def test_unlock_of_a_free_row_changes_nothing(server: ServerProcess, join: Join) -> None:
    _, a = await join(server)
    _, watcher = await join(server)
    ack = await a.ask("unlock_row", {"id": 11})
    if ack.get("ok") is not True:
        error(ack, "not_owner")
    await asyncio.sleep(0.3)
    assert statuses(watcher, 11) == []
    assert [lk for lk in await locks_of(a) if lk["id"] == 11] == []


# ---- fetch_csv locks ---------------------------------------------------------------------


async def test_fetch_csv_lists_held_locks(server: ServerProcess, join: Join) -> None:
    alice, a = await join(server)
    bob, b = await join(server)
    _, reader = await join(server)

    va = await lock(a, 12)
    vb = await lock(b, 13)
    listed = {lk["id"]: lk for lk in await locks_of(reader) if lk["id"] in (12, 13)}
    assert listed == {
        12: {"id": 12, "state": "locked", "owner": alice, "expires_at": va["expires_at"]},
        13: {"id": 13, "state": "locked", "owner": bob, "expires_at": vb["expires_at"]},
    }
    page = ok(await reader.ask("fetch_csv", {"offset": 0, "limit": 1}))
    assert {lk["id"] for lk in page["locks"]} >= {12, 13}

    ok(await a.ask("unlock_row", {"id": 12}))
    remaining = [lk["id"] for lk in await locks_of(reader) if lk["id"] in (12, 13)]
    assert remaining == [13]


# ---- atomicity -----------------------------------------------------------------------------


async def test_concurrent_lock_row_by_many_users_has_one_winner(server: ServerProcess, join: Join) -> None:
    players = [await join(server) for _ in range(8)]
    _, watcher = await join(server)

    acks = await asyncio.gather(*(client.ask("lock_row", {"id": 14}) for _, client in players))
    winners = [(name, ack) for (name, _), ack in zip(players, acks, strict=True) if ack.get("ok") is True]
    assert len(winners) == 1, acks
    winner, won = winners[0]
    assert won["lock"]["owner"] == winner
    for (name, _), ack in zip(players, acks, strict=True):
        if name != winner:
            err = error(ack, "locked")
            assert err["owner"] == winner
            assert err["expires_at"] == won["lock"]["expires_at"]

    await status(watcher, 14, "acquired")
    await asyncio.sleep(0.3)
    assert [(d["reason"], d["owner"]) for d in statuses(watcher, 14)] == [("acquired", winner)]


async def test_concurrent_versioned_updates_by_the_lock_owner_have_one_winner(
    server: ServerProcess, join: Join
) -> None:
    alice, first = await join(server)
    sockets = [first] + [(await join(server, alice))[1] for _ in range(5)]
    await lock(first, 15)
    current = await row_of(first, 15)
    assert current is not None
    version = current["version"]

    acks = await asyncio.gather(
        *(update(client, 15, f"racer-{i}", version=version) for i, client in enumerate(sockets))
    )
    winners = [ack for ack in acks if ack.get("ok") is True]
    assert len(winners) == 1, acks
    row = winners[0]["row"]
    assert row["version"] > version
    for ack in acks:
        if ack.get("ok") is not True:
            err = error(ack, "conflict")
            assert err["row"] == row
    assert await row_of(first, 15) == row


async def test_concurrent_lock_row_by_the_same_user_all_succeed(server: ServerProcess, join: Join) -> None:
    alice, first = await join(server)
    sockets = [first] + [(await join(server, alice))[1] for _ in range(3)]
    acks = await asyncio.gather(*(client.ask("lock_row", {"id": 16}) for client in sockets))
    for ack in acks:
        assert ok(ack)["lock"]["owner"] == alice
    await wait_until(lambda: len(statuses(first, 16)) >= 4)
    assert sorted(d["reason"] for d in statuses(first, 16)) == ["acquired", "renewed", "renewed", "renewed"]


# ---- cooldown timing -------------------------------------------------------------------------


async def test_cooldown_blocks_everyone_then_ends_with_cooldown_over(cool_server: ServerProcess, join: Join) -> None:
    alice, a = await join(cool_server)
    bob, b = await join(cool_server)

    await lock(a, 20)
    ok(await update(a, 20, "first"))
    ok(await update(a, 20, "second"))
    ok(await a.ask("unlock_row", {"id": 20}))
    cooling = await status(b, 20, "released")
    assert cooling["state"] == "cooldown"
    assert cooling["owner"] == alice
    ends = cooling["expires_at"]
    assert isinstance(ends, int)
    assert now_ms() - CLOCK_SLACK_MS <= ends <= now_ms() + 1000 + CLOCK_SLACK_MS

    listed = [lk for lk in await locks_of(b) if lk["id"] == 20]
    assert listed == [{"id": 20, "state": "cooldown", "owner": alice, "expires_at": ends}]

    for client in (a, b):
        asked = now_ms()
        err = error(await client.ask("lock_row", {"id": 20}), "cooldown")
        retry = err["retry_after"]
        assert isinstance(retry, int | float)
        assert 0 < retry <= 1.0
        assert abs((asked + retry * 1000) - ends) <= 500
    error(await update(a, 20, "during-cooldown"), "lock_required")

    over = await status(b, 20, "cooldown_over", within=5)
    assert over["state"] == "unlocked"
    assert over["expires_at"] is None
    assert now_ms() >= ends - 200
    assert [lk for lk in await locks_of(b) if lk["id"] == 20] == []
    view = await lock(b, 20)
    assert view["owner"] == bob


async def test_lock_during_cooldown_fails_until_it_ends(cool_server: ServerProcess, join: Join) -> None:
    _, a = await join(cool_server)
    bob, b = await join(cool_server)

    await lock(a, 21)
    ok(await update(a, 21, "edited"))
    ok(await a.ask("unlock_row", {"id": 21}))
    started = time.monotonic()
    while True:
        ack = await b.ask("lock_row", {"id": 21})
        if ack.get("ok") is True:
            break
        error(ack, "cooldown")
        assert time.monotonic() - started < 5, "the cooldown did not end"
        await asyncio.sleep(0.1)
    assert time.monotonic() - started >= 0.5
    assert ack["lock"]["owner"] == bob


# ---- disconnect grace ----------------------------------------------------------------------


async def test_lock_ends_after_the_grace_when_the_owner_leaves(cool_server: ServerProcess, join: Join) -> None:
    alice, a = await join(cool_server)
    bob, b = await join(cool_server)

    view = await lock(a, 22)
    await a.disconnect()
    left = time.monotonic()
    err = error(await b.ask("lock_row", {"id": 22}), "locked")
    assert err["owner"] == alice
    await asyncio.sleep(0.5)
    assert [d["reason"] for d in statuses(b, 22)] == ["acquired"]
    assert [lk["owner"] for lk in await locks_of(b) if lk["id"] == 22] == [alice]
    error(await b.ask("lock_row", {"id": 22}), "locked")

    gone = await status(b, 22, "disconnected", within=5)
    assert time.monotonic() - left >= 0.9
    assert gone["state"] == "unlocked"
    assert gone["owner"] == alice
    assert view["expires_at"] > now_ms()
    assert (await lock(b, 22))["owner"] == bob


async def test_owner_gone_after_an_update_leaves_a_cooldown(cool_server: ServerProcess, join: Join) -> None:
    alice, a = await join(cool_server)
    _, b = await join(cool_server)

    await lock(a, 23)
    ok(await update(a, 23, "then-left"))
    await a.disconnect()
    gone = await status(b, 23, "disconnected", within=5)
    assert gone["state"] == "cooldown"
    assert gone["owner"] == alice
    err = error(await b.ask("lock_row", {"id": 23}), "cooldown")
    assert 0 < err["retry_after"] <= 1.0
    over = await status(b, 23, "cooldown_over", within=5)
    assert over["state"] == "unlocked"


async def test_owner_reconnecting_within_the_grace_keeps_the_lock(
    cool_server: ServerProcess, join: Join, connect: Connect
) -> None:
    alice, a = await join(cool_server)
    _, b = await join(cool_server)

    token = await login(cool_server.url, alice)
    view = await lock(a, 24)
    await a.disconnect()
    await asyncio.sleep(0.3)
    again = await connect(cool_server.url, token)
    await asyncio.sleep(2.0)

    assert [d["reason"] for d in statuses(b, 24)] == ["acquired"]
    assert [lk for lk in await locks_of(b) if lk["id"] == 24] == [
        {"id": 24, "state": "locked", "owner": alice, "expires_at": view["expires_at"]}
    ]
    err = error(await b.ask("lock_row", {"id": 24}), "locked")
    assert err["owner"] == alice
    row = ok(await update(again, 24, "after-reconnect"))["row"]
    assert row["values"]["broker"] == "after-reconnect"
    ok(await again.ask("unlock_row", {"id": 24}))
    assert (await status(b, 24, "released"))["state"] == "cooldown"


async def test_closing_one_of_two_sockets_keeps_the_lock(cool_server: ServerProcess, join: Join) -> None:
    alice, first = await join(cool_server)
    _, second = await join(cool_server, alice)
    _, b = await join(cool_server)

    await lock(first, 25)
    await first.disconnect()
    await asyncio.sleep(2.0)
    assert [d["reason"] for d in statuses(b, 25)] == ["acquired"]
    ok(await update(second, 25, "other-socket"))
    err = error(await b.ask("lock_row", {"id": 25}), "locked")
    assert err["owner"] == alice


# ---- expiry --------------------------------------------------------------------------------


async def test_lock_expires_by_itself_without_a_cooldown(expiring_server: ServerProcess, join: Join) -> None:
    alice, a = await join(expiring_server)
    bob, b = await join(expiring_server)

    before = now_ms()
    view = await lock(a, 30)
    assert before + 1000 - CLOCK_SLACK_MS <= view["expires_at"] <= now_ms() + 1000 + CLOCK_SLACK_MS

    expired = await status(b, 30, "expired", within=5)
    assert now_ms() >= view["expires_at"] - 100
    assert expired["state"] == "unlocked"
    assert expired["owner"] == alice
    error(await update(a, 30, "too-late"), "lock_required")
    error(await a.ask("delete_csv", {"id": 30}), "lock_required")
    assert [lk for lk in await locks_of(b) if lk["id"] == 30] == []
    assert (await lock(b, 30))["owner"] == bob


async def test_expired_lock_with_an_update_starts_a_cooldown(expiring_server: ServerProcess, join: Join) -> None:
    alice, a = await join(expiring_server)
    _, b = await join(expiring_server)

    await lock(a, 31)
    ok(await update(a, 31, "edited-then-expired"))
    expired = await status(b, 31, "expired", within=5)
    assert expired["state"] == "cooldown"
    assert expired["owner"] == alice
    assert expired["expires_at"] > now_ms() - CLOCK_SLACK_MS
    for client in (a, b):
        err = error(await client.ask("lock_row", {"id": 31}), "cooldown")
        assert 0 < err["retry_after"] <= 1.0
    error(await update(a, 31, "too-late"), "lock_required")
    over = await status(b, 31, "cooldown_over", within=5)
    assert over["state"] == "unlocked"
    await lock(a, 31)


async def test_update_right_after_expiry_without_a_sweep_is_lock_required(
    make_server: Callable[..., ServerProcess], join: Join
) -> None:
    srv = make_server({"LOCK_TTL_S": "0.5", "LOCK_SWEEP_S": "60", "EDIT_COOLDOWN_S": "1"})
    _, a = await join(srv)
    _, b = await join(srv)

    await lock(a, 32)
    await asyncio.sleep(0.8)
    error(await update(a, 32, "too-late"), "lock_required")
    expired = await status(b, 32, "expired", within=2)
    assert expired["state"] == "unlocked"
    assert [lk for lk in await locks_of(b) if lk["id"] == 32] == []


# ---- restore -------------------------------------------------------------------------------


async def test_restore_fails_while_another_user_holds_a_lock(
    make_server: Callable[..., ServerProcess], join: Join
) -> None:
    srv = make_server(COOL_SETTINGS)
    alice, a = await join(srv)
    bob, b = await join(srv)
    backups = ok(await a.ask("list_backups", {}))["backups"]
    assert len(backups) >= 1

    await lock(a, 1)
    view = await lock(b, 5)
    before = ok(await a.ask("fetch_csv", {"limit": 10000}))
    err = error(await a.ask("restore_backup", {}), "locked")
    assert err["owner"] == bob
    assert err["expires_at"] == view["expires_at"]

    after = ok(await a.ask("fetch_csv", {"limit": 10000}))
    assert after["seq"] == before["seq"]
    assert after["rows"] == before["rows"]
    assert {lk["id"]: lk["owner"] for lk in after["locks"]} == {1: alice, 5: bob}
    await asyncio.sleep(0.3)
    assert all(d["reason"] != "restored" for d in b.of("lock_status"))
    assert all(d.get("op") != "reset" for d in b.of("csv_update"))
    error(await a.ask("lock_row", {"id": 5}), "locked")


async def test_restore_ends_the_callers_own_locks(make_server: Callable[..., ServerProcess], join: Join) -> None:
    srv = make_server(COOL_SETTINGS)
    _, a = await join(srv)
    bob, b = await join(srv)
    assert len(ok(await a.ask("list_backups", {}))["backups"]) >= 1

    await lock(a, 1)
    await lock(a, 2)
    ok(await update(a, 2, "before-restore"))
    result = ok(await a.ask("restore_backup", {}))
    assert isinstance(result["seq"], int)
    assert result["total"] == 100

    for row_id in (1, 2):
        ended = await status(b, row_id, "restored")
        assert ended["state"] == "unlocked"
    assert await locks_of(b) == []
    error(await update(a, 1, "after-restore"), "lock_required")
    assert (await lock(b, 1))["owner"] == bob
    assert (await lock(b, 2))["owner"] == bob
