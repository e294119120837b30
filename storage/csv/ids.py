"""The id rule of a table's CSV: each id blank or a positive integer, none twice; blank ones
get new ids in file order, above every id the file or the table has given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from storage.csv.refusals import CsvFormatError, ReadAsText


def ids_from_numbers(parts: list[Any]) -> list[int]:
    """Ids the parser read as integers; they follow the id rule when all are present,
    positive and distinct (else the text read finds which line breaks it)."""
    if not parts:
        return []
    if any(part.dtype.kind not in "iu" or part.dtype != parts[0].dtype or part.isna().any() for part in parts):
        raise ReadAsText
    ids = np.concatenate([part.to_numpy(dtype=part.dtype.numpy_dtype) for part in parts])
    if len(ids) and ids.min() < 1:
        raise ReadAsText
    if not (ids[1:] > ids[:-1]).all() and len(np.unique(ids)) != len(ids):
        raise ReadAsText
    result: list[int] = ids.tolist()
    return result


def ids_from_text(raw: list[str], path: Path, id_floor: int) -> tuple[list[int], bool]:
    """The id rule: blank or a positive integer (surrounding whitespace allowed), each id
    once; blank cells get new ids after the largest. Returns the ids and whether any was
    assigned. Checked on whole columns; any doubt goes to `_ids_line_by_line`."""
    stripped = list(map(str.strip, raw))
    present = list(filter(None, stripped))
    if present:
        if not "".join(present).isdigit():
            return _ids_line_by_line(raw, path, id_floor)
        try:
            numbers = list(map(int, present))
        except ValueError:  # a digit int() does not take: the reference raises it, line by line
            return _ids_line_by_line(raw, path, id_floor)
        if min(numbers) < 1 or len(set(numbers)) != len(numbers):
            return _ids_line_by_line(raw, path, id_floor)
    else:
        numbers = []
    if len(present) == len(raw):
        return numbers, False
    next_id = max(max(numbers, default=0), id_floor) + 1
    given = iter(numbers)
    ids: list[int] = []
    for text in stripped:
        if text:
            ids.append(next(given))
        else:
            ids.append(next_id)
            next_id += 1
    return ids, True


def _ids_line_by_line(raw: list[str], path: Path, id_floor: int) -> tuple[list[int], bool]:
    """The id rule one line at a time, naming the first line that breaks it."""
    ids: list[int | None] = []
    seen: set[int] = set()
    for line, value in enumerate(raw, start=2):
        text = value.strip()
        if not text:
            ids.append(None)
            continue
        if not text.isdigit() or int(text) < 1:
            raise CsvFormatError(f"{path}: line {line}: id {value!r} is not a positive integer")
        row_id = int(text)
        if row_id in seen:
            raise CsvFormatError(f"{path}: line {line}: id {row_id} appears twice")
        seen.add(row_id)
        ids.append(row_id)
    next_id = max(max(seen, default=0), id_floor) + 1
    out: list[int] = []
    for given in ids:
        if given is None:
            out.append(next_id)
            next_id += 1
        else:
            out.append(given)
    return out, len(seen) != len(raw)
