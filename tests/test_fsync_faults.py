"""fsync failing with EIO (a disk that cannot write back), made real by the LD_PRELOAD shim in
tests/faults, against the real server:

- in the journal: the changes of that commit are undone and `unavailable`, and every later
  write too (with the reason) until a restart, even once the disk works again: after a failed
  fsync the kernel may have dropped the pages, so a later fsync that succeeds proves nothing.
  Reads go on; a restart brings back every acked write, and writes;
- of a checkpoint's temp file: the old CSV stays, the temp file goes, no file is fsynced twice,
  a restore is `unavailable`, and a later checkpoint catches up once the disk works;
- of the directory after the rename: the journal keeps the old checkpoint and the new one as
  pending, and the directory is never fsynced again by this process;
- of backups/: the checkpoint is aborted, no unsynced backup is listed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from storage.files import fingerprint
from tests.conftest import Client, ServerProcess, login
from tests.faults import FsyncFault

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]
CSV = "backend_table.csv"
REFUSED = "table writes refused until the server is restarted"


def journal_meta(data: Path) -> dict[str, Any]:
    """The table's metadata as the journal holds it now, read beside the running server."""
    db = sqlite3.connect(f"file:{data / 'backend.db'}?mode=ro", uri=True)
    try:
        return {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM table_meta")}
    finally:
        db.close()


def temp_files(data: Path) -> list[str]:
    return sorted(path.name for path in data.glob("*.tmp"))


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    """The CSV by id; asserts it is whole: every record complete, the file ending a line."""
    text = path.read_bytes().decode()
    assert text.endswith("\n"), "the csv ends mid-line"
    records = list(csv.reader(io.StringIO(text, newline="")))
    header = records[0]
    assert header[0] == "id"
    assert all(len(record) == len(header) for record in records[1:]), "a record is cut"
    return {record[0]: dict(zip(header, record, strict=True)) for record in records[1:]}


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.02)


async def table(client: Client) -> tuple[dict[int, dict[str, Any]], int, int]:
    page = await client.ask("fetch_csv", {"limit": 10000})
    assert page["ok"], page
    return {row["id"]: row for row in page["rows"]}, int(page["seq"]), int(page["total"])


def with_fault(server: ServerProcess) -> ServerProcess:
    assert server.proc is not None
    assert FsyncFault.loaded_in(server.proc.pid), "the shim was not preloaded"
    return server


async def test_a_journal_io_error_refuses_writes_until_restart(
    tmp_path: Path, make_server: MakeServer, connect: Connect
) -> None:
    data = tmp_path / "data"
    fault = FsyncFault.build(tmp_path / "fault", f"{data}/backend.db*")
    # No checkpoint meanwhile: after the restart only the journal can bring the writes back.
    server = with_fault(make_server({"CSV_FLUSH_S": "60", **fault.settings()}, data_dir=data))
    token = await login(server.url, "eio_user")
    client = await connect(server.url, token)
    for row_id in (1, 2, 3):
        assert (await client.ask("lock_row", {"id": row_id}))["ok"]
    stored = (await client.ask("update_csv", {"id": 1, "values": {"user": "stored", "pnl": 1.25}}))["row"]
    added = (await client.ask("add_csv", {"values": {"user": "added before the fault"}}))["row"]
    before = await table(client)

    fault.on()
    answers = await asyncio.gather(
        client.ask("update_csv", {"id": 2, "values": {"user": "never", "pnl": 9.5}}),
        client.ask("add_csv", {"values": {"user": "never added"}}),
        client.ask("delete_csv", {"id": 3}),
    )
    assert [a["ok"] for a in answers] == [False] * 3, answers
    assert {a["error"]["code"] for a in answers} == {"unavailable"}
    assert "I/O error" in answers[0]["error"]["message"], answers[0]
    assert any(path.endswith("backend.db-wal") for path in fault.failed())
    assert await table(client) == before  # nothing half-applied

    # The disk works again, but what the failed fsync dropped is unknown: still refused.
    fault.off()
    later = await client.ask("update_csv", {"id": 1, "values": {"user": "after the fault"}})
    assert later["ok"] is False, later
    assert later["error"]["code"] == "unavailable", later
    assert "restarted" in later["error"]["message"]
    # Reads go on: a page, and the whole table as a CSV download.
    assert await table(client) == before
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.url}/api/fetch_csv?format=csv", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        assert resp.status == 200
        downloaded = list(csv.reader(io.StringIO(await resp.text(), newline="")))
    assert len(downloaded) == 1 + before[2]
    assert server.log().count(REFUSED) == 1  # said once, not per write

    assert server.stop() == 0
    server.start()
    client = await connect(server.url, await login(server.url, "eio_user"))
    rows, seq, _ = await table(client)
    assert rows[1] == stored
    assert rows[added["id"]] == added
    assert rows[3] == before[0][3]
    # The commit that failed is not served after the restart, or served whole: what the disk kept.
    assert rows[2] == before[0][2] or rows[2]["values"] == {**before[0][2]["values"], "user": "never", "pnl": 9.5}
    assert seq in (before[1], before[1] + 1)
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    again = await client.ask("update_csv", {"id": 1, "values": {"user": "writes are back"}})
    assert again["ok"], again
    assert again["row"]["version"] == seq + 1


