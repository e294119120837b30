"""Bad input is judged before state: a payload that can never apply is `invalid_input` (or
`payload_too_large`) naming the field, whoever holds the row, whether the row or backup exists
and whatever its version. State errors keep their own order among themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from protocol.errors import InvalidInput
from protocol.payloads import RestoreBackup, parse
from storage.table.backups import backup_name
from tests.conftest import Client, ServerProcess

UserClient = Callable[..., Awaitable[tuple[str, Client]]]
NOT_BACKUP_NAMES = [
    "../backend.db",
    "/etc/passwd",
    "backend.db",
    "",
    "backend_table.csv",
    "nope.csv",
    "../backups/backend_table-20260101T000000.000Z-seq1-rows1.csv",
    "backend_table-20260101T000000.000Z-seq1-rows1.csv/../../backend.db",
]
MISSING_BACKUP = "backend_table-20000101T000000.000Z-seq1-rows1.csv"  # well formed, never taken


def error(ack: dict[str, Any], code: str, field: str | None = None) -> dict[str, Any]:
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code, ack
    if field is not None:
        assert ack["error"]["field"] == field, ack
    return dict(ack["error"])


async def row(client: Client, row_id: int) -> dict[str, Any]:
    page = await client.ask("fetch_csv", {"offset": row_id - 1, "limit": 1})
    found = page["rows"][0]
    assert found["id"] == row_id, page
    return dict(found)


# ---- update_csv: value errors before not_found, lock_required, locked and conflict --------


async def test_update_with_a_bad_value_and_no_lock_is_invalid_input(user_client: UserClient) -> None:
    _, a = await user_client()
    before = await row(a, 5)
    error(await a.ask("update_csv", {"id": 5, "values": {"pnl": "x"}}), "invalid_input", "values.pnl")
    error(await a.ask("update_csv", {"id": 5, "values": {"colour": "red"}}), "invalid_input", "values.colour")
    error(await a.ask("update_csv", {"id": 5, "values": {"id": 7}}), "invalid_input", "values.id")
    too_long = {"id": 5, "values": {"user": "x" * 10_001}}
    error(await a.ask("update_csv", too_long), "payload_too_large", "values.user")
    # A good value still needs the lock.
    error(await a.ask("update_csv", {"id": 5, "values": {"pnl": 1.5}}), "lock_required")
    assert await row(a, 5) == before


async def test_update_with_a_bad_value_on_a_row_locked_by_another_is_invalid_input(user_client: UserClient) -> None:
    _, a = await user_client()
    b_name, b = await user_client()
    assert (await b.ask("lock_row", {"id": 6}))["ok"] is True
    try:
        error(await a.ask("update_csv", {"id": 6, "values": {"max_risk": 1.5}}), "invalid_input", "values.max_risk")
        error(await a.ask("update_csv", {"id": 6, "values": {"margin": True}}), "invalid_input", "values.margin")
        locked = error(await a.ask("update_csv", {"id": 6, "values": {"max_risk": 2}}), "locked")
        assert locked["owner"] == b_name
    finally:
        await b.ask("unlock_row", {"id": 6})


async def test_update_with_a_bad_value_on_a_missing_row_is_invalid_input(user_client: UserClient) -> None:
    _, a = await user_client()
    error(await a.ask("update_csv", {"id": 99_999, "values": {"pnl": "x"}}), "invalid_input", "values.pnl")
    error(await a.ask("update_csv", {"id": 99_999, "values": {"pnl": 1.0}}), "not_found")


async def test_update_with_a_bad_value_and_a_stale_version_is_invalid_input(user_client: UserClient) -> None:
    _, a = await user_client()
    assert (await a.ask("lock_row", {"id": 7}))["ok"] is True
    try:
        before = await row(a, 7)
        stale = before["version"] + 1000
        bad = {"id": 7, "values": {"pnl": [1]}, "version": stale}
        error(await a.ask("update_csv", bad), "invalid_input", "values.pnl")
        conflict = error(await a.ask("update_csv", {"id": 7, "values": {"pnl": 1.0}, "version": stale}), "conflict")
        assert conflict["row"] == before
        assert await row(a, 7) == before
    finally:
        await a.ask("unlock_row", {"id": 7})


async def test_bad_updates_change_nothing_and_broadcast_nothing(user_client: UserClient) -> None:
    _, a = await user_client()
    _, watcher = await user_client()
    seq = (await a.ask("fetch_csv", {"limit": 1}))["seq"]
    for payload in (
        {"id": 8, "values": {"pnl": "x"}},
        {"id": 99_999, "values": {"nope": 1}},
        {"id": 8, "values": {"user": 5}},
    ):
        assert (await a.ask("update_csv", payload))["ok"] is False, payload
    assert (await a.ask("fetch_csv", {"limit": 1}))["seq"] == seq
    await asyncio.sleep(0.3)  # a broadcast would follow its ack within milliseconds
    assert watcher.of("csv_update") == []


# ---- restore_backup: a name that is no backup name is invalid_input, even while locked ------


async def test_restore_of_a_name_that_is_no_backup_name_is_invalid_input_while_locked(
    server: ServerProcess, user_client: UserClient
) -> None:
    _, a = await user_client()
    b_name, b = await user_client()
    assert (await b.ask("lock_row", {"id": 9}))["ok"] is True
    try:
        for name in NOT_BACKUP_NAMES:
            ack = await a.ask("restore_backup", {"name": name})
            error(ack, "invalid_input", "name")
        # A well-formed name is a question for the table: the lock is the first answer.
        assert error(await a.ask("restore_backup", {"name": MISSING_BACKUP}), "locked")["owner"] == b_name
        assert error(await a.ask("restore_backup", {}), "locked")["owner"] == b_name
    finally:
        await b.ask("unlock_row", {"id": 9})
    for name in NOT_BACKUP_NAMES:
        error(await a.ask("restore_backup", {"name": name}), "invalid_input", "name")
    missing = error(await a.ask("restore_backup", {"name": MISSING_BACKUP}), "not_found")
    assert missing["name"] == MISSING_BACKUP
    assert (server.data_dir / "backend.db").exists()


def test_backup_names_are_what_restore_accepts() -> None:
    name = backup_name(datetime.now(UTC), 12, 100)
    assert parse(RestoreBackup, {"name": name}).name == name
    for bad in NOT_BACKUP_NAMES:
        with pytest.raises(InvalidInput) as refused:
            parse(RestoreBackup, {"name": bad})
        assert refused.value.details["field"] == "name"


# ---- ohlc-stream: any object, as the seed dashboard sends it --------------------------------


async def test_ohlc_stream_takes_any_object_and_only_objects(user_client: UserClient) -> None:
    _, a = await user_client()
    for payload in ({"message": "Start streaming OHLC data"}, {"message": 5, "anything": [1, {"x": None}]}, {}):
        ack = await a.ask("ohlc-stream", payload)
        assert ack["ok"] is True, (payload, ack)
        assert isinstance(ack["candles"], list)
    for not_an_object in ("Start streaming OHLC data", [1], 5):
        error(await a.ask("ohlc-stream", not_an_object), "invalid_input", "payload")
    await a.wait_for("ohlc", lambda c: c["interval"] == "1m")
    # Everywhere else an unknown field is still refused.
    error(await a.ask("ping", {"message": "hi"}), "invalid_input", "message")
    error(await a.ask("numbers", {"message": "hi"}), "invalid_input", "message")
