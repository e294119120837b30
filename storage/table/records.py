"""The table as flat JSON records, `{"id": .., <column>: value, ...}` (the seed dashboards'
`GET /record/`), with the values the JSON pages give, made a page at a time."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import partial

from protocol.results import Row as WireRow
from storage.csv.stream import Pieces

Page = Callable[[int, int], list[WireRow]]  # (offset, limit) -> rows
_PER_PAGE = 5_000


def records_text(rows: list[WireRow]) -> str:
    """Rows as flat records, comma-separated, without the array's brackets."""
    return json.dumps([{"id": row["id"], **row["values"]} for row in rows], separators=(",", ":"))[1:-1]


def record_pieces(page: Page) -> Pieces:
    """The records of rows [start, end), a page at a time, each led by a comma but the very first."""

    def pieces(start: int, end: int, first: bool) -> Iterator[bytes]:
        for at in range(start, end, _PER_PAGE):
            text = records_text(page(at, min(_PER_PAGE, end - at)))
            yield (text if first and at == start else "," + text).encode()

    return pieces


def record_parts(rows: list[WireRow]) -> Iterable[Callable[[], bytes]]:
    """Rows copied from the table now, as parts to format one by one (where there is no fork)."""
    for at in range(0, len(rows), _PER_PAGE):
        yield partial(_part, rows[at : at + _PER_PAGE], at == 0)


def _part(rows: list[WireRow], first: bool) -> bytes:
    text = records_text(rows)
    return (text if first else "," + text).encode()
