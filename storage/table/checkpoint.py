"""The CSV checkpoint: `backend_table.csv` rewritten from a forked copy of the table a little
after changes, so the file reflects every acked change within seconds.

The child writes a temp file and fsyncs it; the snapshot becomes official only once every
change it holds is durable (never if one was undone). The journal records the pending file,
the replaced version is kept in backups/, the temp file is renamed over the CSV, the
directory fsynced, and the journal told which seq the CSV now reflects, so a restart
replays only the changes after it.

A failed fsync is never retried on the same file. One of the temp file (or of a backup)
aborts the checkpoint: the old CSV stays, the temp file goes, and a later checkpoint writes
a fresh one. One of the directory after the rename leaves the new name not known to be
durable: the journal keeps both the old checkpoint and the pending one (a restart resumes
from whichever file it finds), and no checkpoint runs again in this process, as a second
rename could leave a file on disk that the journal knows nothing of. Nor does one run once
the journal has stopped: the journal holds every acked change and a restart replays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from protocol.errors import Unavailable
from protocol.results import CsvUpdate
from storage.csv.write import write_blocks
from storage.files import UnsyncedRename, fingerprint, replace_file
from storage.journal import Journal, JournalStopped
from storage.table.backups import Backups
from storage.table.commit import GroupCommit
from storage.table.files import TableFiles
from storage.table.fork import CAN_FORK, exit_code, fork_snapshot
from storage.table.rows import Rows

log = logging.getLogger("tablecast.table")
_STORAGE_FAILURES = (OSError, sqlite3.Error, JournalStopped)
_MAX_BACKOFF = 16  # failed checkpoints in a row stretch the delay up to this many times


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
        self._failures = 0  # checkpoints failed in a row
        self._unfinished: tuple[dict[str, Any], int, int] | None = None  # renamed, not yet recorded
        self.stopped: str | None = None  # why no checkpoint runs any more in this process

    def base(self, seq: int, rows: int, dirty: bool = False) -> None:
        """The CSV on disk holds the table at `seq`; `dirty`: the table has moved on since."""
        self.seq, self.rows = seq, rows
        if dirty:
            self._dirty.set()

    def changed(self, payloads: list[CsvUpdate]) -> None:
        """A change listener: the CSV is behind now."""
        self._dirty.set()

    async def run(self) -> None:
        """Rewrite the CSV a little after changes, never busier than a quarter of the time,
        and less often while checkpoints keep failing."""
        while True:
            await self._dirty.wait()
            delay = max(self._flush_s, 3 * self._last_export_s)
            await asyncio.sleep(delay * min(2**self._failures, _MAX_BACKOFF))
            self._dirty.clear()
            try:
                await self.checkpoint()
            except Exception as exc:
                if self._failures == 0:
                    log.exception("csv checkpoint failed; the old csv stays, will retry")
                else:
                    log.warning("csv checkpoint failed again", extra={"error": repr(exc), "failures": self._failures})
                self._failures += 1
                self._dirty.set()
            else:
                self._failures = 0

    def _refusal(self) -> str | None:
        """Why no checkpoint may run now, if one may not."""
        return self.stopped or self._journal.stopped

    async def checkpoint(self) -> None:
        """Bring the CSV on disk up to the current seq. Does nothing once checkpoints have
        stopped (the journal holds what the CSV lacks)."""
        async with self._lock:
            if self._refusal() is None:
                await self._checkpoint()

    @contextlib.asynccontextmanager
    async def replacing(self) -> AsyncIterator[None]:
        """Hold off checkpoints while the caller replaces the CSV (a restore), after keeping
        the table being replaced, as it is now, in backups/. Storage failing (here or in the
        caller) is `Unavailable`. Should the caller fail after the CSV on disk has changed,
        memory and disk no longer agree: writes and checkpoints stop until a restart reads
        the disk."""
        async with self._lock:
            if (refusal := self._refusal()) is not None:
                raise Unavailable(f"the table cannot be replaced now: {refusal}")
            try:
                # First the CSV catches up with the table, then that file is kept: what the
                # restore replaces is the table as it is now, not the last checkpoint.
                await self._checkpoint()
                await asyncio.to_thread(self._backups.keep, self._files.csv, self.seq, self.rows)
            except _STORAGE_FAILURES as exc:
                raise Unavailable(f"the table could not be kept before it is replaced: {exc}") from exc
            before = fingerprint(self._files.csv)
            try:
                yield
            except Exception as exc:
                if fingerprint(self._files.csv) != before:
                    self._stop(f"the csv was replaced, but the table could not follow: {exc}")
                    self._journal.stop(f"the csv on disk no longer matches the table ({exc})")
                if isinstance(exc, _STORAGE_FAILURES):
                    raise Unavailable(f"the table could not be replaced: {exc}") from exc
                raise

    def _stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            log.critical("csv checkpoints stopped until the server is restarted", extra={"reason": reason})

    async def _checkpoint(self) -> None:
        if self._unfinished is not None:
            await self._finish(*self._unfinished)  # record the file on disk before any other
        rows, csv = self._rows, self._files.csv
        seq, max_id, mark = rows.seq, rows.max_id, self._commit.mark()
        if seq == self.seq:
            return
        tmp = self._files.temp()
        count = rows.total
        columns = [[c.name, c.type] for c in rows.columns]
        try:
            started = time.monotonic()
            await self._export(tmp)
            self._last_export_s = time.monotonic() - started
            await self._commit.settle(mark)
            fp = fingerprint(tmp)
            await self._journal.set_meta({"pending_seq": seq, "pending_fp": fp, "pending_columns": columns})
            self._backups.keep_if_due(csv, self.seq, self.rows)
            await asyncio.to_thread(replace_file, tmp, csv)  # unlinking a big old CSV takes ms
        except UnsyncedRename as exc:
            # The journal still holds the old checkpoint and this one as pending, and prunes
            # nothing: a restart resumes from whichever of the two files survived.
            self._stop(str(exc))
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        meta = {
            "seq": seq,
            "max_id": max_id,
            "checkpoint_seq": seq,
            "checkpoint_fp": fp,
            "checkpoint_rows": count,
            "columns": columns,
            "pending_fp": None,
        }
        self._unfinished = (meta, min(seq, self._commit.committed_seq - self._history_keep), count)
        await self._finish(*self._unfinished)
        log.info(
            "csv checkpoint written", extra={"seq": seq, "rows": count, "ms": round(self._last_export_s * 1000, 1)}
        )

    async def _finish(self, meta: dict[str, Any], prune: int, count: int) -> None:
        """Tell the journal the CSV on disk is the checkpoint `meta` describes. Until it has
        been told, the file is only its pending one, which the next checkpoint must not
        replace in the journal."""
        await self._journal.finish_checkpoint(meta, prune_through=prune)
        self._unfinished = None
        self.seq, self.rows = int(meta["seq"]), count

    async def _export(self, tmp: Path) -> None:
        header = self._rows.header()
        if not CAN_FORK:
            snapshot = list(self._rows.blocks())  # copied here: the writing thread runs beside new edits
            await asyncio.to_thread(write_blocks, tmp, header, snapshot)
            return
        pid = fork_snapshot(lambda: write_blocks(tmp, header, self._rows.blocks()))
        code = await exit_code(pid)
        if code != 0:  # the child says why on stderr (a failed write or fsync of `tmp`)
            raise OSError(f"csv export exited with status {code}")
