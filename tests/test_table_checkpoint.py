"""`Checkpointer`, built from real parts (files in a temp DATA_DIR, a journal on a temp SQLite
file, backups with a clock the test moves): the CSV it writes loads back to the table, a
snapshot holding a change that is undone never becomes the CSV, and the version replaced is
kept when asked or due. Both ways of taking the snapshot are run: a forked child, and a copy
written by a thread where there is no fork."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest

from protocol.errors import Unavailable
from protocol.values import Value
from storage.csv.load import ColumnType, load_csv
from storage.csv.write import write_csv
from storage.files import fingerprint
from storage.journal import Journal
from storage.table.backups import Backups
from storage.table.checkpoint import Checkpointer
from storage.table.commit import GroupCommit, Pending
from storage.table.files import TableFiles
from storage.table.fork import CAN_FORK
from storage.table.rows import Change, Rows
from tests.table_parts import Clock, HeldAppend, bounded, read_journal

HEADER = ["id", "name", "qty", "price"]
FIRST: list[list[Value]] = [[1, "anna", 3, 1.5], [2, "ben", None, -2.0], [3, "cy", 7, None]]
HISTORY_KEEP = 2


@dataclass
class Parts:
    files: TableFiles
    rows: Rows
    commit: GroupCommit
    journal: Journal
    backups: Backups
    clock: Clock
    checkpoints: Checkpointer
    db: Path

    async def change(self, make: Callable[[Rows], Change]) -> Pending:
        pending = self.commit.submit(make(self.rows))
        await bounded(pending.durable())
        return pending


@pytest.fixture(params=[True, False], ids=["forked", "threaded"])
def can_fork(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    fork: bool = request.param
    if fork and not CAN_FORK:
        pytest.skip("no fork here")
    monkeypatch.setattr("storage.table.checkpoint.CAN_FORK", fork)
    return fork


def write_first_csv(files: TableFiles) -> None:
    write_csv(files.csv, HEADER, FIRST)


def temp_files(files: TableFiles) -> list[str]:
    return sorted(p.name for p in files.data_dir.glob("*.tmp"))


def csv_table(path: Path, types: dict[str, ColumnType]) -> list[tuple[int, tuple[Value, ...]]]:
    loaded = load_csv(path, types)
    return list(zip(loaded.ids, loaded.values, strict=True))


def table_now(rows: Rows) -> list[tuple[int, tuple[Value, ...]]]:
    return [(r["id"], tuple(r["values"].values())) for r in rows.page(0, rows.total)]


@pytest.fixture
async def parts(tmp_path: Path, can_fork: bool) -> AsyncIterator[Parts]:
    files = TableFiles(tmp_path / "data")
    files.claim()
    write_first_csv(files)
    db = tmp_path / "journal.db"
    journal = Journal(db)
    await journal.open(HISTORY_KEEP)
    rows = Rows(100)
    rows.install(load_csv(files.csv, None, None, 1), 1, 0)
    commit = GroupCommit(journal, rows, HISTORY_KEEP)
    commit.start(1, (), 1)
    clock = Clock(datetime(2024, 1, 1, tzinfo=UTC))
    backups = Backups(files.backups, keep=10, interval_s=60, clock=clock)
    checkpoints = Checkpointer(files, rows, commit, journal, backups, flush_s=3600, history_keep=HISTORY_KEEP)
    checkpoints.base(1, len(FIRST))
    yield Parts(files, rows, commit, journal, backups, clock, checkpoints, db)
    await commit.stop()
    await journal.close()
    files.release()


async def test_a_checkpoint_writes_a_csv_that_loads_back_to_the_table(parts: Parts) -> None:
    await parts.change(lambda r: r.update(1, {"name": 'say "hi", then\r\nleave', "price": -0.0}, None, "u"))
    await parts.change(lambda r: r.delete(2, None, "u"))
    await parts.change(lambda r: r.add({"name": "=1+1", "qty": -5}, "u"))
    await parts.change(lambda r: r.add({"name": "", "price": 1e300}, "u"))
    await parts.checkpoints.checkpoint()

    types: dict[str, ColumnType] = {c.name: c.type for c in parts.rows.columns}
    assert csv_table(parts.files.csv, types) == table_now(parts.rows)
    assert parts.checkpoints.seq == parts.rows.seq == 5
    meta = (await read_journal(parts.db)).meta
    assert meta["checkpoint_seq"] == 5
    assert meta["checkpoint_fp"] == fingerprint(parts.files.csv)
    assert meta["checkpoint_rows"] == 4
    assert meta["columns"] == [[c.name, c.type] for c in parts.rows.columns]
    assert meta.get("pending_fp") is None
    assert temp_files(parts.files) == []


async def test_a_snapshot_holding_a_change_that_is_undone_never_becomes_the_csv(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_bytes, before_fp = parts.files.csv.read_bytes(), fingerprint(parts.files.csv)
    appends = HeldAppend(parts.journal, monkeypatch)
    appends.fail = OSError("disk full")
    pending = parts.commit.submit(parts.rows.add({"name": "never durable"}, "u"))
    assert parts.rows.total == 4  # the snapshot taken now holds the change
    with pytest.raises(Unavailable):
        await parts.checkpoints.checkpoint()
    with pytest.raises(Unavailable):
        await bounded(pending.durable())
    assert parts.files.csv.read_bytes() == before_bytes
    assert fingerprint(parts.files.csv) == before_fp
    assert temp_files(parts.files) == []
    assert parts.checkpoints.seq == 1
    meta = (await read_journal(parts.db)).meta
    assert "pending_fp" not in meta
    assert "checkpoint_seq" not in meta
    assert parts.backups.list() == []  # nothing replaced, nothing kept

    appends.fail = None  # the next checkpoint goes through
    await parts.change(lambda r: r.add({"name": "durable"}, "u"))
    await parts.checkpoints.checkpoint()
    names = [values[0] for _, values in csv_table(parts.files.csv, {"qty": "integer", "price": "number"})]
    assert names == ["anna", "ben", "cy", "durable"]


async def test_a_checkpoint_waits_for_the_changes_its_snapshot_holds(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_bytes = parts.files.csv.read_bytes()
    appends = HeldAppend(parts.journal, monkeypatch)
    appends.hold()
    pending = parts.commit.submit(parts.rows.add({"name": "eve"}, "u"))
    writing = asyncio.create_task(parts.checkpoints.checkpoint())
    await appends.entered.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not writing.done()
    assert parts.files.csv.read_bytes() == before_bytes
    appends.release.set()
    await bounded(writing)
    await bounded(pending.durable())
    assert parts.checkpoints.seq == 2
    assert csv_table(parts.files.csv, {"qty": "integer", "price": "number"})[-1] == (4, ("eve", None, None))


def backup_bytes(parts: Parts) -> list[tuple[int, int, bytes]]:
    """Each backup's seq, rows and content, newest first."""
    return [(b.seq, b.rows, parts.backups.path(b).read_bytes()) for b in parts.backups.list()]


