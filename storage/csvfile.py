"""CSV files on disk: parsing with type inference, writing, and atomic replacement."""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

ColumnType = Literal["integer", "number", "text"]
Value = int | float | str | None
ID_COLUMN = "id"
_WRITE_BUFFER = 1 << 20
_CHUNK_ROWS = 250_000
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class CsvFormatError(Exception):
    """The file cannot be served as a table; the message says why and where."""


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType


@dataclass
class LoadedCsv:
    columns: list[Column]  # `id` first
    rows: list[tuple[int, tuple[Value, ...]]]  # (id, the other columns' values), file order
    rewritten: bool  # ids were added, moved or assigned: the file on disk differs


def fingerprint(path: Path) -> str | None:
    """Identity of one version of a file; `os.replace` keeps it, an edit changes it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(tmp: Path, dest: Path) -> None:
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def _read_header(path: Path) -> list[str]:
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


def _infer(series: pd.Series) -> tuple[ColumnType, list[Value]]:
    filled = (series != "").to_numpy()
    present = series[filled]
    if len(present) == 0 or present.str.match(r"^\s*[-+]?0\d").any():
        return "text", [v if v != "" else None for v in series.tolist()]
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.isna().any() or not np.isfinite(numbers.to_numpy(dtype=float)).all():
        return "text", [v if v != "" else None for v in series.tolist()]
    kind: ColumnType = "integer" if pd.api.types.is_integer_dtype(numbers) else "number"
    out = np.full(len(series), None, dtype=object)
    out[filled] = numbers.tolist() if kind == "integer" else [float(x) for x in numbers.tolist()]
    return kind, out.tolist()


def _convert(series: pd.Series, kind: ColumnType, name: str) -> list[Value]:
    if kind == "text":
        return [v if v != "" else None for v in series.tolist()]
    filled = (series != "").to_numpy()
    numbers = pd.to_numeric(series[filled], errors="coerce")
    if numbers.isna().any():
        raise CsvFormatError(f"column {name!r} holds a value that is not a number")
    out = np.full(len(series), None, dtype=object)
    if kind == "integer":
        if not pd.api.types.is_integer_dtype(numbers):
            raise CsvFormatError(f"column {name!r} holds a value that is not an integer")
        out[filled] = numbers.tolist()
    else:
        out[filled] = [float(x) for x in numbers.tolist()]
    return out.tolist()


def load_csv(
    path: Path, types: dict[str, ColumnType] | None = None, progress: Callable[[int], None] | None = None
) -> LoadedCsv:
    """Parse a table. `types` (from our own last export) pins column types; without it they
    are inferred. A file without an `id` column gets ids 1..n in file order. `progress` is
    told the rows parsed so far, every `_CHUNK_ROWS`."""
    names = _read_header(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            chunks = []
            for chunk in pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                encoding="utf-8-sig",
                names=names,
                header=0,
                chunksize=_CHUNK_ROWS,
            ):
                chunks.append(chunk)
                if progress is not None:
                    progress(sum(len(c) for c in chunks))
            frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=names, dtype=str)
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        raise CsvFormatError(f"{path}: {exc}") from None
    count = len(frame)
    rewritten = names[0] != ID_COLUMN
    if ID_COLUMN in names:
        ids = _parse_ids(frame[ID_COLUMN], path)
        if None in ids:
            next_id = max((i for i in ids if i is not None), default=0) + 1
            for position, value in enumerate(ids):
                if value is None:
                    ids[position] = next_id
                    next_id += 1
            rewritten = True
    else:
        ids = list(range(1, count + 1))
    others = [name for name in names if name != ID_COLUMN]
    columns = [Column(ID_COLUMN, "integer")]
    values: list[list[Value]] = []
    for name in others:
        series = frame[name]
        if types is not None and name in types:
            kind = types[name]
            values.append(_convert(series, kind, name))
        else:
            kind, converted = _infer(series)
            values.append(converted)
        columns.append(Column(name, kind))
    row_values: list[tuple[Value, ...]] = list(zip(*values, strict=True)) if values else [()] * count
    rows = [(int(row_id or 0), vals) for row_id, vals in zip(ids, row_values, strict=True)]
    return LoadedCsv(columns=columns, rows=rows, rewritten=rewritten)


def _parse_ids(series: pd.Series, path: Path) -> list[int | None]:
    ids: list[int | None] = []
    seen: set[int] = set()
    for line, raw in enumerate(series.tolist(), start=2):
        text = raw.strip()
        if not text:
            ids.append(None)
            continue
        if not text.isdigit() or int(text) < 1:
            raise CsvFormatError(f"{path}: line {line}: id {raw!r} is not a positive integer")
        row_id = int(text)
        if row_id in seen:
            raise CsvFormatError(f"{path}: line {line}: id {row_id} appears twice")
        seen.add(row_id)
        ids.append(row_id)
    return ids


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Value]]) -> None:
    """Write a complete CSV and fsync it; the caller renames it into place. RFC 4180 line
    ends (CRLF) make the writer quote any cell holding a bare CR, which would split a row."""
    with path.open("w", newline="", encoding="utf-8", buffering=_WRITE_BUFFER) as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def escape_formula(value: Value) -> Value:
    """Keep spreadsheet apps from running a text cell as a formula (numbers stay as they are)."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_chunks(header: Sequence[str], rows: Iterable[Sequence[Value]], rows_per_chunk: int = 2000) -> Iterator[str]:
    """The table as CSV text in pieces, text cells formula-escaped, for streaming downloads."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    pending = 0
    for row in rows:
        writer.writerow([escape_formula(v) for v in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()