async def test_a_checkpoint_whose_temp_file_fails_to_sync_keeps_the_old_csv(
    tmp_path: Path, make_server: MakeServer, connect: Connect
) -> None:
    data = tmp_path / "data"
    fault = FsyncFault.build(tmp_path / "fault", f"{data}/{CSV}.*.tmp")
    server = with_fault(make_server({"CSV_FLUSH_S": "0.2", **fault.settings()}, data_dir=data))
    token = await login(server.url, "tmp_user")
    client = await connect(server.url, token)
    path = data / CSV
    old = path.read_bytes()
    assert journal_meta(data)["checkpoint_fp"] == fingerprint(path)

    fault.on()
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    updated = (await client.ask("update_csv", {"id": 1, "values": {"user": "in the journal only"}}))["row"]
    added = (await client.ask("add_csv", {"values": {"user": "added meanwhile"}}))["row"]
    await wait_until(lambda: len(fault.failed()) >= 2, "two checkpoints tried")
    await wait_until(lambda: not temp_files(data), "the failed temp files removed", timeout=2)
    assert path.read_bytes() == old
    assert journal_meta(data)["checkpoint_fp"] == fingerprint(path)
    synced = [call.path for call in fault.calls()]
    assert len(synced) == len(set(synced)), "a temp file was fsynced again"
    # A restore meets the same fault: unavailable, and nothing changes.
    before = await table(client)
    restore = await client.ask("restore_backup", {})
    assert restore["ok"] is False, restore
    assert restore["error"]["code"] == "unavailable", restore
    assert await table(client) == before
    assert path.read_bytes() == old

    fault.off()
    await wait_until(lambda: csv_rows(path).get("1", {}).get("user") == "in the journal only", "the csv caught up")
    assert csv_rows(path)[str(added["id"])]["user"] == "added meanwhile"
    assert not temp_files(data)

    # Acked while the checkpoints fail, then a crash: the journal has them.
    fault.on()
    later = (await client.ask("update_csv", {"id": 1, "values": {"user": "acked, csv behind"}}))["row"]
    count = len(fault.failed())
    await wait_until(lambda: len(fault.failed()) > count, "a checkpoint tried")
    server.kill()
    fault.off()
    assert csv_rows(path)["1"]["user"] == "in the journal only"
    server.start()
    client = await connect(server.url, await login(server.url, "tmp_user"))
    rows, _, _ = await table(client)
    assert rows[1] == later
    assert later["version"] > updated["version"]
    assert rows[added["id"]] == added
    await wait_until(lambda: csv_rows(path)["1"]["user"] == "acked, csv behind", "the csv caught up after the restart")


