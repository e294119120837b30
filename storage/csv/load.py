"""Parsing a table's CSV, with column types inferred once and kept.

Loading a million rows is mostly the parser making Python objects, so the loader asks it to
make as few as possible: a column whose type is already known (our own checkpoint) is read
straight as numbers, and a column is converted only once. Values always come out as the
reference rules below define them (`_infer`, `_convert`, and the id rule in `storage.csv.ids`); the fast paths
are used only where they provably agree with those rules, and the file is read again the
slow way when they might not.
"""

from __future__ import annotations

import contextlib
import csv
import mmap
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from protocol.values import INT64_MAX, INT64_MIN, Value
from storage.csv.ids import ids_from_numbers, ids_from_text
from storage.csv.refusals import CsvFormatError, ReadAsText
from storage.csv.text import ROWS_PER_BLOCK, Block, id_block

ColumnType = Literal["integer", "number", "text"]
ID_COLUMN = "id"
_CHUNK_ROWS = 250_000
_TYPE_SAMPLE = 1000  # values tried as numbers before a whole column is
_SHARE_SAMPLE = 4096  # values looked at to tell a column of few distinct values
_SHARE_MAX_DISTINCT = 1024
_EXACT_FLOAT_INTS = 2**53  # integers a float holds exactly
_LEADING_ZERO = re.compile(r"^\s*[-+]?0\d")
# The same test over ","-joined values: with no comma inside a value, every comma starts one.
_LEADING_ZERO_JOINED = re.compile(r",\s*[-+]?0\d")
_INTEGER_TEXT = re.compile(r"\s*[-+]?[0-9]+\s*")


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


@dataclass
class LoadedCsv:
    columns: list[Column]  # `id` first
    ids: list[int]  # file order
    values: list[tuple[Value, ...]]  # each row's other columns (then its version, if read with one), as `ids`
    rewritten: bool  # ids were added, moved or assigned: the file on disk differs

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def max_id(self) -> int:
        return max(self.ids, default=0)

    def blocks(self, start: int = 0, end: int | None = None) -> Iterator[Block]:
        """The rows at positions [start, end) in file order, as blocks for `write_blocks`."""
        stop = len(self.ids) if end is None else end
        for first in range(start, stop, ROWS_PER_BLOCK):
            last = min(first + ROWS_PER_BLOCK, stop)
            yield id_block(self.ids[first:last], self.values[first:last], len(self.columns) - 1)


# ---- loading ------------------------------------------------------------------------


def load_csv(
    path: Path,
    types: dict[str, ColumnType] | None = None,
    progress: Callable[[int], None] | None = None,
    version: int | None = None,
    id_floor: int = 0,
) -> LoadedCsv:
    """Parse a table. `types` (from our own last export) pins column types; without it they
    are inferred. Rows without an id get new ones in file order, above both the file's
    largest id and `id_floor` (the largest the table ever gave: a deleted row's id is never
    given again); a file without an `id` column gets `id_floor`+1 .. `id_floor`+n. `progress` is
    told the rows parsed so far, every `_CHUNK_ROWS`. With `version`, each row's tuple ends
    with it: the table's own row shape, made once instead of copied after."""
    names = read_header(path)
    if types:
        with contextlib.suppress(ReadAsText):
            return _load(path, names, types, progress, version=version, direct=True, id_floor=id_floor)
    return _load(path, names, types, progress, version=version, direct=False, id_floor=id_floor)


