"""The CSV checkpoint: `backend_table.csv` rewritten from a forked copy of the table a little
after changes, so the file reflects every acked change within seconds.

The child writes a temp file and fsyncs it; the snapshot becomes official only once every
change it holds is durable (never if one was undone). The journal records the pending file,
the replaced version is kept in backups/, the temp file is renamed over the CSV, the
directory fsynced, and the journal told which seq the CSV now reflects, so a restart
replays only the changes after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from protocol.errors import Unavailable
from protocol.results import CsvUpdate
from storage.csv.write import write_blocks
from storage.files import fingerprint, replace_file
from storage.journal import Journal
from storage.table.backups import Backups
from storage.table.commit import GroupCommit
from storage.table.files import TableFiles
from storage.table.fork import CAN_FORK, exit_code, fork_snapshot
from storage.table.rows import Rows

log = logging.getLogger("tablecast.table")


class Checkpointer:
    def __init__(
        self,
        files: TableFiles,
        rows: Rows,
        commit: GroupCommit,
        journal: Journal,
        backups: Backups,
        *,
        flush_s: float,
        history_keep: int,
    ) -> None:
        self._files = files
        self._rows = rows
        self._commit = commit
        self._journal = journal
        self._backups = backups
        self._flush_s = flush_s
        self._history_keep = history_keep
        self.seq = 0  # what the CSV on disk reflects
        self.rows = 0
        self._last_export_s = 0.0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()

    def base(self, seq: int, rows: int, dirty: bool = False) -> None:
        """The CSV on disk holds the table at `seq`; `dirty`: the table has moved on since."""
        self.seq, self.rows = seq, rows
        if dirty:
            self._dirty.set()

    def changed(self, payloads: list[CsvUpdate]) -> None:
        """A change listener: the CSV is behind now."""
        self._dirty.set()

    async def run(self) -> None:
        """Rewrite the CSV a little after changes, never busier than a quarter of the time."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(max(self._flush_s, 3 * self._last_export_s))
            self._dirty.clear()
            try:
                await self.checkpoint()
            except Exception:
                log.exception("csv checkpoint failed; will retry")
                self._dirty.set()

    async def checkpoint(self, *, backup: bool = False) -> None:
        """Bring the CSV on disk up to the current seq. With `backup`, the replaced version
        is kept in backups/ whatever the interval."""
        async with self._lock:
            await self._checkpoint(backup)

    @contextlib.asynccontextmanager
    async def replacing(self) -> AsyncIterator[None]:
        """Hold off checkpoints while the caller replaces the CSV (a restore), after keeping
        the table being replaced, as it is now, in backups/."""
        async with self._lock:
            await self._checkpoint(backup=True)
            yield

    async def _checkpoint(self, backup: bool) -> None:
        rows, csv = self._rows, self._files.csv
        seq, max_id, mark = rows.seq, rows.max_id, self._commit.mark()
        if seq == self.seq:
            if backup:
                self._backups.keep(csv, self.seq, self.rows)
            return
        tmp = self._files.temp()
        count = rows.total
        columns = [[c.name, c.type] for c in rows.columns]
        started = time.monotonic()
        await self._export(tmp)
        self._last_export_s = time.monotonic() - started
        try:
            await self._commit.settle(mark)
        except Unavailable:
            tmp.unlink(missing_ok=True)
            raise
        fp = fingerprint(tmp)
        await self._journal.set_meta({"pending_seq": seq, "pending_fp": fp, "pending_columns": columns})
        if backup:
            self._backups.keep(csv, self.seq, self.rows)
        else:
            self._backups.keep_if_due(csv, self.seq, self.rows)
        await asyncio.to_thread(replace_file, tmp, csv)  # unlinking a big old CSV takes ms
        meta = {
            "seq": seq,
            "max_id": max_id,
            "checkpoint_seq": seq,
            "checkpoint_fp": fp,
            "checkpoint_rows": count,
            "columns": columns,
        }
        prune = min(seq, self._commit.committed_seq - self._history_keep)
        await self._journal.finish_checkpoint({**meta, "pending_fp": None}, prune_through=prune)
        self.seq, self.rows = seq, count
        log.info(
            "csv checkpoint written", extra={"seq": seq, "rows": count, "ms": round(self._last_export_s * 1000, 1)}
        )

    async def _export(self, tmp: Path) -> None:
        header = self._rows.header()
        if not CAN_FORK:
            snapshot = list(self._rows.blocks())  # copied here: the writing thread runs beside new edits
            await asyncio.to_thread(write_blocks, tmp, header, snapshot)
            return
        pid = fork_snapshot(lambda: write_blocks(tmp, header, self._rows.blocks()))
        code = await exit_code(pid)
        if code != 0:
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink on a failure path
            raise OSError(f"csv export exited with status {code}")
