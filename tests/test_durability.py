"""An acked write survives SIGKILL; the CSV on disk is always whole and catches up; hand
edits made while the server was stopped are served after the next start."""

from __future__ import annotations

import asyncio
import csv
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import portalocker

from tests.conftest import Client, ServerProcess, login

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]


async def all_rows(client: Client) -> tuple[dict[int, dict[str, Any]], int]:
    rows: dict[int, dict[str, Any]] = {}
    offset = 0
    while True:
        page = await client.ask("fetch_csv", {"offset": offset, "limit": 10000})
        assert page["ok"], page
        rows.update({row["id"]: row for row in page["rows"]})
        offset += len(page["rows"])
        if offset >= page["total"]:
            return rows, int(page["seq"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


async def test_acked_writes_survive_kill_9(make_server: MakeServer, connect: Connect) -> None:
    # A long flush delay: the CSV cannot have caught up, so only the journal can bring writes back.
    server = make_server({"CSV_FLUSH_S": "60"})
    token = await login(server.url, "durable_user")
    client = await connect(server.url, token)
    expected: dict[int, dict[str, Any] | None] = {}
    for row_id in range(1, 21):
        assert (await client.ask("lock_row", {"id": row_id}))["ok"]
        ack = await client.ask("update_csv", {"id": row_id, "values": {"pnl": row_id * 1.5, "user": f"k{row_id}"}})
        assert ack["ok"], ack
        expected[row_id] = ack["row"]
    for n in range(10):
        ack = await client.ask("add_csv", {"values": {"user": f"added_{n}", "max_risk": n}})
        expected[ack["row"]["id"]] = ack["row"]
    assert (await client.ask("delete_csv", {"id": 50}))["ok"] is False  # not locked: nothing deleted
    assert (await client.ask("lock_row", {"id": 50}))["ok"]
    assert (await client.ask("delete_csv", {"id": 50}))["ok"]
    expected[50] = None
    seq_before = (await client.ask("fetch_csv", {"limit": 1}))["seq"]
    await client.disconnect()
    server.kill()

    server.start()
    client = await connect(server.url, await login(server.url, "durable_user"))
    rows, seq = await all_rows(client)
    assert seq == seq_before
    for row_id, row in expected.items():
        assert rows.get(row_id) == row, row_id
    # ids stay unique after replay: the next add gets a fresh id
    fresh = await client.ask("add_csv", {"values": {"user": "after_restart"}})
    assert fresh["row"]["id"] > max(expected)
    assert fresh["row"]["version"] == seq + 1


async def test_kill_9_storm_loses_no_acked_write(make_server: MakeServer, connect: Connect) -> None:
    server = make_server({"CSV_FLUSH_S": "0.05", "BACKUP_INTERVAL_S": "0"})
    acked: dict[int, float] = {}
    in_flight: dict[int, float] = {}  # sent, ack cut off by the kill: it may or may not be stored
    rng = random.Random(5)
    rows_of = {0: range(1, 40), 1: range(40, 80)}
    for round_no in range(5):
        tokens = [await login(server.url, f"storm_{n}") for n in range(2)]
        clients = [await connect(server.url, token) for token in tokens]
        for n, client in enumerate(clients):
            for row_id in rows_of[n]:
                ack = await client.ask("lock_row", {"id": row_id})
                assert ack["ok"] or ack["error"]["code"] == "cooldown", ack

        async def writer(n: int, client: Client, round_no: int = round_no) -> None:
            k = 0
            while True:
                row_id = rows_of[n][k % len(rows_of[n])]
                value = round_no * 10000 + k + n * 0.5
                in_flight[row_id] = value
                ack = await client.ask("update_csv", {"id": row_id, "values": {"pnl": value}})
                if ack["ok"]:
                    acked[row_id] = value
                del in_flight[row_id]
                k += 1

        tasks = [asyncio.create_task(writer(n, c)) for n, c in enumerate(clients)]
        await asyncio.sleep(0.2 + rng.random() * 0.6)
        server.kill()  # mid-write, mid-checkpoint: any moment
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.disconnect()
        server.start()
        # the CSV on disk is a complete, parseable table at every moment
        on_disk = read_csv(server.data_dir / "backend_table.csv")
        assert len(on_disk) >= 79
        checker = await connect(server.url, await login(server.url, "storm_0"))
        rows, _ = await all_rows(checker)
        for row_id, value in acked.items():
            assert rows[row_id]["values"]["pnl"] in (value, in_flight.get(row_id)), (round_no, row_id)
            acked[row_id] = rows[row_id]["values"]["pnl"]
        in_flight.clear()
        await checker.disconnect()
    assert len(acked) > 50


async def test_csv_on_disk_catches_up_and_is_replaced_atomically(make_server: MakeServer, connect: Connect) -> None:
    server = make_server({"CSV_FLUSH_S": "0.2"})
    client = await connect(server.url, await login(server.url))
    assert (await client.ask("lock_row", {"id": 3}))["ok"]
    ack = await client.ask("update_csv", {"id": 3, "values": {"user": 'quote " and, comma\nnewline', "pnl": -7.25}})
    assert ack["ok"]
    path = server.data_dir / "backend_table.csv"
    deadline = time.monotonic() + 5
    while True:
        rows = {int(r["id"]): r for r in read_csv(path)}
        if rows[3]["pnl"] == "-7.25":
            break
        assert time.monotonic() < deadline, "the CSV did not reflect the acked change within 5 s"
        await asyncio.sleep(0.1)
    assert rows[3]["user"] == 'quote " and, comma\nnewline'
    assert next(iter(rows[3])) == "id"
    assert not list(server.data_dir.glob("*.tmp"))


async def test_csv_without_id_column_gets_ids_and_a_backup(
    make_server: MakeServer, connect: Connect, tmp_path: Path
) -> None:
    data = tmp_path / "plain"
    data.mkdir()
    (data / "backend_table.csv").write_text("name,score\nann,1\nbob,2\ncid,\n")
    server = make_server(data_dir=data)
    client = await connect(server.url, await login(server.url))
    page = await client.ask("fetch_csv", {})
    assert [c["name"] for c in page["columns"]] == ["id", "name", "score"]
    assert [(r["id"], r["values"]["name"], r["values"]["score"]) for r in page["rows"]] == [
        (1, "ann", 1),
        (2, "bob", 2),
        (3, "cid", None),
    ]
    assert read_csv(data / "backend_table.csv")[0] == {"id": "1", "name": "ann", "score": "1"}
    originals = [p.read_text() for p in (data / "backups").iterdir()]
    assert "name,score\nann,1\nbob,2\ncid,\n" in originals


async def test_hand_edit_while_stopped_is_served_as_a_new_change(make_server: MakeServer, connect: Connect) -> None:
    server = make_server()
    client = await connect(server.url, await login(server.url, "editor"))
    seq_before = (await client.ask("fetch_csv", {"limit": 1}))["seq"]
    await client.disconnect()
    assert server.stop() == 0
    path = server.data_dir / "backend_table.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    first = next(csv.reader([lines[1]]))
    first[header.index("user")] = "edited_by_hand"
    lines[1] = ",".join(first)
    lines.append(",hand_added,,,,1.5,2.5,3")  # no id: the server assigns the next one
    path.write_text("\n".join(lines) + "\n")

    server.start()
    client = await connect(server.url, await login(server.url, "editor"))
    rows, seq = await all_rows(client)
    assert seq == seq_before + 1
    assert rows[1]["values"]["user"] == "edited_by_hand"
    assert rows[1]["version"] == seq
    added = [r for r in rows.values() if r["values"]["user"] == "hand_added"]
    assert len(added) == 1
    assert added[0]["id"] == 101
    assert (await client.ask("fetch_csv", {"since": seq_before, "limit": 1}))["reset"] is True


async def test_clean_stop_leaves_the_csv_current(make_server: MakeServer, connect: Connect) -> None:
    server = make_server({"CSV_FLUSH_S": "60"})
    client = await connect(server.url, await login(server.url))
    ack = await client.ask("add_csv", {"values": {"user": "written_at_stop", "broker": "carriage\rreturn"}})
    await client.disconnect()
    assert server.stop() == 0
    rows = read_csv(server.data_dir / "backend_table.csv")
    assert rows[-1]["user"] == "written_at_stop"
    assert int(rows[-1]["id"]) == ack["row"]["id"]
    assert rows[-1]["broker"] == "carriage\rreturn"
    server.start()
    client = await connect(server.url, await login(server.url))
    page = await client.ask("fetch_csv", {"offset": ack["row"]["id"] - 1, "limit": 1})
    assert page["rows"] == [ack["row"]]


async def test_journal_failure_is_unavailable_and_changes_nothing(make_server: MakeServer, connect: Connect) -> None:
    server = make_server()
    client = await connect(server.url, await login(server.url))
    before = await client.ask("fetch_csv", {"limit": 1})
    db = sqlite3.connect(server.data_dir / "backend.db")
    db.execute("ALTER TABLE table_changes RENAME TO table_changes_gone")
    db.commit()
    ack = await client.ask("add_csv", {"values": {"user": "cannot_store"}})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "unavailable"
    after = await client.ask("fetch_csv", {"limit": 1})
    assert (after["total"], after["seq"]) == (before["total"], before["seq"])
    db.execute("ALTER TABLE table_changes_gone RENAME TO table_changes")
    db.commit()
    db.close()
    ack = await client.ask("add_csv", {"values": {"user": "stored_again"}})
    assert ack["ok"], ack
    assert ack["row"]["version"] == before["seq"] + 1


async def test_a_crash_mid_export_leaves_no_writer_behind(
    make_server: MakeServer, connect: Connect, tmp_path: Path
) -> None:
    data = tmp_path / "big"
    data.mkdir()
    with (data / "backend_table.csv").open("w") as fh:
        fh.write("name,score,note\n")
        fh.writelines(f"row_{n},{n},some text for row {n}\n" for n in range(300_000))
    server = make_server({"CSV_FLUSH_S": "0"}, data_dir=data)
    client = await connect(server.url, await login(server.url))
    await client.ask("add_csv", {"values": {"name": "trigger"}})
    deadline = time.monotonic() + 10
    while not (crashed_temps := list(data.glob("backend_table.csv.*.tmp"))):  # an export is being written
        assert time.monotonic() < deadline, "no export started"
        await asyncio.sleep(0.005)
    server.kill()
    # The export child dies with the server and holds no share of the DATA_DIR lock.
    deadline = time.monotonic() + 2
    with (data / "backend_table.csv.lock").open("a") as lock_file:
        while True:
            try:
                portalocker.lock(lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB)
                break
            except portalocker.exceptions.LockException:
                assert time.monotonic() < deadline, "an orphaned export still holds the data dir"
                await asyncio.sleep(0.02)
        portalocker.unlock(lock_file)
    server.start()
    client = await connect(server.url, await login(server.url))
    page = await client.ask("fetch_csv", {"offset": 300_000, "limit": 5})
    assert [row["values"]["name"] for row in page["rows"]] == ["trigger"]
    assert not [path for path in crashed_temps if path.exists()]


async def test_versions_and_ids_survive_checkpoints_that_prune_their_changes(
    make_server: MakeServer, connect: Connect
) -> None:
    """The CSV holds no versions: once a checkpoint prunes the changes it holds, their rows'
    versions and the highest id given out must live on elsewhere in the journal."""
    server = make_server({"CSV_FLUSH_S": "0.05", "HISTORY_KEEP": "1"})
    token = await login(server.url, "pruned_user")
    client = await connect(server.url, token)
    expected: dict[int, dict[str, Any]] = {}
    for row_id in (3, 7, 9):
        assert (await client.ask("lock_row", {"id": row_id}))["ok"]
        ack = await client.ask("update_csv", {"id": row_id, "values": {"user": f"pruned_{row_id}"}})
        expected[row_id] = ack["row"]
    added = (await client.ask("add_csv", {"values": {"user": "short_lived"}}))["row"]
    assert (await client.ask("lock_row", {"id": added["id"]}))["ok"]
    assert (await client.ask("delete_csv", {"id": added["id"]}))["ok"]
    seq_before = (await client.ask("fetch_csv", {"limit": 1}))["seq"]
    deadline = time.monotonic() + 20
    while not any(row.get("user") == "pruned_9" for row in read_csv(server.data_dir / "backend_table.csv")):
        assert time.monotonic() < deadline, "the CSV never caught up"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the checkpoint's journal step follows the rename
    await client.disconnect()
    for restart in (server.kill, server.stop):
        restart()
        server.start()
        client = await connect(server.url, await login(server.url, "pruned_user"))
        rows, seq = await all_rows(client)
        assert seq == seq_before
        for row_id, row in expected.items():
            assert rows[row_id] == row, row_id
        assert added["id"] not in rows
        await client.disconnect()
    client = await connect(server.url, await login(server.url, "pruned_user"))
    fresh = (await client.ask("add_csv", {"values": {"user": "after_prune"}}))["row"]
    assert fresh["id"] > added["id"]  # ids are never reused
    assert fresh["version"] == seq_before + 1
