"""The CSV loader and writer in-process: the values a file loads as (types, nulls, ids) are
pinned here on tricky inputs, for inferred and for pinned column types, over one chunk and
over many; and the writer's bytes are those of `csv.writer`."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from protocol.values import Value
from storage.csv import load as csvfile
from storage.csv.load import ColumnType, LoadedCsv, load_csv
from storage.csv.refusals import CsvFormatError
from storage.csv.text import csv_bytes, row_blocks
from storage.csv.write import write_csv, write_with_ids

Types = dict[str, ColumnType]
ID_AND_TEXT: Types = {"id": "integer", "a": "text"}


@pytest.fixture(params=[csvfile._CHUNK_ROWS, 2], ids=["one-chunk", "two-row-chunks"])
def chunk_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every test runs with the real chunk size and with chunks of two rows, so the parts of a
    column read separately are joined (and judged) the same way."""
    monkeypatch.setattr(csvfile, "_CHUNK_ROWS", request.param)
    size: int = request.param
    return size


def write(tmp_path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path = tmp_path / "table.csv"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def typed(values: Sequence[Value]) -> list[tuple[str, str]]:
    """Values with their exact Python types and reprs (1 == 1.0 and 0.0 == -0.0 would hide a
    change)."""
    return [(type(v).__name__, repr(v)) for v in values]


def column(loaded: LoadedCsv, name: str) -> list[Value]:
    index = [c.name for c in loaded.columns].index(name) - 1
    return [row[index] for row in loaded.values]


def types_of(loaded: LoadedCsv) -> dict[str, str]:
    return {c.name: c.type for c in loaded.columns}


def load_both(path: Path) -> tuple[LoadedCsv, LoadedCsv]:
    """The file with inferred types, then again with those types pinned (a restart)."""
    inferred = load_csv(path)
    pinned: Types = {c.name: c.type for c in inferred.columns}
    return inferred, load_csv(path, pinned)


# ---- type inference ------------------------------------------------------------------


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    ("cells", "kind", "values"),
    [
        (["007", "12"], "text", ["007", "12"]),  # a leading zero is a code, not a number
        (["-05", "3"], "text", ["-05", "3"]),
        (["0.5", "0", "10"], "number", [0.5, 0.0, 10.0]),  # 0.5 and a lone 0 are numbers
        (["1e3", "2"], "number", [1000.0, 2.0]),
        ([" 5", "+7", "-3"], "integer", [5, 7, -3]),
        ([" 5", "1e3"], "number", [5.0, 1000.0]),
        (["1.5", "", "2"], "number", [1.5, None, 2.0]),
        (["", "4", ""], "integer", [None, 4, None]),
        (["", "", ""], "text", [None, None, None]),  # all empty: text, all null
        (["inf", "1"], "text", ["inf", "1"]),  # not finite
        (["nan", "1"], "text", ["nan", "1"]),
        (["1_000", "2"], "text", ["1_000", "2"]),
        (["True", "False"], "text", ["True", "False"]),
        # Past 2**63 - 1 no integer column can hold it (PROTOCOL §9): a number column.
        (["9223372036854775808", "1"], "number", [9223372036854775808.0, 1.0]),
        (["-1", "18446744073709551616"], "number", [-1.0, 1.8446744073709552e19]),
        (["x", "1"], "text", ["x", "1"]),
        (["1", "x"], "text", ["1", "x"]),
    ],
)
def test_inferred_column_types_and_values(tmp_path: Path, cells: list[str], kind: str, values: list[Value]) -> None:
    path = write(tmp_path, "c\n" + "".join(f'"{cell}"\n' for cell in cells))
    for loaded in load_both(path):
        assert types_of(loaded) == {"id": "integer", "c": kind}
        assert typed(column(loaded, "c")) == typed(values)


@pytest.mark.usefixtures("chunk_rows")
def test_minus_zero_beside_floats_keeps_its_sign(tmp_path: Path) -> None:
    path = write(tmp_path, "c\n1\n-0\n2.5\n3\n")
    for loaded in load_both(path):
        assert typed(column(loaded, "c")) == typed([1.0, -0.0, 2.5, 3.0])


@pytest.mark.usefixtures("chunk_rows")
def test_text_keeps_quotes_commas_newlines_and_spaces(tmp_path: Path) -> None:
    cells = ["line\nbreak", 'say "hi"', "a,b", " lead", "trail ", "=SUM(A1)", "é"]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["t", "n"], *[[cell, str(i)] for i, cell in enumerate(cells)]])
    for crlf in (False, True):
        path = write(tmp_path, buffer.getvalue(), crlf=crlf)
        for loaded in load_both(path):
            expected = [cell.replace("\n", "\r\n") if crlf else cell for cell in cells]
            assert column(loaded, "t") == expected  # a quoted line end is part of the value
            assert typed(column(loaded, "n")) == typed(list(range(len(cells))))