def read_header(path: Path) -> list[str]:
    """The column names, stripped; raises `CsvFormatError` for a header we cannot serve."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header:
        raise CsvFormatError(f"{path}: no header line")
    names = [name.strip() for name in header]
    if any(not name for name in names):
        raise CsvFormatError(f"{path}: the header has an empty column name")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CsvFormatError(f"{path}: duplicate column names {duplicates}")
    return names


def _read(
    path: Path, names: list[str], numbers: Collection[str], progress: Callable[[int], None] | None
) -> dict[str, list[Any]]:
    """Each column as a list of parts, one per chunk: a list of str for most columns; for
    those in `numbers`, what the parser made of it with empty cells as NA (a masked
    integer or float array when every cell is a number)."""
    options: dict[str, Any] = {
        "dtype": {name: object for name in names if name not in numbers},
        "keep_default_na": False,
        "names": names,
        "header": 0,
        "index_col": False,
        "encoding": "utf-8-sig",
        "chunksize": _CHUNK_ROWS,
    }
    if numbers:
        options |= {"na_values": {name: [""] for name in numbers}, "dtype_backend": "numpy_nullable"}
    else:
        options["na_filter"] = False
    parts: dict[str, list[Any]] = {name: [] for name in names}
    rows = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            with pd.read_csv(path, **options) as reader:
                for chunk in reader:
                    for name in names:
                        column = chunk[name]
                        parts[name].append(column.array if name in numbers else column.to_numpy().tolist())
                    rows += len(chunk)
                    if progress is not None:
                        progress(rows)
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        raise CsvFormatError(f"{path}: {exc}") from None
    return parts


def _joined(parts: list[list[str]]) -> list[str]:
    if len(parts) == 1:
        return parts[0]
    out: list[str] = []
    for part in parts:
        out.extend(part)
    return out


def _load(
    path: Path,
    names: list[str],
    types: dict[str, ColumnType] | None,
    progress: Callable[[int], None] | None,
    *,
    version: int | None,
    direct: bool,
    id_floor: int,
) -> LoadedCsv:
    """Read the file once and convert each column. With `direct`, the columns of a pinned
    numeric type, and the ids, are read straight as numbers (no text is made for them);
    then `ReadAsText` is raised wherever that reading might differ from the reference."""
    numeric = [n for n in names if n != ID_COLUMN and (types or {}).get(n) in ("integer", "number")] if direct else []
    # The parser reads an id of "+5" as 5; the id rule refuses it. No "+" in the file, no such id.
    id_as_number = direct and ID_COLUMN in names and not _contains(path, b"+")
    try:
        parts = _read(path, names, [*numeric, *([ID_COLUMN] if id_as_number else [])], progress)
    except (CsvFormatError, ValueError, TypeError, OverflowError):
        if not direct:
            raise
        raise ReadAsText from None  # reading it as text gives the reference error
    count = sum(len(part) for part in parts[names[0]])
    rewritten = names[0] != ID_COLUMN
    if ID_COLUMN not in names:
        ids = list(range(id_floor + 1, id_floor + count + 1))
    elif id_as_number:
        ids = ids_from_numbers(parts.pop(ID_COLUMN))
    else:
        ids, assigned = ids_from_text(_joined(parts.pop(ID_COLUMN)), path, id_floor)
        rewritten = rewritten or assigned
    columns = [Column(ID_COLUMN, "integer")]
    values: list[list[Value]] = []
    for name in names:
        if name == ID_COLUMN:
            continue
        # Each column's parts are dropped once it is converted.
        kind, converted = _column(parts.pop(name), (types or {}).get(name), name, name in numeric)
        values.append(_share_repeats(converted, kind))
        columns.append(Column(name, kind))
    return LoadedCsv(columns=columns, ids=ids, values=_row_tuples(values, count, version), rewritten=rewritten)


def _column(parts: list[Any], kind: ColumnType | None, name: str, direct: bool) -> tuple[ColumnType, list[Value]]:
    """One column's type and values, from its parts as `_read` made them."""
    if direct:
        assert kind is not None
        return kind, _pinned_numbers(parts, kind)
    if kind is not None:
        return kind, _convert(_joined(parts), kind, name)
    return _infer(_joined(parts))


def _contains(path: Path, needle: bytes) -> bool:
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return False
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(needle) != -1


def _pinned_numbers(parts: list[Any], kind: ColumnType) -> list[Value]:
    """A pinned numeric column from the parser's numbers, where they are what `_convert`
    would make of the text: every cell parsed as an integer (or a float, for `number`),
    and for `number` finite and within the integers a float holds exactly (beyond them an
    integer's text and its float may round differently)."""
    filled = [part for part in parts if not part.isna().all()]
    kinds = {part.dtype.kind for part in filled}
    if kind == "integer":
        # Only int64 holds what an integer column may: uint64 (past 2**63 - 1) and float64
        # chunks go to the reference rule, which refuses them and says where.
        if not kinds <= {"i"} or len({part.dtype for part in filled}) > 1:
            raise ReadAsText
    elif not kinds <= {"i", "u", "f"}:
        raise ReadAsText
    out: list[Value] = []
    for part in parts:
        mask = np.asarray(part.isna())
        if mask.all():
            out.extend([None] * len(part))
            continue
        data = part.to_numpy(dtype=part.dtype.numpy_dtype, na_value=0)
        if kind == "number":
            # Beside float chunks, the text "-0" is -0.0 by the reference rule but 0 here.
            if part.dtype.kind != "f" and "f" in kinds and (data[~mask] == 0).any():
                raise ReadAsText
            data = data.astype(np.float64)
            if not (np.isfinite(data).all() and (np.abs(data) < _EXACT_FLOAT_INTS).all()):
                raise ReadAsText
        values: list[Value] = data.tolist()
        for position in np.flatnonzero(mask).tolist():
            values[position] = None
        out.extend(values)
    return out


def _text_values(raw: list[str]) -> list[Value]:
    """Empty cells are null."""
    return [v or None for v in raw] if "" in raw else cast(list[Value], raw)


def _numbers(present: list[str]) -> pd.Series:
    return pd.to_numeric(pd.Series(present, dtype=str), errors="coerce")