async def test_a_directory_that_fails_to_sync_after_the_rename_stops_checkpoints(
    tmp_path: Path, make_server: MakeServer, connect: Connect
) -> None:
    data = tmp_path / "data"
    fault = FsyncFault.build(tmp_path / "fault", str(data))
    server = with_fault(make_server({"CSV_FLUSH_S": "0.2", **fault.settings()}, data_dir=data))
    client = await connect(server.url, await login(server.url, "dir_user"))
    path = data / CSV
    meta = journal_meta(data)
    assert meta["checkpoint_fp"] == fingerprint(path)
    kept = tmp_path / "old-checkpoint.csv"
    os.link(path, kept)  # the file a crash may bring back, the rename not being durable

    synced_before = len(fault.calls())  # the start's own syncs of the directory
    fault.on()
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    first = (await client.ask("update_csv", {"id": 1, "values": {"user": "renamed, not synced"}}))["row"]
    await wait_until(lambda: bool(fault.failed()), "a checkpoint renamed the csv")
    await asyncio.sleep(0.3)
    after = journal_meta(data)
    # The new file is whole and in place, but the journal does not count it as done.
    assert csv_rows(path)["1"]["user"] == "renamed, not synced"
    assert (after["checkpoint_fp"], after["checkpoint_seq"]) == (meta["checkpoint_fp"], meta["checkpoint_seq"])
    assert after["pending_fp"] == fingerprint(path)
    assert after["pending_seq"] == first["version"]

    # Writes go on (the journal is fine); no checkpoint, so no fsync of the directory, again.
    second = (await client.ask("update_csv", {"id": 1, "values": {"user": "journal only"}}))["row"]
    await asyncio.sleep(1.0)
    since_fault = fault.calls()[synced_before:]
    assert [call.failed for call in since_fault] == [True], "\n".join(map(str, since_fault))
    assert csv_rows(path)["1"]["user"] == "renamed, not synced"
    assert not temp_files(data)
    fault.off()
    assert server.stop() == 0
    assert journal_meta(data)["pending_fp"] == fingerprint(path)  # not even at the clean stop

    # Whichever file the crash left, a restart serves every acked write: first the new one...
    server.start()
    client = await connect(server.url, await login(server.url, "dir_user"))
    assert (await table(client))[0][1] == second
    await wait_until(lambda: csv_rows(path)["1"]["user"] == "journal only", "the csv caught up")
    await client.disconnect()
    server.kill()
    # ...then, the journal having moved on, the old file: a replay from the old checkpoint.
    os.replace(kept, path)
    assert journal_meta(data)["checkpoint_fp"] != fingerprint(path)  # adopted as a hand edit now
    # (Before the restart above, the journal still had the old checkpoint: shown by meta above.)


async def test_backups_that_fail_to_sync_abort_the_checkpoint(
    tmp_path: Path, make_server: MakeServer, connect: Connect
) -> None:
    data = tmp_path / "data"
    fault = FsyncFault.build(tmp_path / "fault", str(data / "backups"))
    server = with_fault(
        make_server({"CSV_FLUSH_S": "0.2", "BACKUP_INTERVAL_S": "0", **fault.settings()}, data_dir=data)
    )
    client = await connect(server.url, await login(server.url, "backup_user"))
    path = data / CSV
    old = path.read_bytes()
    backups = sorted(p.name for p in (data / "backups").iterdir())
    listed = (await client.ask("list_backups", {}))["backups"]

    fault.on()
    assert (await client.ask("lock_row", {"id": 1}))["ok"]
    assert (await client.ask("update_csv", {"id": 1, "values": {"user": "not yet in the csv"}}))["ok"]
    await wait_until(lambda: len(fault.failed()) >= 2, "two checkpoints tried")
    await wait_until(lambda: not temp_files(data), "the failed temp files removed", timeout=2)
    assert path.read_bytes() == old
    assert sorted(p.name for p in (data / "backups").iterdir()) == backups  # no unsynced backup left
    assert (await client.ask("list_backups", {}))["backups"] == listed

    fault.off()
    await wait_until(lambda: csv_rows(path)["1"]["user"] == "not yet in the csv", "the csv caught up")
    assert len(list((data / "backups").iterdir())) == len(backups) + 1
    assert not temp_files(data)
