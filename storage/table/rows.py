"""The table in memory: its columns, its rows, and the changes made to them. No I/O here.

A row is one flat tuple, the values of every column but `id` followed by the row's version:
at a million rows a second tuple per row would cost some 60 MB. Rows sit in a dict by id,
with a sorted list of ids for paging in id order. Every change is applied here at once and
described as a `Change`, which `undo` reverses if it cannot be made durable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sortedcontainers import SortedList

from protocol.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from protocol.results import Column as WireColumn
from protocol.results import CsvUpdate
from protocol.results import Row as WireRow
from protocol.values import INT64_MAX, INT64_MIN, Value, text_problem
from storage.csv.load import ID_COLUMN, Column, ColumnType, LoadedCsv
from storage.csv.text import ROWS_PER_BLOCK, Block, id_block

Row = tuple[Value, ...]  # the values of every column but id, then the row's version
Op = Literal["add", "update", "delete"]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Change:
    """One change, applied in memory, on its way to the journal."""

    seq: int
    op: Op
    row_id: int
    payload: CsvUpdate  # the csv_update broadcast; add and update carry the whole new row
    old: Row | None  # what undo puts back (update, delete)
    max_id_before: int

    def row(self) -> WireRow:
        """The changed row as stored (add and update)."""
        row = self.payload.get("row")
        assert row is not None, f"a {self.op} carries no row"
        return row


class Rows:
    def __init__(self, max_cell_chars: int) -> None:
        self._max_cell_chars = max_cell_chars
        self.columns: list[Column] = []
        self._names: list[str] = []  # value columns, without id
        self._types: list[ColumnType] = []
        self._index: dict[str, int] = {}
        self._rows: dict[int, Row] = {}
        self._order: SortedList = SortedList()
        self.seq = 0  # of the last change applied, durable or not
        self.max_id = 0  # ids are never reused

    # ---- the whole table ----------------------------------------------------------------

    def install(self, loaded: LoadedCsv, seq: int, max_id: int) -> None:
        """`loaded`, read with its rows' version, becomes the table at `seq`."""
        self.columns = loaded.columns
        self._names = [c.name for c in loaded.columns[1:]]
        self._types = [c.type for c in loaded.columns[1:]]
        self._index = {name: i for i, name in enumerate(self._names)}
        self._rows = dict(zip(loaded.ids, loaded.values, strict=True))
        self._order = SortedList(loaded.ids)
        self.seq = seq
        self.max_id = max(max_id, loaded.max_id)

    def set_versions(self, versions: Iterable[tuple[int, int | None]]) -> None:
        """Rows changed before the CSV was last written carry their own version."""
        rows = self._rows
        for row_id, version in versions:
            row = rows.get(row_id)
            if row is not None and version is not None:
                rows[row_id] = (*row[:-1], version)

    def replay(self, change: CsvUpdate) -> None:
        """Re-apply a journaled change; after-images make this idempotent."""
        if change["op"] == "delete":
            if self._rows.pop(change["id"], None) is not None:
                self._order.remove(change["id"])
        else:
            row = change["row"]
            if row["id"] not in self._rows:
                self._order.add(row["id"])
            values = row["values"]
            self._rows[row["id"]] = (*(values.get(name) for name in self._names), row["version"])
            self.max_id = max(self.max_id, row["id"])
        self.seq = max(self.seq, change["seq"])

    # ---- reads --------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self._rows)

    def has(self, row_id: int) -> bool:
        return row_id in self._rows

    def columns_wire(self) -> list[WireColumn]:
        return [{"name": c.name, "type": c.type} for c in self.columns]

    def wire(self, row_id: int, row: Row) -> WireRow:
        # zip stops at the last column name, before the version
        version: Any = row[-1]
        return {"id": row_id, "version": version, "values": dict(zip(self._names, row, strict=False))}

    def page(self, offset: int, limit: int) -> list[WireRow]:
        rows = self._rows
        return [self.wire(i, rows[i]) for i in self._order[offset : offset + limit]]

    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    def blocks(self, start: int = 0, end: int | None = None) -> Iterator[Block]:
        """The CSV rows in id order (positions [start, end)), a block at a time, read lazily
        from the live rows: only a frozen copy of the table (a fork) may consume it at leisure."""
        rows, order, width = self._rows, self._order, len(self._names)
        stop = len(order) if end is None else end
        for first in range(start, stop, ROWS_PER_BLOCK):
            ids = order[first : min(first + ROWS_PER_BLOCK, stop)]
            yield id_block(ids, [rows[i] for i in ids], width)

    # ---- changes ------------------------------------------------------------------------

    def check(self, values: dict[str, Any]) -> None:
        """Raise now the error `values` would raise when applied (an unknown column, a wrong
        type, a cell too long), so that bad input is judged before any row or lock is."""
        for name, value in values.items():
            self.coerce(name, value)

    def add(self, values: dict[str, Any], by: str) -> Change:
        cells: list[Value] = [None] * len(self._names)
        for name, value in values.items():
            cells[self._index_of(name)] = self.coerce(name, value)
        max_before = self.max_id
        self.seq += 1
        self.max_id += 1
        row_id = self.max_id
        row = (*cells, self.seq)
        self._rows[row_id] = row
        self._order.add(row_id)
        payload: CsvUpdate = {"op": "add", "seq": self.seq, "by": by, "ts": now_ms(), "row": self.wire(row_id, row)}
        return Change(self.seq, "add", row_id, payload, None, max_before)

    def update(self, row_id: int, values: dict[str, Any], version: int | None, by: str) -> Change:
        old = self._current(row_id, version)
        cells = list(old)
        before: dict[str, Value] = {}
        for name, value in values.items():
            index = self._index_of(name)
            cells[index] = self.coerce(name, value)
            before[name] = old[index]
        self.seq += 1
        cells[-1] = self.seq
        row = tuple(cells)
        self._rows[row_id] = row
        payload: CsvUpdate = {
            "op": "update",
            "seq": self.seq,
            "by": by,
            "ts": now_ms(),
            "row": self.wire(row_id, row),
            "before": before,
        }
        return Change(self.seq, "update", row_id, payload, old, self.max_id)

    def delete(self, row_id: int, version: int | None, by: str) -> Change:
        old = self._current(row_id, version)
        self.seq += 1
        del self._rows[row_id]
        self._order.remove(row_id)
        payload: CsvUpdate = {
            "op": "delete",
            "seq": self.seq,
            "by": by,
            "ts": now_ms(),
            "id": row_id,
            "before": dict(zip(self._names, old, strict=False)),
        }
        return Change(self.seq, "delete", row_id, payload, old, self.max_id)

    def undo(self, changes: Sequence[Change]) -> None:
        """Take back `changes` (the newest ones, oldest first) as if never made."""
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
            self.seq = changes[0].seq - 1
            self.max_id = changes[0].max_id_before

    def _current(self, row_id: int, version: int | None) -> Row:
        row = self._rows.get(row_id)
        if row is None:
            raise NotFound(f"no row with id {row_id}", id=row_id)
        if version is not None and version != row[-1]:
            raise Conflict(f"row {row_id} changed since version {version}", row=self.wire(row_id, row))
        return row

    def _index_of(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            self.coerce(name, None)  # raises the right error for id / unknown columns
            raise AssertionError("unreachable")
        return index

    def coerce(self, name: str, value: Any) -> Value:
        """`value` as a cell of column `name`, or the error that says why it cannot be one.
        Every cell of the table passes here, so the CSV it is written to can always be read
        back with the same types and values (see `storage.csv.load`)."""
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
            if len(value) > self._max_cell_chars:
                raise PayloadTooLarge(
                    f"{name} is over {self._max_cell_chars} characters",
                    field=field_name,
                    limit=self._max_cell_chars,
                )
            problem = text_problem(value)
            if problem is not None:
                raise InvalidInput(f"{name} holds {problem}", field=field_name)
            return str(value) if value != "" else None
        # bool is an int in Python, and JSON's true is no number.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{name} is a{'n integer' if kind == 'integer' else ' number'} column", field=field_name)
        if kind == "integer":
            return _integer(name, value, field_name)
        return _number(name, value, field_name)


def _integer(name: str, value: int | float, field_name: str) -> int:
    """A 64-bit signed integer: beyond it pandas (and most readers) would read the CSV cell
    back as a float or refuse the column. A whole float (3.0) is taken as that integer."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number", field=field_name)
        if not value.is_integer():
            raise InvalidInput(f"{name} is an integer column", field=field_name)
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise InvalidInput(f"{name} is an integer column: {INT64_MIN} to {INT64_MAX}", field=field_name)
    return number


def _number(name: str, value: int | float, field_name: str) -> float:
    """A finite double. An integer too large for one (JSON sends any size) is refused, not
    rounded to infinity."""
    try:
        number = float(value)
    except OverflowError:
        raise InvalidInput(f"{name} is out of the range of a number column", field=field_name) from None
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number", field=field_name)
    return number
