"""The database of users, sessions and random numbers: one SQLite connection (WAL) shared by
their services, used so that no statement is ever left half-done.

Each call is one whole statement run to completion in aiosqlite's thread: a read fetches all
its rows before any other statement can start, and a write commits on its own (autocommit).
An open read under a write would pin a stale snapshot, and SQLite then refuses the write
("database is locked") however long it waits; a failed write inside a transaction left open
would refuse every later one on the connection.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite

from protocol.errors import Unavailable

Params = Sequence[Any]
Row = tuple[Any, ...]
P = ParamSpec("P")
T = TypeVar("T")


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: Path) -> Database:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def script(self, sql: str) -> None:
        """Schema statements, once at start."""
        await self._conn.executescript(sql)

    async def rows(self, sql: str, params: Params = ()) -> list[Row]:
        return [tuple(row) for row in await self._conn.execute_fetchall(sql, params)]

    async def row(self, sql: str, params: Params = ()) -> Row | None:
        found = await self.rows(sql, params)
        return found[0] if found else None

    async def write(self, sql: str, params: Params = ()) -> None:
        await self._conn.execute(sql, params)

    async def close(self) -> None:
        await self._conn.close()


def storage_failures_unavailable(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A database that fails (disk full, I/O error, locked) is `unavailable`, not a bug.
    Constraint violations are decided by the caller, so they pass through."""

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise Unavailable(f"storage failed ({exc}); nothing was changed") from exc

    return guarded
