"""The table: rows in memory, every change journaled before its ack, the CSV a checkpoint.

Write path (cost independent of table size): validate, apply to the in-memory dict, queue a
journal record; one writer task commits all queued records in one SQLite transaction (group
commit) and only then resolves the callers' futures and hands the changes to listeners, in
seq order. If a commit fails, every change not yet durable is undone in reverse order and
its caller gets `unavailable`, so memory never holds what the disk does not.

`backend_table.csv` is rewritten in the background from a forked copy of the process (the
fork is a free copy-on-write snapshot, and the writing runs on another core), renamed into
place atomically, and recorded in `table_meta` so a restart replays only later changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import portalocker
from sortedcontainers import SortedList

from protocol.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, Unavailable
from protocol.results import Backup, CsvUpdate, RestoreResult
from protocol.results import Column as WireColumn
from protocol.results import Row as WireRow
from storage.csvfile import (
    ID_COLUMN,
    Column,
    ColumnType,
    CsvFormatError,
    LoadedCsv,
    PrefixedIds,
    fingerprint,
    fsync_dir,
    load_csv,
    read_header,
    replace_file,
    write_blocks,
    write_with_ids,
)
from storage.csvstream import CsvStream, ForkedFile, ThreadedCsv, forked_csv, write_stream
from storage.csvtext import ROWS_PER_BLOCK, Block, Value, id_block
from storage.journal import Journal, JournalRecord
from storage.memory import release_free_memory, return_large_frees
from storage.sample import write_sample

log = logging.getLogger("tablecast.table")

Row = tuple[int, tuple[Value, ...]]  # (version, values of every column but id)
ChangeListener = Callable[[list[CsvUpdate]], None]
CommitObserver = Callable[[int, float], None]  # (changes in the batch, seconds the commit took)
CSV_NAME = "backend_table.csv"
_BACKUP_NAME = re.compile(r"^backend_table-(\d{8}T\d{6}\.\d{3})Z-seq(\d+)-rows(\d+)\.csv$")


class TableLoadError(Exception):
    """The table cannot be opened; the server must not start."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class TableConfig:
    data_dir: Path
    history_keep: int = 10000
    flush_s: float = 1.0
    backup_interval_s: float = 60.0
    backup_keep: int = 50
    max_cell_chars: int = 10000


@dataclass(frozen=True)
class BackupInfo:
    name: str
    created_at: int
    rows: int
    bytes: int
    seq: int

    def wire(self) -> Backup:
        return {"name": self.name, "created_at": self.created_at, "rows": self.rows, "bytes": self.bytes}


@dataclass(eq=False)
class Change:
    seq: int
    op: str
    row_id: int
    payload: CsvUpdate
    old: Row | None  # for undo
    max_id_before: int
    max_id_after: int
    future: asyncio.Future[None] = field(repr=False)

    def row(self) -> WireRow:
        """The changed row as stored (add and update)."""
        row = self.payload.get("row")
        assert row is not None, f"a {self.op} carries no row"
        return row

    def record(self) -> JournalRecord:
        version = None if self.op == "delete" else self.seq
        return JournalRecord(seq=self.seq, change=self.payload, row_id=self.row_id, version=version)


