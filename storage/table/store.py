"""The table store: the rows in memory, the group commit, the CSV checkpoint and the backups,
put together, opened from what is on disk and closed with everything written.

Opening: a CSV whose identity matches the journal's last checkpoint is loaded with its pinned
column types and the journal's later changes replayed over it; any other CSV (the first
start, or a file edited by hand while the server was stopped) is adopted as one new table
change, given an id column first if it has none (the original kept in backups/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from protocol.errors import Unavailable
from protocol.results import Column as WireColumn
from protocol.results import CsvUpdate, RestoreResult
from protocol.results import Row as WireRow
from storage.csv.load import ID_COLUMN, Column, ColumnType, LoadedCsv, load_csv, read_header
from storage.csv.refusals import CsvFormatError
from storage.csv.stream import (
    ByteStream,
    ForkedFile,
    Framed,
    ThreadedStream,
    forked_csv,
    forked_stream,
    threaded_csv,
    write_stream,
)
from storage.csv.write import PrefixedIds, write_blocks, write_with_ids
from storage.files import fingerprint, replace_file
from storage.journal import Journal, JournalState
from storage.memory import release_free_memory, return_large_frees
from storage.sample import write_sample
from storage.table.backups import BackupInfo, Backups
from storage.table.checkpoint import Checkpointer
from storage.table.commit import ChangeListener, CommitObserver, GroupCommit, Mark, Pending
from storage.table.files import TableFiles, TableLoadError
from storage.table.fork import CAN_FORK, fork_snapshot
from storage.table.records import record_parts, record_pieces
from storage.table.rows import Rows, now_ms

log = logging.getLogger("tablecast.table")


@dataclass(frozen=True)
class TableConfig:
    data_dir: Path
    history_keep: int = 10000
    flush_s: float = 1.0
    backup_interval_s: float = 60.0
    backup_keep: int = 50
    max_cell_chars: int = 10000


class TableStore:
    def __init__(
        self,
        config: TableConfig,
        journal: Journal,
        listeners: Sequence[ChangeListener] = (),
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._config = config
        self._journal = journal
        self._files = TableFiles(config.data_dir)
        self._rows = Rows(config.max_cell_chars)
        self._backups = Backups(self._files.backups, config.backup_keep, config.backup_interval_s)
        # The checkpoint hears of every change first, then the caller's listeners.
        self._commit = GroupCommit(journal, self._rows, config.history_keep, [self._changed, *listeners], on_commit)
        self._checkpoints = Checkpointer(
            self._files,
            self._rows,
            self._commit,
            journal,
            self._backups,
            flush_s=config.flush_s,
            history_keep=config.history_keep,
        )
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    def _changed(self, payloads: list[CsvUpdate]) -> None:
        self._checkpoints.changed(payloads)

    # ---- opening and closing ------------------------------------------------------------

    async def open(self) -> None:
        self._files.claim()
        return_large_frees()  # a load's temporaries must not stay in the server's RSS
        state = await self._journal.open(self._config.history_keep)
        meta = state.meta
        if not self._files.csv.exists():
            log.info("creating sample table", extra={"path": str(self._files.csv)})
            write_sample(self._files.csv)
        current = fingerprint(self._files.csv)
        if current == meta.get("checkpoint_fp"):
            await self._resume(state, int(meta["checkpoint_seq"]), meta.get("columns"))
        elif current is not None and current == meta.get("pending_fp"):
            await self._resume(state, int(meta["pending_seq"]), meta.get("pending_columns"))
        else:
            await self._adopt(int(meta.get("seq", 0)) + 1, int(meta.get("max_id", 0)))
        self._flusher = asyncio.create_task(self._checkpoints.run(), name="csv-flusher")

    async def _resume(self, state: JournalState, base_seq: int, types: Any) -> None:
        """The CSV is our own checkpoint at `base_seq`: load it, then replay what came after."""
        meta = state.meta
        version = int(meta.get("base_version", base_seq))
        loaded = await asyncio.to_thread(self._load, self._files.csv, dict(types) if types else None, version)
        rows = self._rows
        rows.install(loaded, base_seq, int(meta.get("max_id", 0)))
        rows.set_versions(state.versions.items())
        for change in state.replay:
            rows.replay(change)
        rows.seq = max(int(meta.get("seq", 0)), rows.seq)
        checkpoint_rows = len(loaded)  # the file on disk, which may be the pending checkpoint
        del loaded
        release_free_memory()  # the parser's leftovers
        self._commit.start(rows.seq, state.history, int(meta.get("history_floor", 0)))
        self._checkpoints.base(base_seq, checkpoint_rows, dirty=bool(state.replay))
        log.info("table loaded", extra={"rows": rows.total, "seq": rows.seq, "replayed": len(state.replay)})

    async def _adopt(self, seq: int, max_id: int) -> None:
        """First start, or a CSV edited by hand while we were stopped: it becomes the table,
        as one table change (a reset) with a new seq."""
        with_ids = self._write_ids_aside() if max_id == 0 else None  # it numbers from 1
        try:
            loaded = await asyncio.to_thread(self._load, self._files.csv, None, seq, max_id)
            if loaded.rewritten:
                # Keep the file as it was before we add or move its id column.
                self._backups.keep(self._files.csv, seq - 1, len(loaded))
                if with_ids is not None and (report := await with_ids.report()) and report.matches(loaded):
                    await asyncio.to_thread(replace_file, with_ids.path, self._files.csv)
                else:
                    await self._write_csv(loaded)
        finally:
            if with_ids is not None:
                with_ids.discard()
        await self._become(loaded, seq, max_id)
        self._commit.start(seq, (), seq)
        log.info("table adopted from csv", extra={"rows": self._rows.total, "seq": seq})

    def _load(self, path: Path, types: dict[str, ColumnType] | None, version: int, id_floor: int = 0) -> LoadedCsv:
        started = time.monotonic()

        def progress(rows: int) -> None:
            rate = rows / max(time.monotonic() - started, 1e-6)
            log.info("loading table", extra={"path": str(path), "rows_parsed": rows, "rows_per_s": int(rate)})

        try:
            loaded = load_csv(path, types, progress, version, id_floor)
        except (CsvFormatError, OSError) as exc:
            raise TableLoadError(str(exc)) from None
        log.info("table parsed", extra={"rows": len(loaded), "seconds": round(time.monotonic() - started, 2)})
        return loaded

    def _write_ids_aside(self) -> ForkedFile[PrefixedIds] | None:
        """For a CSV without an id column: a child writing it with ids 1..n into a temp file
        while the parse runs here; used if it matches the parse."""
        try:
            if not CAN_FORK or ID_COLUMN in read_header(self._files.csv):
                return None
        except (CsvFormatError, OSError):
            return None  # the parse reports it
        return ForkedFile(fork_snapshot, self._files.temp(), partial(write_with_ids, self._files.csv))

    async def _write_csv(self, loaded: LoadedCsv) -> None:
        """`loaded` as the CSV on disk: temp file, fsync, rename, fsync of the directory."""
        tmp = self._files.temp()
        header = [c.name for c in loaded.columns]
        if CAN_FORK:  # formatted on every core, the event loop only writes the bytes
            await write_stream(forked_csv(fork_snapshot, header, loaded.blocks, len(loaded), escape=False), tmp)
        else:
            await asyncio.to_thread(write_blocks, tmp, header, loaded.blocks())
        await asyncio.to_thread(replace_file, tmp, self._files.csv)  # unlinking a big old CSV takes ms

    async def _become(self, loaded: LoadedCsv, seq: int, max_id: int) -> None:
        """`loaded`, already on disk as the CSV and read at version `seq`, becomes the table."""
        columns = [[c.name, c.type] for c in loaded.columns]
        max_id = max(max_id, loaded.max_id)
        await self._journal.reset(
            {
                "seq": seq,
                "max_id": max_id,
                "base_version": seq,
                "history_floor": seq,
                "checkpoint_seq": seq,
                "checkpoint_fp": fingerprint(self._files.csv),
                "checkpoint_rows": len(loaded),
                "columns": columns,
                "pending_fp": None,
            }
        )
        self._rows.install(loaded, seq, max_id)
        self._checkpoints.base(seq, len(loaded))
        release_free_memory()  # the parser's leftovers, or the table this one replaced

    async def close(self) -> None:
        self._closing = True
        if self._flusher is not None:
            await self._commit.stop()
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
            try:
                await self._checkpoints.checkpoint()
            except Exception:
                log.exception("final checkpoint failed; the journal still holds every change")
        await self._journal.close()
        self._files.release()

    # ---- reads --------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self._rows.seq

    @property
    def committed_seq(self) -> int:
        return self._commit.committed_seq

    @property
    def total(self) -> int:
        return self._rows.total

    @property
    def columns(self) -> list[Column]:
        return self._rows.columns

    def has(self, row_id: int) -> bool:
        return self._rows.has(row_id)

    def columns_wire(self) -> list[WireColumn]:
        return self._rows.columns_wire()

    def page(self, offset: int, limit: int) -> list[WireRow]:
        return self._rows.page(offset, limit)

    def changes_since(self, since: int) -> list[CsvUpdate] | None:
        return self._commit.changes_since(since)

    def mark(self) -> Mark:
        return self._commit.mark()

    async def settle(self, mark: Mark | None = None) -> None:
        await self._commit.settle(mark)

    async def settle_quietly(self) -> None:
        await self._commit.settle_quietly()

    def csv_stream(self) -> ByteStream:
        """The table as it is at this moment, as a CSV download (text cells formula-escaped),
        made by forked children so that the event loop only relays bytes."""
        rows = self._rows
        if not CAN_FORK:
            return threaded_csv(rows.header(), list(rows.blocks()), escape=True)  # copied now, beside later edits
        try:
            return forked_csv(fork_snapshot, rows.header(), rows.blocks, rows.total, escape=True)
        except OSError as exc:
            raise Unavailable(f"the download cannot start now: {exc}") from None

    def records_stream(self, start: int, end: int) -> ByteStream:
        """The rows at positions [start, end) as they are at this moment, as a JSON array of
        flat records, made like `csv_stream`."""
        if start >= end:
            return Framed(b"[", None, b"]")
        if not CAN_FORK:
            copied = self._rows.page(start, end - start)  # copied now, beside later edits
            return Framed(b"[", ThreadedStream(list(record_parts(copied))), b"]")
        try:
            return Framed(b"[", forked_stream(fork_snapshot, start, end, record_pieces(self._rows.page)), b"]")
        except OSError as exc:
            raise Unavailable(f"the records cannot be sent now: {exc}") from None

    def list_backups(self) -> list[BackupInfo]:
        return self._backups.list()

    # ---- writes -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable("the server is shutting down; nothing was changed")

    def check(self, values: dict[str, Any]) -> None:
        """The error applying `values` would raise, before anything else is looked at."""
        self._rows.check(values)

    def add(self, values: dict[str, Any], by: str) -> Pending:
        self._check_open()
        return self._commit.submit(self._rows.add(values, by))

    def update(self, row_id: int, values: dict[str, Any], version: int | None, by: str) -> Pending:
        self._check_open()
        return self._commit.submit(self._rows.update(row_id, values, version, by))

    def delete(self, row_id: int, version: int | None, by: str) -> Pending:
        self._check_open()
        return self._commit.submit(self._rows.delete(row_id, version, by))

    async def checkpoint(self) -> None:
        await self._checkpoints.checkpoint()

    async def restore(self, name: str | None, by: str) -> RestoreResult:
        """Replace the table with a backup. The caller has stopped all other writes."""
        chosen = self._backups.find(name)
        await self.settle()
        seq = self._rows.seq + 1
        path = self._backups.path(chosen)
        # The table's columns keep their types: a backup value that does not fit one (an
        # integer past 64 bits, text in a number column) refuses the restore, naming the
        # column, rather than a new type being inferred for it. Columns the table lacks are
        # inferred; a type inferred for a column the table has could only differ from its own
        # (a value that fits the type loads under it), so there is nothing to fall back to.
        types: dict[str, ColumnType] = {c.name: c.type for c in self._rows.columns}
        try:
            loaded = await asyncio.to_thread(load_csv, path, types, None, seq)
        except CsvFormatError as exc:
            raise Unavailable(f"backup {chosen.name} cannot be restored into this table: {exc}") from None
        except OSError as exc:
            raise Unavailable(f"backup {chosen.name} cannot be read: {exc}") from None
        async with self._checkpoints.replacing():
            await self._write_csv(loaded)
            await self._become(loaded, seq, self._rows.max_id)
        self._commit.reset(seq)
        self._commit.publish([{"op": "reset", "seq": seq, "by": by, "ts": now_ms()}])
        log.info("backup restored", extra={"backup": chosen.name, "seq": seq, "rows": self.total, "by": by})
        return {"ok": True, "seq": seq, "total": self.total}
