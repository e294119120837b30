"""The CSV download in-process: a snapshot of one moment made by forked children (one per
slice of rows), settled against in-flight changes, and no child left behind."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import Unavailable
from storage.csv import stream as csvstream
from storage.journal import Journal
from storage.locks import InMemoryLockStore
from storage.table import TableConfig, TableStore
from storage.table_service import PresenceConfig, TableService

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the download forks")


@pytest.fixture
async def table(tmp_path: Path) -> AsyncIterator[TableStore]:
    store = TableStore(TableConfig(data_dir=tmp_path / "data", flush_s=3600), Journal(tmp_path / "journal.db"))
    await store.open()  # the built-in sample table
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def service(table: TableStore) -> TableService:
    return TableService(table, InMemoryLockStore(ttl_s=30, cooldown_s=0), PresenceConfig())


@pytest.fixture(params=[1, 3], ids=["one-child", "three-children"])
def slices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    count: int = request.param
    monkeypatch.setattr(csvstream, "_MIN_SLICE_ROWS", 1)
    monkeypatch.setattr(csvstream, "_MAX_SLICES", count)
    monkeypatch.setattr(os, "cpu_count", lambda: count)
    return count


def expected_csv(table: TableStore) -> bytes:
    """The table as it is now, through the csv module, text cells formula-escaped."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([c.name for c in table.columns])
    formula = ("=", "+", "-", "@", "\t", "\r")
    for row in table.page(0, table.total):
        values = [row["values"][c.name] for c in table.columns[1:]]
        writer.writerow([row["id"], *("'" + v if isinstance(v, str) and v.startswith(formula) else v for v in values)])
    return buffer.getvalue().encode()


async def read_all(stream: csvstream.ByteStream) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream.chunks()])
    finally:
        await stream.close()


def our_children() -> set[int]:
    """Pids of live or unreaped children of this process."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                found.add(int(entry.name))
    return found


async def change(table: TableStore, **values: Any) -> int:
    added = table.add(values, "tester")
    await added.durable()
    row_id: int = added.change.row()["id"]
    return row_id


@pytest.mark.usefixtures("slices")
async def test_download_is_the_table_at_the_moment_it_was_asked_for(service: TableService, table: TableStore) -> None:
    await change(table, user="=risky", pnl=-1.5, max_risk=3)
    before = expected_csv(table)
    stream = await service.export()
    # Changes after the snapshot, before a byte was read, are not in it.
    await change(table, user="later")
    deleted = table.delete(1, None, "tester")
    await deleted.durable()
    assert await read_all(stream) == before
    assert expected_csv(table) != before
    assert not our_children()


@pytest.mark.usefixtures("slices")
async def test_a_download_left_unread_stops_its_children(service: TableService) -> None:
    stream = await service.export()
    chunks = stream.chunks()
    assert await anext(chunks)  # started, then the client goes away
    await stream.close()
    assert not our_children()


async def test_a_download_holding_a_change_that_is_undone_is_refused(
    service: TableService, table: TableStore, monkeypatch: pytest.MonkeyPatch
) -> None:

    async def failing_append(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(table._journal, "append", failing_append)
    pending = table.add({"user": "never durable"}, "tester")
    with pytest.raises(Unavailable):
        await service.export()  # the snapshot held the change; its commit failed
    with pytest.raises(Unavailable):
        await pending.durable()
    assert not our_children()