class TableStore:
    def __init__(self, config: TableConfig, journal: Journal, on_commit: CommitObserver | None = None) -> None:
        self._config = config
        self._journal = journal
        self._on_commit = on_commit
        self.csv_path = config.data_dir / CSV_NAME
        self.backup_dir = config.data_dir / "backups"
        self.columns: list[Column] = []
        self._names: list[str] = []  # value columns, without id
        self._types: list[ColumnType] = []
        self._index: dict[str, int] = {}
        self._rows: dict[int, Row] = {}
        self._order: SortedList = SortedList()
        self._seq = 0
        self._committed_seq = 0
        self._max_id = 0
        self._history: deque[CsvUpdate] = deque(maxlen=config.history_keep)
        self._reset_floor = 0
        self._checkpoint_seq = 0
        self._checkpoint_rows = 0
        self._queue: list[Change] = []
        self._last_change: Change | None = None
        self._rollbacks = 0
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._checkpoint_lock = asyncio.Lock()
        self._last_export_s = 0.0
        self._listeners: list[ChangeListener] = []
        self._lock_file: IO[str] | None = None
        self._temp_count = 0
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        self.backup_dir.mkdir(exist_ok=True)
        lock_path = self._config.data_dir / (CSV_NAME + ".lock")
        # The sidecar is never replaced, so the lock survives every CSV rename.
        self._lock_file = lock_path.open("a")
        try:
            portalocker.lock(self._lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.exceptions.LockException:
            self._lock_file.close()
            self._lock_file = None
            raise TableLoadError(f"{self._config.data_dir} is in use by another server") from None
        for stale in self._config.data_dir.glob(CSV_NAME + ".*.tmp"):
            stale.unlink()  # left by a crash; never the CSV itself
        return_large_frees()  # a load's temporaries must not stay in the server's RSS
        state = await self._journal.open(self._config.history_keep)
        meta = state.meta
        if not self.csv_path.exists():
            log.info("creating sample table", extra={"path": str(self.csv_path)})
            write_sample(self.csv_path)
        current_fp = fingerprint(self.csv_path)
        if current_fp == meta.get("checkpoint_fp"):
            base_seq, types = int(meta["checkpoint_seq"]), meta.get("columns")
        elif current_fp is not None and current_fp == meta.get("pending_fp"):
            base_seq, types = int(meta["pending_seq"]), meta.get("pending_columns")
        else:
            await self._adopt_file(int(meta.get("seq", 0)) + 1, int(meta.get("max_id", 0)))
            self._start()
            return
        loaded = await asyncio.to_thread(self._load, self.csv_path, dict(types) if types else None)
        self._install(loaded, base_version=int(meta.get("base_version", base_seq)))
        for row_id, version in state.versions.items():
            if row_id in self._rows:
                self._rows[row_id] = (version, self._rows[row_id][1])
        replayed = 0
        for change in state.replay:
            self._replay(change)
            replayed += 1
        self._seq = self._committed_seq = max(int(meta.get("seq", 0)), base_seq)
        self._max_id = max(int(meta.get("max_id", 0)), self._max_id)
        self._checkpoint_seq = base_seq
        self._checkpoint_rows = int(meta.get("checkpoint_rows", len(loaded)))
        del loaded
        release_free_memory()  # the parser's leftovers
        self._reset_floor = int(meta.get("history_floor", 0))
        self._history.extend(state.history)
        log.info(
            "table loaded",
            extra={"rows": len(self._rows), "seq": self._seq, "replayed": replayed},
        )
        if replayed:
            self._dirty.set()
        self._start()

    def _start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="table-journal-writer")

    def _load(self, path: Path, types: dict[str, ColumnType] | None) -> LoadedCsv:
        started = time.monotonic()

        def progress(rows: int) -> None:
            rate = rows / max(time.monotonic() - started, 1e-6)
            log.info("loading table", extra={"path": str(path), "rows_parsed": rows, "rows_per_s": int(rate)})

        try:
            loaded = load_csv(path, types, progress)
        except (CsvFormatError, OSError) as exc:
            raise TableLoadError(str(exc)) from None
        log.info(
            "table parsed",
            extra={"rows": len(loaded), "seconds": round(time.monotonic() - started, 2)},
        )
        return loaded

    async def _adopt_file(self, seq: int, max_id: int) -> None:
        """First start, or a CSV edited by hand while we were stopped: it becomes the table,
        as one table change (a reset) with a new seq."""
        with_ids = self._write_ids_aside()
        try:
            loaded = await asyncio.to_thread(self._load, self.csv_path, None)
            if loaded.rewritten:
                # Keep the file as it was before we add or move its id column.
                self._link_backup(self.csv_path, seq - 1, len(loaded))
                if with_ids is not None and (report := await with_ids.report()) and report.matches(loaded):
                    await asyncio.to_thread(replace_file, with_ids.path, self.csv_path)
                else:
                    await self._replace_csv_with(loaded)
        finally:
            if with_ids is not None:
                with_ids.discard()
        await self._become(loaded, seq, max(max_id, loaded.max_id))
        log.info("table adopted from csv", extra={"rows": len(self._rows), "seq": seq})

    def _write_ids_aside(self) -> ForkedFile[PrefixedIds] | None:
        """For a CSV without an id column: a child writing it with ids 1..n into a temp file
        while the parse runs here; used if it matches the parse."""
        try:
            if not hasattr(os, "fork") or ID_COLUMN in read_header(self.csv_path):
                return None
        except (CsvFormatError, OSError):
            return None  # the parse reports it
        return ForkedFile(self._fork_snapshot, self._temp_path(), partial(write_with_ids, self.csv_path))

    async def _replace_csv_with(self, loaded: LoadedCsv) -> None:
        """Write `loaded` as the CSV on disk: temp file, fsync, rename, fsync of the directory."""
        tmp = self._temp_path()
        header = [c.name for c in loaded.columns]
        if hasattr(os, "fork"):  # formatted on every core, the event loop only writes the bytes
            await write_stream(forked_csv(self._fork_snapshot, header, loaded.blocks, len(loaded), escape=False), tmp)
        else:
            await asyncio.to_thread(write_blocks, tmp, header, loaded.blocks())
        await asyncio.to_thread(replace_file, tmp, self.csv_path)  # unlinking a big old CSV takes ms

    async def _become(self, loaded: LoadedCsv, seq: int, max_id: int) -> None:
        """Make `loaded` (already on disk as the CSV) the table at `seq`, every row at that version."""
        fp = fingerprint(self.csv_path)
        columns = [[c.name, c.type] for c in loaded.columns]
        await self._journal.reset(
            {
                "seq": seq,
                "max_id": max_id,
                "base_version": seq,
                "history_floor": seq,
                "checkpoint_seq": seq,
                "checkpoint_fp": fp,
                "checkpoint_rows": len(loaded),
                "columns": columns,
                "pending_fp": None,
            }
        )
        self._install(loaded, base_version=seq)
        self._seq = self._committed_seq = self._checkpoint_seq = self._reset_floor = seq
        self._max_id = max_id
        self._checkpoint_rows = len(loaded)
        self._history.clear()
        release_free_memory()  # the parser's leftovers, or the table this one replaced

    def _install(self, loaded: LoadedCsv, base_version: int) -> None:
        self.columns = loaded.columns
        self._names = [c.name for c in loaded.columns[1:]]
        self._types = [c.type for c in loaded.columns[1:]]
        self._index = {name: i for i, name in enumerate(self._names)}
        self._rows = dict(zip(loaded.ids, zip(repeat(base_version), loaded.values, strict=False), strict=True))
        self._order = SortedList(loaded.ids)
        self._max_id = loaded.max_id

    def _replay(self, change: CsvUpdate) -> None:
        """Re-apply a journaled change; after-images make this idempotent."""
        if change["op"] == "delete":
            if self._rows.pop(change["id"], None) is not None:
                self._order.remove(change["id"])
            return
        row = change["row"]
        values = tuple(row["values"].get(name) for name in self._names)
        if row["id"] not in self._rows:
            self._order.add(row["id"])
        self._rows[row["id"]] = (row["version"], values)
        self._max_id = max(self._max_id, row["id"])

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            await self.settle_quietly()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            try:
                await self.checkpoint()
            except Exception:
                log.exception("final checkpoint failed; the journal still holds every change")
        await self._journal.close()
        if self._lock_file is not None:
            portalocker.unlock(self._lock_file)
            self._lock_file.close()
            self._lock_file = None

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    # ---- reads -----------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def total(self) -> int:
        return len(self._rows)

    def columns_wire(self) -> list[WireColumn]:
        return [{"name": c.name, "type": c.type} for c in self.columns]

    def wire_row(self, row_id: int, row: Row) -> WireRow:
        return {"id": row_id, "version": row[0], "values": dict(zip(self._names, row[1], strict=True))}

    def has(self, row_id: int) -> bool:
        return row_id in self._rows

    def row(self, row_id: int) -> WireRow:
        row = self._rows.get(row_id)
        if row is None:
            raise NotFound(f"no row with id {row_id}", id=row_id)
        return self.wire_row(row_id, row)

    def page(self, offset: int, limit: int) -> list[WireRow]:
        rows = self._rows
        return [self.wire_row(i, rows[i]) for i in self._order[offset : offset + limit]]

    def changes_since(self, since: int) -> list[CsvUpdate] | None:
        """Committed changes after `since`, or None when they are no longer all held."""
        history = self._history
        floor = self._reset_floor
        if history:
            floor = max(floor, history[0]["seq"] - 1)
        elif self._committed_seq > floor:
            floor = self._committed_seq
        if since < floor or since > self._committed_seq:
            return None
        skip = since - (history[0]["seq"] - 1) if history else 0
        return [history[i] for i in range(max(skip, 0), len(history))]

    @property
    def committed_seq(self) -> int:
        return self._committed_seq

    def _csv_blocks(self, start: int = 0, end: int | None = None) -> Iterator[Block]:
        """The table's CSV rows in id order (positions [start, end)), a block at a time, read
        lazily from the current rows: only a frozen copy of the table (a fork) may consume
        it at leisure."""
        rows, order = self._rows, self._order
        stop = len(order) if end is None else end
        for first in range(start, stop, ROWS_PER_BLOCK):
            ids = order[first : min(first + ROWS_PER_BLOCK, stop)]
            yield id_block(ids, [rows[i][1] for i in ids])

    def csv_stream(self) -> CsvStream:
        """The table as it is at this moment, as a CSV download (text cells formula-escaped),
        made by forked children so that the event loop only relays bytes."""
        header = [c.name for c in self.columns]
        if not hasattr(os, "fork"):
            return ThreadedCsv(header, list(self._csv_blocks()), escape=True)  # copied now, beside later edits
        try:
            return forked_csv(self._fork_snapshot, header, self._csv_blocks, len(self._order), escape=True)
        except OSError as exc:
            raise Unavailable(f"the download cannot start now: {exc}") from None

    # ---- writes ----------------------------------------------------------------------

    def _coerce(self, name: str, value: Any) -> Value:
        index = self._index.get(name)
        field_name = f"values.{name}"
        if index is None:
            if name == ID_COLUMN:
                raise InvalidInput("id is assigned by the server", field=field_name)
            raise InvalidInput(f"no column named {name!r}", field=field_name)
        if value is None:
            return None
        kind = self._types[index]
        if kind == "text":
            if not isinstance(value, str):
                raise InvalidInput(f"{name} is a text column: send a string or null", field=field_name)
            if len(value) > self._config.max_cell_chars:
                raise PayloadTooLarge(
                    f"{name} is over {self._config.max_cell_chars} characters",
                    field=field_name,
                    limit=self._config.max_cell_chars,
                )
            return value if value != "" else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{name} is a{'n integer' if kind == 'integer' else ' number'} column", field=field_name)
        if not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number", field=field_name)
        if kind == "integer":
            if isinstance(value, float):
                if not value.is_integer():
                    raise InvalidInput(f"{name} is an integer column", field=field_name)
                return int(value)
            return value
        return float(value)

    def _enqueue(self, op: str, row_id: int, payload: CsvUpdate, old: Row | None, max_before: int) -> Change:
        change = Change(
            seq=self._seq,
            op=op,
            row_id=row_id,
            payload=payload,
            old=old,
            max_id_before=max_before,
            max_id_after=self._max_id,
            future=asyncio.get_running_loop().create_future(),
        )
        self._queue.append(change)
        self._last_change = change
        self._wake.set()
        return change

    def _check_open(self) -> None:
        if self._closing:
            raise Unavailable("the server is shutting down; nothing was changed")

    def add(self, values: dict[str, Any], by: str) -> Change:
        self._check_open()
        cells: list[Value] = [None] * len(self._names)
        for name, value in values.items():
            cells[self._index_of(name)] = self._coerce(name, value)
        max_before = self._max_id
        self._seq += 1
        self._max_id += 1
        row_id = self._max_id
        row: Row = (self._seq, tuple(cells))
        self._rows[row_id] = row
        self._order.add(row_id)
        payload: CsvUpdate = {
            "op": "add",
            "seq": self._seq,
            "by": by,
            "ts": now_ms(),
            "row": self.wire_row(row_id, row),
        }
        return self._enqueue("add", row_id, payload, None, max_before)

    def update(self, row_id: int, values: dict[str, Any], version: int | None, by: str) -> Change:
        self._check_open()
        old = self._current(row_id, version)
        cells = list(old[1])
        before: dict[str, Value] = {}
        for name, value in values.items():
            index = self._index_of(name)
            cells[index] = self._coerce(name, value)
            before[name] = old[1][index]
        self._seq += 1
        row: Row = (self._seq, tuple(cells))
        self._rows[row_id] = row
        payload: CsvUpdate = {
            "op": "update",
            "seq": self._seq,
            "by": by,
            "ts": now_ms(),
            "row": self.wire_row(row_id, row),
            "before": before,
        }
        return self._enqueue("update", row_id, payload, old, self._max_id)

    def delete(self, row_id: int, version: int | None, by: str) -> Change:
        self._check_open()
        old = self._current(row_id, version)
        self._seq += 1
        del self._rows[row_id]
        self._order.remove(row_id)
        payload: CsvUpdate = {
            "op": "delete",
            "seq": self._seq,
            "by": by,
            "ts": now_ms(),
            "id": row_id,
            "before": dict(zip(self._names, old[1], strict=True)),
        }
        return self._enqueue("delete", row_id, payload, old, self._max_id)

    def _index_of(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            self._coerce(name, None)  # raises the right error for id / unknown columns
            raise AssertionError("unreachable")
        return index

    def _current(self, row_id: int, version: int | None) -> Row:
        row = self._rows.get(row_id)
        if row is None:
            raise NotFound(f"no row with id {row_id}", id=row_id)
        if version is not None and version != row[0]:
            raise Conflict(f"row {row_id} changed since version {version}", row=self.wire_row(row_id, row))
        return row

    async def durable(self, change: Change) -> None:
        await asyncio.shield(change.future)

    def mark(self) -> tuple[Change | None, int]:
        """Where the table stands now, for `settle`."""
        return self._last_change, self._rollbacks

    async def settle(self, mark: tuple[Change | None, int] | None = None) -> None:
        """Wait until everything applied up to `mark` (default: now) is on disk. Raises
        `Unavailable` if any change was undone since, as what was read may hold it."""
        last, rollbacks = mark or self.mark()
        if last is not None and not last.future.done():
            with contextlib.suppress(Unavailable):
                await asyncio.shield(last.future)
        if self._rollbacks != rollbacks:
            raise Unavailable("storage failed while reading; nothing was changed")

    async def settle_quietly(self) -> None:
        with contextlib.suppress(Unavailable):
            await self.settle()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                started = time.perf_counter()
                try:
                    await self._journal.append([c.record() for c in batch], batch[-1].max_id_after)
                except Exception:
                    log.exception("journal commit failed; undoing changes not yet durable")
                    self._fail([*batch, *self._queue])
                    self._queue = []
                    break
                elapsed = time.perf_counter() - started
                self._committed_seq = batch[-1].seq
                payloads = [c.payload for c in batch]
                self._history.extend(payloads)
                for change in batch:
                    if not change.future.done():
                        change.future.set_result(None)
                self._dirty.set()
                for listener in self._listeners:
                    try:
                        listener(payloads)
                    except Exception:
                        log.exception("change listener failed")
                if self._on_commit is not None:
                    try:
                        self._on_commit(len(batch), elapsed)
                    except Exception:
                        log.exception("commit observer failed")

    def _fail(self, changes: Sequence[Change]) -> None:
        for change in reversed(changes):
            if change.op == "add":
                del self._rows[change.row_id]
                self._order.remove(change.row_id)
            else:
                assert change.old is not None
                if change.op == "delete":
                    self._order.add(change.row_id)
                self._rows[change.row_id] = change.old
        if changes:
            self._seq = changes[0].seq - 1
            self._max_id = changes[0].max_id_before
            self._rollbacks += 1
        error = Unavailable("the change could not be stored; nothing was changed")
        for change in changes:
            if not change.future.done():
                change.future.set_exception(error)
                change.future.exception()  # a caller that left must not leave a warning behind

    # ---- checkpoints and backups -----------------------------------------------------

    async def run_flusher(self) -> None:
        """Rewrite the CSV a little after changes, never busier than a quarter of the time."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(max(self._config.flush_s, 3 * self._last_export_s))
            self._dirty.clear()
            try:
                await self.checkpoint()
            except Exception:
                log.exception("csv checkpoint failed; will retry")
                self._dirty.set()

    async def checkpoint(self, *, backup: bool = False) -> None:
        """Bring the CSV on disk up to the current seq. With `backup`, the replaced version
        is kept in backups/ whatever the interval."""
        async with self._checkpoint_lock:
            await self._checkpoint(backup)

    async def _checkpoint(self, backup: bool) -> None:
        """Callers hold the checkpoint lock."""
        seq, mark = self._seq, self.mark()
        if seq == self._checkpoint_seq:
            if backup:
                self._link_backup(self.csv_path, self._checkpoint_seq, self._checkpoint_rows)
            return
        tmp = self._temp_path()
        rows = len(self._rows)
        columns = [[c.name, c.type] for c in self.columns]
        started = time.monotonic()
        await self._export(tmp)
        self._last_export_s = time.monotonic() - started
        # The snapshot may hold changes still in flight: it becomes official only once
        # they are durable, and never if any of them was undone.
        try:
            await self.settle(mark)
        except Unavailable:
            tmp.unlink(missing_ok=True)
            raise
        fp = fingerprint(tmp)
        await self._journal.set_meta({"pending_seq": seq, "pending_fp": fp, "pending_columns": columns})
        self._maybe_backup(force=backup)
        await asyncio.to_thread(replace_file, tmp, self.csv_path)  # unlinking a big old CSV takes ms
        prune = min(seq, self._committed_seq - self._config.history_keep)
        await self._journal.finish_checkpoint(
            {
                "checkpoint_seq": seq,
                "checkpoint_fp": fp,
                "checkpoint_rows": rows,
                "columns": columns,
                "pending_fp": None,
            },
            prune_through=prune,
        )
        self._checkpoint_seq, self._checkpoint_rows = seq, rows
        log.info(
            "csv checkpoint written",
            extra={"seq": seq, "rows": rows, "ms": round(self._last_export_s * 1000, 1)},
        )

    def _temp_path(self) -> Path:
        """A temp name of our own: an export child orphaned by a crash never shares it."""
        self._temp_count += 1
        return self.csv_path.with_name(f"{CSV_NAME}.{os.getpid()}-{self._temp_count}.tmp")

    def _become_export_child(self, parent: int, keep: int | None) -> None:
        # Die with the parent and drop every inherited descriptor but `keep` (the DATA_DIR
        # lock, the listening socket, the databases): a server restarted after a crash is
        # never locked out, answered by a dead listener, or raced by a leftover writer.
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)
        limit = os.sysconf("SC_OPEN_MAX")
        if keep is None:
            os.closerange(3, limit)
        else:
            os.closerange(3, keep)
            os.closerange(keep + 1, limit)

    def _fork_snapshot(self, work: Callable[[], None], keep: int | None = None) -> int:
        """Run `work` in a forked child, a frozen copy of the table, on another core; the
        child exits 0 when it succeeded. Returns its pid."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._become_export_child(parent, keep)
                work()
                code = 0
            except BaseException as exc:
                print(f"csv export failed: {exc!r}", file=sys.stderr)
            finally:
                os._exit(code)
        return pid

    async def _export(self, tmp: Path) -> None:
        header = [c.name for c in self.columns]
        if not hasattr(os, "fork"):
            snapshot = list(self._csv_blocks())  # copied here: the writing thread runs beside new edits
            await asyncio.to_thread(write_blocks, tmp, header, snapshot)
            return
        pid = self._fork_snapshot(lambda: write_blocks(tmp, header, self._csv_blocks()))
        _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink on a failure path
            raise OSError(f"csv export exited with status {status}")

    def _maybe_backup(self, force: bool) -> None:
        if not self.csv_path.exists():
            return
        newest = self.list_backups()
        due = not newest or (now_ms() - newest[0].created_at) >= self._config.backup_interval_s * 1000
        if force or due:
            self._link_backup(self.csv_path, self._checkpoint_seq, self._checkpoint_rows)

    def _link_backup(self, source: Path, seq: int, rows: int) -> None:
        """Keep `source` as it is now in backups/ (a hard link: the next rename leaves it intact)."""
        stamp = datetime.now(UTC)
        while True:
            millis = stamp.microsecond // 1000
            name = f"backend_table-{stamp:%Y%m%dT%H%M%S}.{millis:03d}Z-seq{seq}-rows{rows}.csv"
            target = self.backup_dir / name
            if not target.exists():
                break
            stamp = stamp.replace(microsecond=min(stamp.microsecond + 1000, 999999))
        try:
            os.link(source, target)
        except OSError:
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(source.read_bytes())
            os.fsync(os.open(tmp, os.O_RDONLY))
            os.replace(tmp, target)
        fsync_dir(self.backup_dir)
        for stale in self.list_backups()[self._config.backup_keep :]:
            (self.backup_dir / stale.name).unlink(missing_ok=True)
        log.info("backup kept", extra={"backup": name, "rows": rows})

    def list_backups(self) -> list[BackupInfo]:
        found: list[BackupInfo] = []
        for path in self.backup_dir.glob("backend_table-*.csv"):
            match = _BACKUP_NAME.match(path.name)
            if not match:
                continue
            created = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            found.append(
                BackupInfo(
                    name=path.name,
                    created_at=int(created.timestamp() * 1000),
                    rows=int(match.group(3)),
                    bytes=size,
                    seq=int(match.group(2)),
                )
            )
        found.sort(key=lambda b: (b.created_at, b.name), reverse=True)
        return found

    async def restore(self, name: str | None, by: str) -> RestoreResult:
        """Replace the table with a backup. The caller has stopped all other writes."""
        backups = self.list_backups()
        chosen = next((b for b in backups if name is None or b.name == name), None)
        if chosen is None:
            raise NotFound(f"no backup named {name!r}" if name else "there are no backups", name=name)
        await self.settle()
        types = {c.name: c.type for c in self.columns}
        try:
            loaded = await asyncio.to_thread(load_csv, self.backup_dir / chosen.name, types)
        except CsvFormatError:
            try:
                loaded = await asyncio.to_thread(load_csv, self.backup_dir / chosen.name, None)
            except (CsvFormatError, OSError) as exc:
                raise Unavailable(f"backup {chosen.name} cannot be read: {exc}") from None
        async with self._checkpoint_lock:
            # Keep the table being replaced, as it is now.
            await self._checkpoint(backup=True)
            await self._replace_csv_with(loaded)
            seq = self._seq + 1
            max_id = max(self._max_id, loaded.max_id)
            await self._become(loaded, seq, max_id)
        payload: CsvUpdate = {"op": "reset", "seq": seq, "by": by, "ts": now_ms()}
        for listener in self._listeners:
            listener([payload])
        log.info("backup restored", extra={"backup": chosen.name, "seq": seq, "rows": len(self._rows), "by": by})
        return {"ok": True, "seq": seq, "total": len(self._rows)}
