"""Small real pieces of the table for the in-process tests of storage/table: a `Rows` with one
column of each type, what a journal holds, read as a restart reads it, a journal
append a test can hold or fail, and a clock a test moves by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protocol.results import Row as WireRow
from protocol.values import Value
from storage.csv.load import Column, LoadedCsv
from storage.journal import Journal, JournalRecord, JournalState
from storage.table.rows import Rows

COLUMNS = [Column("id", "integer"), Column("name", "text"), Column("qty", "integer"), Column("price", "number")]
# Ids out of order, as a file may hold them, and with a gap: paging must not depend on either.
BASE: dict[int, tuple[Value, ...]] = {4: ("dora", 7, None), 1: ("anna", 3, 1.5), 2: ("ben", None, -2.0)}
BASE_SEQ = 5
T = TypeVar("T")


def loaded(data: dict[int, tuple[Value, ...]], version: int, columns: Sequence[Column] = COLUMNS) -> LoadedCsv:
    """What `load_csv(..., version=version)` makes of a file holding `data`, in that order."""
    return LoadedCsv(
        columns=list(columns), ids=list(data), values=[(*v, version) for v in data.values()], rewritten=False
    )


def make_rows(max_cell_chars: int = 10) -> Rows:
    """The BASE table at seq BASE_SEQ, every row at that version."""
    rows = Rows(max_cell_chars)
    rows.install(loaded(BASE, BASE_SEQ), BASE_SEQ, 0)
    return rows


State = tuple[list[WireRow], int, int, int]


def state(rows: Rows) -> State:
    """Everything a reader or the next change can tell about the table."""
    return rows.page(0, rows.total + 10), rows.seq, rows.max_id, rows.total


async def read_journal(db: Path) -> JournalState:
    """What the journal at `db` holds, read through a connection of its own (as a restart
    would), while the one under test may still be open."""
    journal = Journal(db)
    try:
        return await journal.open(history_keep=1_000_000)
    finally:
        await journal.close()


async def bounded(awaitable: Awaitable[T], seconds: float = 10) -> T:
    """A wait that fails instead of hanging when a future is never resolved."""
    return await asyncio.wait_for(awaitable, seconds)


class HeldAppend:
    """Wraps a real journal's `append`: records every batch, can hold a batch until
    `release` is set, and can make it fail instead of reaching the disk."""

    def __init__(self, journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[JournalRecord]] = []
        self.entered = asyncio.Event()  # a batch is inside append
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None
        real = journal.append

        async def append(records: Sequence[JournalRecord], *rest: Any) -> None:
            self.batches.append(list(records))
            self.entered.set()
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
            await real(records, *rest)

        monkeypatch.setattr(journal, "append", append)

    def hold(self) -> None:
        self.release.clear()
        self.entered.clear()


class Clock:
    """A `clock` for `Backups`: time moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