@pytest.mark.usefixtures("chunk_rows")
def test_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "user,pnl\nann,1.5\nbob,\n", bom=True, crlf=True)
    for loaded in load_both(path):
        assert types_of(loaded) == {"id": "integer", "user": "text", "pnl": "number"}
        assert loaded.ids == [1, 2]
        assert column(loaded, "user") == ["ann", "bob"]
        assert typed(column(loaded, "pnl")) == typed([1.5, None])


@pytest.mark.usefixtures("chunk_rows")
def test_repeated_values_share_one_object(tmp_path: Path) -> None:
    brokers = ["Zerodha", "Upstox"] * 10
    path = write(tmp_path, "broker,limit\n" + "".join(f"{b},{1000 + i % 2}\n" for i, b in enumerate(brokers)))
    loaded = load_csv(path)
    assert column(loaded, "broker") == brokers
    assert len({id(v) for v in column(loaded, "broker")}) == 2
    assert len({id(v) for v in column(loaded, "limit")}) == 2


# ---- ids -----------------------------------------------------------------------------


@pytest.mark.usefixtures("chunk_rows")
def test_missing_id_column_gets_ids_in_file_order(tmp_path: Path) -> None:
    loaded = load_csv(write(tmp_path, "a\nx\ny\nz\n"))
    assert loaded.ids == [1, 2, 3]
    assert loaded.rewritten
    assert [c.name for c in loaded.columns] == ["id", "a"]


@pytest.mark.usefixtures("chunk_rows")
def test_ids_given_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "id,a\n7,x\n 3 ,y\n10,z\n")
    for loaded in load_both(path):
        assert typed(loaded.ids) == typed([7, 3, 10])
        assert not loaded.rewritten
        assert column(loaded, "a") == ["x", "y", "z"]


@pytest.mark.usefixtures("chunk_rows")
def test_id_column_not_first_is_moved(tmp_path: Path) -> None:
    loaded = load_csv(write(tmp_path, "a,id\nx,2\ny,1\n"))
    assert loaded.ids == [2, 1]
    assert loaded.rewritten
    assert column(loaded, "a") == ["x", "y"]


@pytest.mark.usefixtures("chunk_rows")
def test_blank_ids_are_assigned_after_the_largest(tmp_path: Path) -> None:
    for types in (None, ID_AND_TEXT):
        loaded = load_csv(write(tmp_path, "id,a\n5,x\n,y\n2,z\n,w\n"), types)
        assert loaded.ids == [5, 6, 2, 7]
        assert loaded.rewritten


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("+5", "line 3: id '+5' is not a positive integer"),
        ("0", "line 3: id '0' is not a positive integer"),
        ("-1", "line 3: id '-1' is not a positive integer"),
        ("abc", "line 3: id 'abc' is not a positive integer"),
        ("1.0", "line 3: id '1.0' is not a positive integer"),
        ("1", "line 3: id 1 appears twice"),
    ],
)
def test_bad_ids_name_the_line(tmp_path: Path, cell: str, message: str) -> None:
    path = write(tmp_path, f"id,a\n1,x\n{cell},y\n")
    for types in (None, ID_AND_TEXT):
        with pytest.raises(CsvFormatError, match=re.escape(message)):
            load_csv(path, types)


@pytest.mark.usefixtures("chunk_rows")
def test_plus_sign_elsewhere_does_not_disturb_pinned_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "id,phone\n1,+91 22\n2,+1 555\n")
    loaded = load_csv(path, {"id": "integer", "phone": "text"})
    assert loaded.ids == [1, 2]
    assert column(loaded, "phone") == ["+91 22", "+1 555"]


# ---- pinned types --------------------------------------------------------------------


@pytest.mark.usefixtures("chunk_rows")
def test_pinned_types_are_kept_whatever_the_values_look_like(tmp_path: Path) -> None:
    path = write(tmp_path, "id,code,amount,count\n1,12,5,7\n2,13,,\n3,,2.5,9\n")
    loaded = load_csv(path, {"id": "integer", "code": "text", "amount": "number", "count": "integer"})
    assert types_of(loaded) == {"id": "integer", "code": "text", "amount": "number", "count": "integer"}
    assert typed(column(loaded, "code")) == typed(["12", "13", None])
    assert typed(column(loaded, "amount")) == typed([5.0, None, 2.5])
    assert typed(column(loaded, "count")) == typed([7, None, 9])


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    ("kind", "cell", "message"),
    [
        ("integer", "1.5", "not an integer"),
        ("integer", "1e3", "not an integer"),
        ("integer", "1.0", "not an integer"),
        ("integer", "True", "not a number"),
        ("number", "abc", "not a number"),
        ("number", "nan", "not a number"),
    ],
)
def test_pinned_type_mismatch_is_a_format_error(tmp_path: Path, kind: ColumnType, cell: str, message: str) -> None:
    path = write(tmp_path, f"id,c\n1,2\n2,{cell}\n")
    with pytest.raises(CsvFormatError, match=message):
        load_csv(path, {"id": "integer", "c": kind})