async def test_the_replaced_csv_is_kept_once_per_interval_or_before_a_restore(parts: Parts) -> None:
    first = parts.files.csv.read_bytes()
    await parts.change(lambda r: r.add({"name": "a"}, "u"))
    await parts.checkpoints.checkpoint()  # no backup yet: due
    assert backup_bytes(parts) == [(1, 3, first)]

    second = parts.files.csv.read_bytes()
    parts.clock.advance(30)
    await parts.change(lambda r: r.add({"name": "b"}, "u"))
    await parts.checkpoints.checkpoint()  # within the interval: not kept
    assert backup_bytes(parts) == [(1, 3, first)]

    parts.clock.advance(1)
    await parts.change(lambda r: r.add({"name": "c"}, "u"))
    async with parts.checkpoints.replacing():  # kept whatever the interval, as it is now
        third = parts.files.csv.read_bytes()
    assert backup_bytes(parts) == [(4, 6, third), (1, 3, first)]  # "c" included
    assert second != third

    fourth = parts.files.csv.read_bytes()
    parts.clock.advance(60)
    await parts.change(lambda r: r.add({"name": "d"}, "u"))
    await parts.checkpoints.checkpoint()  # the interval is over
    assert backup_bytes(parts)[0] == (4, 6, fourth)


async def test_with_nothing_new_a_checkpoint_writes_nothing(parts: Parts) -> None:
    before = fingerprint(parts.files.csv)
    await parts.checkpoints.checkpoint()
    assert fingerprint(parts.files.csv) == before
    assert parts.backups.list() == []
    async with parts.checkpoints.replacing():  # the CSV is current: it is what is kept
        pass
    assert fingerprint(parts.files.csv) == before
    assert backup_bytes(parts) == [(1, 3, parts.files.csv.read_bytes())]


async def test_a_checkpoint_prunes_the_journal_to_the_history_kept(parts: Parts) -> None:
    for n in range(5):
        await parts.change(partial(Rows.update, row_id=1, values={"qty": n}, version=None, by="u"))
    await parts.checkpoints.checkpoint()
    held = await read_journal(parts.db)
    assert [c["seq"] for c in held.history] == [5, 6]  # the last HISTORY_KEEP changes
    assert held.replay == []  # the CSV holds every change


async def test_replacing_holds_off_checkpoints_after_keeping_the_current_csv(parts: Parts) -> None:
    await parts.change(lambda r: r.add({"name": "a"}, "u"))
    await parts.checkpoints.checkpoint()
    current = parts.files.csv.read_bytes()
    async with parts.checkpoints.replacing():
        assert backup_bytes(parts)[0] == (2, 4, current)
        await parts.change(lambda r: r.add({"name": "b"}, "u"))
        waiting = asyncio.create_task(parts.checkpoints.checkpoint())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()
        assert parts.files.csv.read_bytes() == current
    await bounded(waiting)
    assert parts.checkpoints.seq == 3


async def test_replacing_keeps_the_table_as_it_is_now_when_the_csv_is_behind(parts: Parts) -> None:
    await parts.change(lambda r: r.add({"name": "not yet in the csv"}, "u"))
    now = table_now(parts.rows)
    async with parts.checkpoints.replacing():
        newest = parts.backups.path(parts.backups.list()[0])
        assert csv_table(newest, {"qty": "integer", "price": "number"}) == now
