"""The table's rules, one place for REST and Socket.IO alike: who may change which row,
cooldowns, presence grace, restores. Results are the ok answers of `protocol.results`.

Bad input is judged before state: a write's values are checked against the columns before its
row, lock or version is looked at, so a payload that can never apply is `invalid_input` (or
`payload_too_large`) whoever holds the row."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from protocol.errors import Forbidden, Locked, NotFound
from protocol.results import (
    BackupsResult,
    DeleteResult,
    EmptyResult,
    FetchPage,
    FetchResult,
    LockResult,
    RestoreResult,
    RowResult,
)
from storage.csv.stream import ByteStream
from storage.locks import LockStore
from storage.sync import Gate, KeyedMutex
from storage.table import TableStore

_RECORDS_PER_PAGE = 5_000
_MAX_RECORD_SLICES = 4
_MIN_SLICE_RECORDS = 50_000  # below this a second child costs more than it saves


@dataclass(frozen=True)
class PresenceConfig:
    grace_s: float = 30.0


@dataclass(frozen=True)
class TableStats:
    rows: int
    seq: int
    locked: int
    cooling: int


class TableService:
    def __init__(
        self,
        table: TableStore,
        locks: LockStore,
        presence: PresenceConfig,
        clock: Callable[[], float] = time.monotonic,
        admins: Collection[str] = (),
    ) -> None:
        self._table = table
        self._admins = frozenset(admins)  # who may restore; empty: everyone
        self._locks = locks
        self._grace_s = presence.grace_s
        self._clock = clock
        self._rows = KeyedMutex()  # one operation per row at a time: check-then-act stays true
        self._gate = Gate()  # restores exclude every other write
        self._sockets: dict[str, int] = {}
        self._leaving: dict[str, float] = {}  # user -> when their locks end

    # ---- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Load the table (from the CSV and the journal) and start writing it back."""
        await self._table.open()

    async def close(self) -> None:
        """Commit what is pending and write the CSV one last time."""
        await self._table.close()

    async def stats(self) -> TableStats:
        counts = Counter(lock["state"] for lock in await self._locks.snapshot())
        return TableStats(self._table.total, self._table.seq, counts["locked"], counts["cooldown"])

    # ---- reads -----------------------------------------------------------------------

    async def fetch(self, offset: int, limit: int, since: int | None) -> FetchResult:
        table = self._table
        if since is not None:
            changes = table.changes_since(since)
            # More missed changes than a page holds: a fresh page is the smaller answer.
            if changes is not None and len(changes) <= limit:
                return {"ok": True, "changes": changes, "seq": table.committed_seq}
        mark = table.mark()
        seq, rows, total = table.seq, table.page(offset, limit), table.total
        locks = await self._locks.snapshot()
        # Never hand out a row whose change might still be undone.
        await table.settle(mark)
        page: FetchPage = {
            "ok": True,
            "columns": table.columns_wire(),
            "rows": rows,
            "total": total,
            "seq": seq,
            "locks": locks,
        }
        if since is not None:
            page["reset"] = True
        return page

    async def export(self) -> ByteStream:
        """Every row, as one consistent snapshot, for a download; the caller closes it. The
        snapshot is taken now, and handed out once every change it holds is durable."""
        mark = self._table.mark()
        stream = self._table.csv_stream()
        try:
            await self._table.settle(mark)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def records(self, offset: int, limit: int | None) -> ByteStream:
        """The rows from `offset` (at most `limit`; default all) as a JSON array of flat records
        `{"id": .., <column>: value, ...}`, with the values the JSON pages give; the caller
        closes it. Like `export`, one snapshot taken now (forked children format it from their
        copy-on-write view, so no later change leaks in) and handed out once every change it
        holds is durable."""
        table = self._table
        start = min(offset, table.total)
        end = table.total if limit is None else min(start + limit, table.total)
        mark = table.mark()
        stream = table.records_stream(start, end)
        try:
            await table.settle(mark)
        except BaseException:
            await stream.close()
            raise
        return stream

    async def list_backups(self) -> BackupsResult:
        return {"ok": True, "backups": [b.wire() for b in self._table.list_backups()]}

    # ---- writes ----------------------------------------------------------------------

    async def add(self, user: str, values: dict[str, Any]) -> RowResult:
        async with self._gate.shared():  # a restore may change the columns: check under the gate
            self._table.check(values)
            pending = self._table.add(values, user)
            await pending.durable()
        return {"ok": True, "row": pending.change.row()}

    async def update(self, user: str, row_id: int, values: dict[str, Any], version: int | None) -> RowResult:
        async with self._gate.shared():
            self._table.check(values)  # before the row, its lock and its version
            async with self._rows.hold(row_id):
                self._require_row(row_id)
                await self._locks.require(row_id, user)
                pending = self._table.update(row_id, values, version, user)
                await pending.durable()
                await self._locks.mark_edited(row_id, user)
        return {"ok": True, "row": pending.change.row()}

    async def delete(self, user: str, row_id: int, version: int | None) -> DeleteResult:
        async with self._gate.shared(), self._rows.hold(row_id):
            self._require_row(row_id)
            await self._locks.require(row_id, user)
            pending = self._table.delete(row_id, version, user)
            await pending.durable()
            await self._locks.end(row_id, "deleted")
        return {"ok": True, "id": row_id}

    async def lock(self, user: str, row_id: int) -> LockResult:
        async with self._gate.shared(), self._rows.hold(row_id):
            self._require_row(row_id)
            view = await self._locks.acquire(row_id, user)
        return {"ok": True, "lock": view.wire()}

    async def unlock(self, user: str, row_id: int) -> EmptyResult:
        async with self._rows.hold(row_id):
            self._require_row(row_id)
            await self._locks.release(row_id, user)
        return {"ok": True}

    async def restore(self, user: str, name: str | None) -> RestoreResult:
        # Who asks is judged before any lock or backup is looked at (the name's form already was).
        if self._admins and user not in self._admins:
            raise Forbidden(f"restore_backup is for the users named in ADMIN_USERS; {user!r} is not one")
        async with self._gate.exclusive():
            other = await self._locks.held_by_other(user)
            if other is not None:
                raise Locked(
                    f"{other.owner} holds a lock (row {other.id}); a restore needs every lock released",
                    owner=other.owner,
                    expires_at=other.expires_at,
                )
            result = await self._table.restore(name, user)
            await self._locks.end_all("restored")
        return result

    def _require_row(self, row_id: int) -> None:
        if not self._table.has(row_id):
            raise NotFound(f"no row with id {row_id}", id=row_id)

    # ---- presence: a user's locks outlive their sockets by the grace period ----------

    def user_connected(self, user: str) -> None:
        self._sockets[user] = self._sockets.get(user, 0) + 1
        self._leaving.pop(user, None)

    def user_disconnected(self, user: str) -> None:
        left = self._sockets.get(user, 0) - 1
        if left > 0:
            self._sockets[user] = left
            return
        self._sockets.pop(user, None)
        self._leaving[user] = self._clock() + self._grace_s

    async def sweep(self) -> None:
        await self._locks.sweep()
        now = self._clock()
        for user, deadline in list(self._leaving.items()):
            if deadline <= now:
                del self._leaving[user]
                await self._locks.end_user(user, "disconnected")