def _surely_text(present: list[str]) -> bool:
    """Whether a value among the first few is not a number, so the whole column is text
    (a value that does not parse is NA wherever it stands): most text columns are told
    by their first value, without parsing a million."""
    return bool(_numbers(present[:_TYPE_SAMPLE]).isna().any())


def _has_leading_zero(present: list[str]) -> bool:
    """A value like 007 or -05: a code, not a number. One search over the joined values."""
    joined = ",".join(present)
    if joined.count(",") != len(present) - 1:
        return any(map(_LEADING_ZERO.match, present))
    return _LEADING_ZERO_JOINED.search("," + joined) is not None


def _infer(raw: list[str]) -> tuple[ColumnType, list[Value]]:
    """The column's type and values: integer when every non-empty value is a whole number
    within 64 bits (what an integer column holds), number when every one is a finite number,
    text when one is neither or has a leading zero."""
    present = list(filter(None, raw))
    if not present or _surely_text(present) or _has_leading_zero(present):
        return "text", _text_values(raw)
    numbers = _numbers(present)
    if numbers.isna().any() or not np.isfinite(numbers.to_numpy(dtype=float)).all():
        return "text", _text_values(raw)
    # The parser makes uint64 of whole numbers past 2**63 - 1, float64 of those past 2**64 - 1
    # or below -2**63: none fits an integer column, so the column holds numbers.
    kind: ColumnType = "integer" if numbers.dtype.kind == "i" else "number"
    return kind, _placed(numbers, raw, kind)


def _convert(raw: list[str], kind: ColumnType, name: str) -> list[Value]:
    """A column of known type: every non-empty value must be of that type (for integer, a
    whole number within 64 bits; for number, a finite one). The error names the first value
    that is not."""
    if kind == "text":
        return _text_values(raw)
    present = list(filter(None, raw))
    numbers = _numbers(present)
    unparsed = np.asarray(numbers.isna())
    if unparsed.any():
        raise CsvFormatError(_refusal(name, raw, present, unparsed, "is not a number"))
    if kind == "integer" and numbers.dtype.kind != "i":
        outside = np.fromiter((not _is_int64_text(v) for v in present), dtype=bool, count=len(present))
        raise CsvFormatError(
            _refusal(name, raw, present, outside, f"is not an integer from {INT64_MIN} to {INT64_MAX}")
        )
    if kind == "number":
        infinite = ~np.isfinite(numbers.to_numpy(dtype=float))
        if infinite.any():
            raise CsvFormatError(_refusal(name, raw, present, infinite, "is not a finite number"))
    return _placed(numbers, raw, kind)


def _is_int64_text(text: str) -> bool:
    """Whether `text` is the parser's form of an integer (surrounding blanks and a sign
    allowed) within 64 bits."""
    if not _INTEGER_TEXT.fullmatch(text):
        return False
    digits = text.strip().lstrip("+-").lstrip("0")
    return len(digits) <= 19 and INT64_MIN <= int(text) <= INT64_MAX  # 20 digits never fit


def _refusal(name: str, raw: list[str], present: list[str], bad: np.ndarray, why: str) -> str:
    """The message for column `name`, whose non-empty values `present` (of the cells `raw`)
    are refused where `bad` is set: the first such value and its row (1 = the first after
    the header)."""
    found = np.flatnonzero(bad)
    if not len(found):
        return f"column {name!r} holds a value that {why}"
    index = int(found[0])
    row = [i for i, v in enumerate(raw) if v][index] + 1
    value = present[index]
    shown = repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    return f"column {name!r} holds a value that {why}: {shown} in row {row}"


def _placed(numbers: pd.Series, raw: list[str], kind: ColumnType) -> list[Value]:
    """The numbers of the non-empty cells, with null in the empty ones."""
    values: list[Any] = numbers.tolist()
    if kind == "number" and numbers.dtype != np.float64:
        values = [float(x) for x in values]  # a pinned number column of integers
    if len(values) == len(raw):
        return values
    out = np.full(len(raw), None, dtype=object)
    out[np.fromiter(map(bool, raw), dtype=bool, count=len(raw))] = values
    placed: list[Value] = out.tolist()
    return placed


def _share_repeats(values: list[Value], kind: ColumnType) -> list[Value]:
    """One object per distinct value in a column of few (a broker's name, a risk limit),
    instead of one per row. Floats are left alone: 0.0 and -0.0 are equal but not the same."""
    if kind == "number":
        return values
    sample = values[:_SHARE_SAMPLE]
    if len(set(sample)) > min(_SHARE_MAX_DISTINCT, len(sample) // 4):
        return values
    canonical: dict[Value, Value] = {}
    return [canonical.setdefault(v, v) for v in values]


def _row_tuples(columns: list[list[Value]], count: int, version: int | None) -> list[tuple[Value, ...]]:
    if version is not None:
        return list(zip(*columns, repeat(version, count), strict=True))
    return list(zip(*columns, strict=True)) if columns else [()] * count