@pytest.mark.usefixtures("chunk_rows")
def test_own_checkpoint_loads_back_to_the_same_values(tmp_path: Path) -> None:
    rows: list[list[Value]] = [
        [1, "ann", 0.1, 10, None],
        [2, None, -0.0, None, "x,y"],
        [3, "=1+1", 1e16, -5, 'q"q'],
        [5, "line\nbreak", 123456789.123456789, 2**62, ""],
        [9, " pad ", 5e-324, 0, "\r"],
    ]
    path = tmp_path / "table.csv"
    write_csv(path, ["id", "name", "amount", "count", "note"], rows)
    types: Types = {"id": "integer", "name": "text", "amount": "number", "count": "integer", "note": "text"}
    loaded = load_csv(path, types)
    assert loaded.ids == [1, 2, 3, 5, 9]
    expected = [tuple(None if v == "" else v for v in row[1:]) for row in rows]
    assert [typed(row) for row in loaded.values] == [typed(row) for row in expected]


# ---- the id migration written beside the parse ---------------------------------------


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    "text",
    [
        "user,pnl\nann,1.50\nbob,\n cid ,-0\n",
        "\ufeffuser,pnl\r\nann,1.50\r\n\r\nbob,2\r\ncid,3",  # BOM, CRLF, a blank line, no last line end
        "user,pnl\n",
    ],
)
def test_ids_written_in_front_of_the_lines_load_as_the_parse(tmp_path: Path, text: str) -> None:
    source = write(tmp_path, text)
    dest = tmp_path / "with_ids.csv"
    report = write_with_ids(source, dest)
    loaded = load_csv(source)
    assert report.matches(loaded)
    again = load_csv(dest, {c.name: c.type for c in loaded.columns})
    assert again.ids == loaded.ids == list(range(1, len(loaded) + 1))
    assert [typed(row) for row in again.values] == [typed(row) for row in loaded.values]
    assert not again.rewritten


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    "text",
    [
        'user,note\nann,"a\nb"\nbob,x\n',  # a quoted line end: lines are not records
        'user,note\nann,"q"\n',
        "user,note\nann,a\rb\nbob,x\n",  # a bare CR ends a record for the parser
        "user,note\nann\nbob,x\n",  # a short row
    ],
)
def test_ids_written_in_front_of_the_lines_are_refused_when_lines_are_not_rows(tmp_path: Path, text: str) -> None:
    source = write(tmp_path, text)
    assert not write_with_ids(source, tmp_path / "with_ids.csv").matches(load_csv(source))


# ---- writing -------------------------------------------------------------------------

_TRICKY: list[list[Any]] = [
    [1, "plain", 1.5, None],
    [2, "a,b", -0.0, 7],
    [3, 'say "hi"', 1e16, -3],
    [4, "line\nbreak", float("inf"), 0],
    [5, "cr\ronly", 0.1, 10**20],
    [6, "=SUM(A1)", 2.0, None],
    [7, "+1", None, 1],
    [8, "-x", 3.0, 2],
    [9, "@me", 4.0, 3],
    [10, "\tt", 5.0, 4],
    [11, "", 6.0, 5],
    [12, None, 7.0, 6],
]


def reference_csv(header: list[str], rows: list[list[Any]], escape: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        formula = ("=", "+", "-", "@", "\t", "\r")
        writer.writerow(["'" + v if escape and isinstance(v, str) and v.startswith(formula) else v for v in row])
    return buffer.getvalue().encode()


@pytest.mark.parametrize("escape", [False, True])
@pytest.mark.parametrize("block", [1, 3, 100])
def test_writer_bytes_are_those_of_the_csv_module(escape: bool, block: int) -> None:
    header = ["id", "=text", "amount", "count"]
    written = b"".join(csv_bytes(header, row_blocks(_TRICKY, block), escape))
    assert written == reference_csv(header, _TRICKY, escape)


def test_single_column_empty_cell_is_quoted_like_the_csv_module() -> None:
    rows: list[list[Any]] = [["a"], [""], [None]]
    assert b"".join(csv_bytes(["only"], row_blocks(rows))) == reference_csv(["only"], rows, False)
