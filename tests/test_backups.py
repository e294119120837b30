"""Backups: kept before the CSV is replaced, listed newest first, restored as a reset."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.conftest import Client, ServerProcess, login

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]


def backup_files(server: ServerProcess) -> list[Path]:
    return sorted((server.data_dir / "backups").glob("*.csv"))


async def wait_until(check: Callable[[], bool], timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_list_and_restore(make_server: MakeServer, connect: Connect) -> None:
    server = make_server({"BACKUP_INTERVAL_S": "0", "CSV_FLUSH_S": "0.05"})
    alice = await connect(server.url, await login(server.url, "alice"))
    watcher = await connect(server.url, await login(server.url, "watcher"))
    listing = await alice.ask("list_backups", {})
    assert listing["ok"] is True
    original = listing["backups"][-1]  # the sample as first written, before ids were added
    assert set(original) == {"name", "created_at", "rows", "bytes"}
    assert original["rows"] == 100

    ack = await alice.ask("add_csv", {"values": {"user": "will_vanish"}})
    count = len(backup_files(server))
    await wait_until(lambda: len(backup_files(server)) > count)  # the replaced CSV was kept
    listing = (await alice.ask("list_backups", {}))["backups"]
    created = [b["created_at"] for b in listing]
    assert created == sorted(created, reverse=True)
    assert all(b["bytes"] == (server.data_dir / "backups" / b["name"]).stat().st_size for b in listing)

    seq_before = (await alice.ask("fetch_csv", {"limit": 1}))["seq"]
    result = await alice.ask("restore_backup", {"name": original["name"]})
    assert result == {"ok": True, "seq": seq_before + 1, "total": 100}
    reset = await watcher.wait_for("csv_update", lambda d: d["op"] == "reset")
    assert reset["seq"] == seq_before + 1
    assert reset["by"] == "alice"
    page = await alice.ask("fetch_csv", {"limit": 200})
    assert page["total"] == 100
    assert all(row["version"] == seq_before + 1 for row in page["rows"])
    assert ack["row"]["id"] not in {row["id"] for row in page["rows"]}
    assert (await alice.ask("fetch_csv", {"since": seq_before, "limit": 1}))["reset"] is True
    # the table it replaced is kept too, with the added row in it
    newest = (await alice.ask("list_backups", {}))["backups"][0]
    with (server.data_dir / "backups" / newest["name"]).open(newline="") as fh:
        assert "will_vanish" in {row["user"] for row in csv.DictReader(fh)}
    # ids are never reused, even after restoring an older table
    again = await alice.ask("add_csv", {"values": {"user": "after_restore"}})
    assert again["row"]["id"] > ack["row"]["id"]
    # the restore is durable: the CSV on disk is the restored table
    with (server.data_dir / "backend_table.csv").open(newline="") as fh:
        users = [row["user"] for row in csv.DictReader(fh)]
    assert "will_vanish" not in users


async def test_restore_default_is_newest_and_bad_names_are_refused(make_server: MakeServer, connect: Connect) -> None:
    server = make_server()
    client = await connect(server.url, await login(server.url))
    newest = (await client.ask("list_backups", {}))["backups"][0]
    assert (await client.ask("restore_backup", {}))["ok"] is True
    names = {b["name"] for b in (await client.ask("list_backups", {}))["backups"]}
    assert newest["name"] in names
    for name in ("nope.csv", "../backend_table.csv", "backend.db"):  # never a backup's name
        ack = await client.ask("restore_backup", {"name": name})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "invalid_input"
        assert ack["error"]["field"] == "name"
    missing = "backend_table-20000101T000000.000Z-seq1-rows1.csv"  # a backup's name, of none kept
    ack = await client.ask("restore_backup", {"name": missing})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "not_found"


async def test_backup_keep_and_interval(make_server: MakeServer, connect: Connect) -> None:
    server = make_server({"BACKUP_INTERVAL_S": "0", "BACKUP_KEEP": "3", "CSV_FLUSH_S": "0.05"})
    client = await connect(server.url, await login(server.url))
    for n in range(6):
        await client.ask("add_csv", {"values": {"user": f"b{n}"}})
        await asyncio.sleep(0.3)
    assert len(backup_files(server)) == 3

    spaced = make_server({"BACKUP_INTERVAL_S": "3600", "CSV_FLUSH_S": "0.05"})
    other = await connect(spaced.url, await login(spaced.url))
    first = len(backup_files(spaced))
    for n in range(4):
        await other.ask("add_csv", {"values": {"user": f"s{n}"}})
        await asyncio.sleep(0.3)
    assert len(backup_files(spaced)) == first  # the start-up backup is newer than the interval
