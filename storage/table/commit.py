"""Group commit: every change is in the journal before its writer hears "done".

Changes applied in memory queue here; one task commits everything queued in one journal
transaction, then resolves the writers' futures and tells the listeners (broadcasts, the
CSV checkpoint, metrics), in seq order. If a commit fails, every change not yet durable is
undone in reverse order and its writer gets `unavailable`, so memory never holds what the
disk does not. Once the journal has stopped on an I/O error, every later change is undone
and refused the same way, with the journal's reason, and nothing more is logged per write.
It also keeps the last changes for `fetch_csv {since}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from protocol.errors import Unavailable
from protocol.results import CsvUpdate
from storage.journal import Journal, JournalRecord, JournalStopped
from storage.table.rows import Change, Rows

log = logging.getLogger("tablecast.table")

ChangeListener = Callable[[list[CsvUpdate]], None]
CommitObserver = Callable[[int, float], None]  # (changes in the batch, seconds the commit took)
_NOT_STORED = "the change could not be stored; nothing was changed"


@dataclass(eq=False)
class Pending:
    """A change on its way to the journal."""

    change: Change
    future: asyncio.Future[None] = field(repr=False)

    async def durable(self) -> None:
        """Wait until the change is on disk; `Unavailable` if it could not be stored."""
        await asyncio.shield(self.future)

    def record(self) -> JournalRecord:
        return JournalRecord(seq=self.change.seq, change=self.change.payload)


Mark = tuple[Pending | None, int]  # the newest change then, and the rollbacks then


class GroupCommit:
    def __init__(
        self,
        journal: Journal,
        rows: Rows,
        history_keep: int,
        listeners: Sequence[ChangeListener] = (),
        on_commit: CommitObserver | None = None,
    ) -> None:
        self._journal = journal
        self._rows = rows
        self._listeners = list(listeners)
        self._on_commit = on_commit
        self._queue: list[Pending] = []
        self._last: Pending | None = None
        self._rollbacks = 0
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.committed_seq = 0
        self._history: deque[CsvUpdate] = deque(maxlen=history_keep)
        self._floor = 0  # no `since` below this is answered (a reset: restore, hand edit)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, committed_seq: int, history: Iterable[CsvUpdate], floor: int) -> None:
        self.committed_seq = committed_seq
        self._history.clear()
        self._history.extend(history)
        self._floor = floor
        self._writer = asyncio.create_task(self._write_loop(), name="table-journal-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        if self._writer is None:
            return
        await self.settle_quietly()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None

    def reset(self, seq: int) -> None:
        """The table was replaced whole at `seq`: older changes are no longer told."""
        self.committed_seq = self._floor = seq
        self._history.clear()

    # ---- writes -------------------------------------------------------------------------

    def submit(self, change: Change) -> Pending:
        pending = Pending(change, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._last = pending
        self._wake.set()
        return pending

    def publish(self, payloads: list[CsvUpdate]) -> None:
        """Tell every listener; one that fails is logged and the others still hear."""
        for listener in self._listeners:
            try:
                listener(payloads)
            except Exception:
                log.exception("change listener failed")

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                started = time.perf_counter()
                try:
                    await self._journal.append([p.record() for p in batch])
                except Exception as exc:
                    if isinstance(exc, JournalStopped):  # the journal said so once, loudly
                        reason = str(exc)
                    else:
                        log.exception("journal commit failed; undoing changes not yet durable")
                        reason = _NOT_STORED
                    self._fail([*batch, *self._queue], reason)
                    self._queue = []
                    break
                self._committed(batch, time.perf_counter() - started)

    def _committed(self, batch: list[Pending], seconds: float) -> None:
        self.committed_seq = batch[-1].change.seq
        payloads = [p.change.payload for p in batch]
        self._history.extend(payloads)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(None)
        self.publish(payloads)
        if self._on_commit is not None:
            try:
                self._on_commit(len(batch), seconds)
            except Exception:
                log.exception("commit observer failed")

    def _fail(self, failed: list[Pending], reason: str) -> None:
        self._rows.undo([p.change for p in failed])
        if failed:
            self._rollbacks += 1
        error = Unavailable(reason)
        for pending in failed:
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()  # a writer that left must not leave a warning behind

    # ---- reads that must not hand out what may be undone ----------------------------------

    def mark(self) -> Mark:
        """Where the table stands now, for `settle`."""
        return self._last, self._rollbacks

    async def settle(self, mark: Mark | None = None) -> None:
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

    def changes_since(self, since: int) -> list[CsvUpdate] | None:
        """Committed changes after `since`, or None when they are no longer all held."""
        history = self._history
        floor = self._floor
        if history:
            floor = max(floor, history[0]["seq"] - 1)
        elif self.committed_seq > floor:
            floor = self.committed_seq
        if since < floor or since > self.committed_seq:
            return None
        skip = since - (history[0]["seq"] - 1) if history else 0
        return [history[i] for i in range(max(skip, 0), len(history))]
