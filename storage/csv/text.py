"""CSV text, fast: the bytes `csv.writer(lineterminator="\\r\\n")` would write, built a block of
rows at a time and a column at a time, so a column that needs no quoting costs one join.

A million rows take about half the time of `csv.writer` fed one row at a time; checkpoints,
the id migration and downloads all write through here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import cast

from protocol.values import Value

Block = Sequence[Sequence[Value]]  # one block of rows, given as its columns
ROWS_PER_BLOCK = 20_000
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_QUOTE_TRIGGERS = (",", '"', "\r", "\n")  # what makes csv.writer quote a cell (QUOTE_MINIMAL)
_NONE = type(None)


def escape_formula(value: Value) -> Value:
    """Keep spreadsheet apps from running a text cell as a formula (numbers stay as they are)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _cell(value: object, escape: bool) -> str:
    """One cell exactly as csv.writer writes it (None is empty, floats by repr)."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = "'" + value if escape and value.startswith(FORMULA_PREFIXES) else value
        if any(c in text for c in _QUOTE_TRIGGERS):
            return '"' + text.replace('"', '""') + '"'
        return text
    return repr(value) if isinstance(value, float) else str(value)


def _text_is_plain(column: Sequence[str | None], escape: bool) -> bool:
    """True when no cell of an all-text column needs quoting or formula escaping, so the
    values are their own cells. Decided on one joined string instead of cell by cell."""
    present = cast(list[str], list(filter(None, column)))
    if not present:
        return True
    joined = "\n".join(present)
    if joined.count("\n") != len(present) - 1 or any(c in joined for c in _QUOTE_TRIGGERS[:3]):
        return False  # some cell holds a newline, a comma, a quote or a CR
    return not escape or set(map(itemgetter(0), present)).isdisjoint(FORMULA_PREFIXES)


def _column_cells(column: Sequence[Value], escape: bool) -> Sequence[str]:
    kinds = set(map(type, column))
    if kinds <= {str, _NONE}:
        text = cast(Sequence[str | None], column)
        if not _text_is_plain(text, escape):
            return [_cell(v, escape) for v in text]
        return ["" if v is None else v for v in text] if _NONE in kinds else cast(Sequence[str], text)
    if kinds <= {int, _NONE} or kinds <= {float, _NONE}:
        # int.__str__ and float.__repr__ (= __str__) are what csv.writer uses; no quoting needed.
        if _NONE in kinds:
            return ["" if v is None else str(v) for v in column]
        return list(map(str, column))
    return [_cell(v, escape) for v in column]


def format_block(columns: Block, escape: bool = False) -> bytes:
    """Rows given as columns (at least one, all of one length, not empty), as CSV lines.
    With `escape`, text cells are formula-escaped."""
    cells = [_column_cells(column, escape) for column in columns]
    if len(cells) == 1:  # csv.writer quotes a row's only cell when it is empty
        lines: Iterable[str] = (c if c else '""' for c in cells[0])
    else:
        lines = map(",".join, zip(*cells, strict=True))
    return ("\r\n".join(lines) + "\r\n").encode()


def header_line(header: Sequence[str]) -> bytes:
    return format_block([[name] for name in header])


def row_blocks(rows: Iterable[Sequence[Value]], rows_per_block: int = ROWS_PER_BLOCK) -> Iterator[Block]:
    """Rows regrouped as blocks of columns."""
    it = iter(rows)
    while chunk := list(islice(it, rows_per_block)):
        yield [list(map(itemgetter(k), chunk)) for k in range(len(chunk[0]))]


def csv_bytes(header: Sequence[str], blocks: Iterable[Block], escape: bool = False) -> Iterator[bytes]:
    """The whole CSV: the header line (never escaped), then each block."""
    yield header_line(header)
    for block in blocks:
        if block and len(block[0]):
            yield format_block(block, escape)


def id_block(ids: Sequence[int], values: Sequence[tuple[Value, ...]], width: int) -> Block:
    """Rows of the table (an id, then a tuple starting with the other `width` columns) as one block."""
    return [ids, *(list(map(itemgetter(k), values)) for k in range(width))]
