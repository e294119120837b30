"""The table's durable change journal: a SQLite table in WAL mode with synchronous=FULL.

Every acked change is a row here before its ack. One thread owns the connection, so a whole
batch of changes (group commit) costs one executor hop and one fsync, and a commit writes
the changes and nothing else: the table's seq and highest id are read back from them, and a
row's version is folded into `row_versions` only when its change is pruned, so each commit
touches one page. The CSV on disk is a checkpoint: `table_meta` says which seq it reflects,
and replay starts after it.

An I/O error (SQLITE_IOERR*: a failed fsync, a failed write) stops the journal for the rest
of the process: after a failed fsync the kernel may have dropped the dirty pages, so a later
fsync that succeeds proves nothing about them ("fsyncgate"). Every later write is refused
with `JournalStopped`; a restart, which reads the journal back from disk, is what brings
writes back. A full disk (SQLITE_FULL) is not an I/O error: the commit fails and the next
one may succeed once there is room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from protocol.results import CsvUpdate

T = TypeVar("T")
log = logging.getLogger("tablecast.table")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS table_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS table_changes (seq INTEGER PRIMARY KEY, change TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS row_versions (id INTEGER PRIMARY KEY, version INTEGER NOT NULL);
"""


class JournalStopped(Exception):
    """The journal met an I/O error and takes no more writes in this process."""


def is_io_error(exc: BaseException) -> TypeGuard[sqlite3.Error]:
    """Whether `exc` is SQLite's I/O error (any SQLITE_IOERR_* extended code), as opposed to
    a full disk, a lock timeout or a bad statement, from which a later commit may recover."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_IOERR


@dataclass(frozen=True)
class JournalRecord:
    seq: int
    change: CsvUpdate  # the csv_update payload; add/update carry the whole new row


def _fold(versions: dict[int, int | None], change: CsvUpdate) -> None:
    """The row version `change` leaves behind (None: the row is gone)."""
    if change["op"] == "delete":
        versions[change["id"]] = None
    elif "row" in change:
        versions[change["row"]["id"]] = change["seq"]


@dataclass
class JournalState:
    meta: dict[str, Any]
    versions: dict[int, int | None]  # None: the row is gone
    replay: list[CsvUpdate] = field(default_factory=list)  # changes after the checkpoint
    history: list[CsvUpdate] = field(default_factory=list)  # newest `keep`, oldest first


class Journal:
    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        # One thread: SQLite connections are not shared across threads, and order matters.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self.stopped: str | None = None  # why writes are refused, once an I/O error happened

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "journal is not open"
        return self._conn

    async def open(self, history_keep: int) -> JournalState:
        return await self._run(self._open, history_keep)

    def _open(self, history_keep: int) -> JournalState:
        conn = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        self._conn = conn
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM table_meta")}
        versions: dict[int, int | None] = dict(conn.execute("SELECT id, version FROM row_versions"))
        checkpoint = int(meta.get("checkpoint_seq", 0))
        replay: list[CsvUpdate] = []
        seq, max_id = int(meta.get("seq", 0)), int(meta.get("max_id", 0))
        for (text,) in conn.execute("SELECT change FROM table_changes ORDER BY seq"):
            change: CsvUpdate = json.loads(text)
            seq = max(seq, change["seq"])
            if "row" in change:
                max_id = max(max_id, change["row"]["id"])
            if change["seq"] > checkpoint:
                replay.append(change)
            else:  # in the CSV already, but the CSV holds no versions
                _fold(versions, change)
        meta |= {"seq": seq, "max_id": max_id}
        floor = int(meta.get("history_floor", 0))
        history = [
            json.loads(c)
            for (c,) in conn.execute(
                "SELECT change FROM (SELECT seq, change FROM table_changes WHERE seq > ?"
                " ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (floor, history_keep),
            )
        ]
        return JournalState(meta=meta, versions=versions, replay=replay, history=history)

    async def append(self, records: Sequence[JournalRecord]) -> None:
        if self.stopped is not None:  # refused at once, without a hop to the journal's thread
            raise JournalStopped(self.stopped)
        await self._run(self._append, records)

    def _append(self, records: Sequence[JournalRecord]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO table_changes (seq, change) VALUES (?, ?)",
                [(r.seq, json.dumps(r.change, separators=(",", ":"))) for r in records],
            )

    def _put_meta(self, values: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO table_meta (key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    async def set_meta(self, values: dict[str, Any]) -> None:
        await self._run(self._set_meta, values)

    def _set_meta(self, values: dict[str, Any]) -> None:
        with self._transaction():
            self._put_meta(values)

    async def finish_checkpoint(self, values: dict[str, Any], prune_through: int) -> None:
        await self._run(self._finish_checkpoint, values, prune_through)

    def _finish_checkpoint(self, values: dict[str, Any], prune_through: int) -> None:
        db = self._db
        with self._transaction():
            self._put_meta(values)
            # The pruned changes' versions live on in row_versions; the CSV holds none.
            versions: dict[int, int | None] = {}
            for (text,) in db.execute("SELECT change FROM table_changes WHERE seq <= ? ORDER BY seq", (prune_through,)):
                _fold(versions, json.loads(text))
            db.executemany(
                "INSERT OR REPLACE INTO row_versions (id, version) VALUES (?, ?)",
                [(row_id, v) for row_id, v in versions.items() if v is not None],
            )
            db.executemany(
                "DELETE FROM row_versions WHERE id = ?", [(row_id,) for row_id, v in versions.items() if v is None]
            )
            db.execute("DELETE FROM table_changes WHERE seq <= ?", (prune_through,))

    async def reset(self, values: dict[str, Any]) -> None:
        """The table was replaced whole (restore, hand edit): every row takes the new seq."""
        await self._run(self._reset, values)

    def _reset(self, values: dict[str, Any]) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM row_versions")
            self._db.execute("DELETE FROM table_changes")
            self._put_meta(values)

    def _transaction(self) -> _Transaction:
        if self.stopped is not None:
            raise JournalStopped(self.stopped)
        return _Transaction(self._db, self._io_error)

    def stop(self, reason: str) -> None:
        """Refuse every later write in this process, saying `reason`; logged once, loudly,
        here rather than by each write refused."""
        if self.stopped is None:
            self.stopped = reason
            log.critical("table writes refused until the server is restarted", extra={"reason": reason})

    def _io_error(self, exc: sqlite3.Error) -> JournalStopped:
        name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        self.stop(
            f"the table's storage failed with an I/O error ({name}: {exc}); writes are refused until"
            " the server is restarted"
        )
        assert self.stopped is not None
        return JournalStopped(self.stopped)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._db.close)
            self._conn = None
        self._executor.shutdown(wait=True)


class _Transaction:
    def __init__(self, db: sqlite3.Connection, on_io_error: Callable[[sqlite3.Error], JournalStopped]) -> None:
        self._db = db
        self._on_io_error = on_io_error

    def __enter__(self) -> None:
        self._guarded("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._guarded("COMMIT")
        else:
            self._failed(exc)

    def _guarded(self, sql: str) -> None:
        try:
            self._db.execute(sql)
        except sqlite3.Error as exc:
            self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        """Leave no transaction open (a refused COMMIT may), and turn an I/O error into the
        journal's stop."""
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:  # SQLite rolls back by itself after some errors
                self._db.execute("ROLLBACK")
        if is_io_error(exc):
            raise self._on_io_error(exc) from exc
