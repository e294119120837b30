"""Writing a table's CSV: whole files, fsynced before they are renamed into place."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.values import Value
from storage.csv.load import LoadedCsv
from storage.csv.text import Block, csv_bytes, row_blocks

_PREFIX_BLOCK = 8 << 20  # bytes of lines given their ids at a time
_BOM = "\ufeff".encode()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Value]]) -> None:
    """Write a complete CSV and fsync it; the caller renames it into place. RFC 4180 line
    ends (CRLF) make the writer quote any cell holding a bare CR, which would split a row."""
    write_blocks(path, header, row_blocks(rows))


def write_blocks(path: Path, header: Sequence[str], blocks: Iterable[Block]) -> None:
    """`write_csv` for rows given as blocks of columns (see `storage.csv.text`)."""
    with path.open("wb") as fh:
        for data in csv_bytes(header, blocks):
            fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class PrefixedIds:
    """What `write_with_ids` wrote: its lines, and whether they can be the file's records."""

    rows: int  # lines given an id (blank lines are dropped, as the parser skips them)
    commas: int  # commas in those lines
    plain: bool  # no quote anywhere, and every CR ends a line

    def matches(self, loaded: LoadedCsv) -> bool:
        """Whether each line was exactly one of `loaded`'s rows (loaded from the source with
        ids 1..n added): with no quotes, a record ends only at a line end; one line per row,
        and (the parser having refused longer lines) each with all the row's fields."""
        fields = len(loaded.columns) - 1
        return self.plain and self.rows == len(loaded) and self.commas == self.rows * (fields - 1)


def write_with_ids(source: Path, dest: Path) -> PrefixedIds:
    """`source`, a CSV without an id column, as `dest` (fsynced) with ids 1..n written in front
    of its lines: the id migration without formatting a single value, and without waiting
    for the parse, which it can run beside. Valid only if the result `matches` the parse."""
    rows = commas = 0
    with source.open("rb") as src, dest.open("wb") as out:
        header = src.readline().removeprefix(_BOM)
        plain = _plain(header)
        out.write(b"id," + header + (b"" if header.endswith(b"\n") else b"\n"))
        rest = b""
        while True:
            block = src.read(_PREFIX_BLOCK)
            lines, rest = _whole_lines(rest + block, final=not block)
            plain = plain and _plain(lines)
            kept = [line for line in lines.split(b"\n")[:-1] if line not in (b"", b"\r")]
            out.write(b"".join(map(b"%d,%s\n".__mod__, enumerate(kept, start=rows + 1))))
            rows += len(kept)
            commas += lines.count(b",")
            if not block:
                break
        out.flush()
        os.fsync(out.fileno())
    return PrefixedIds(rows=rows, commas=commas, plain=plain)


def _plain(data: bytes) -> bool:
    """No quote (so no record spans lines) and no CR but in a CRLF line end."""
    return b'"' not in data and data.count(b"\r") == data.count(b"\r\n")


def _whole_lines(data: bytes, final: bool) -> tuple[bytes, bytes]:
    """`data` cut after its last line end (the rest waits for the next block); at the end of
    the file an unterminated last line gets its line end."""
    if final:
        return (data + b"\n" if data and not data.endswith(b"\n") else data), b""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]
