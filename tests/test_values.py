"""The value rules in-process: `Rows.coerce` takes exactly what the contract allows, every cell
it takes is written to the CSV and read back with the same type and value (with the column
types pinned, as a restart reads our own checkpoint, and inferred, as a first start does),
the loader refuses, naming the column, row and value, what an integer or number column cannot
hold, a restore never changes a column's type, and every integer field of a payload has a
bound. The same rules against the running server: tests/test_values_durable.py."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidInput, PayloadTooLarge, Unavailable
from protocol.payloads import Credentials, DeleteCsv, FetchCsv, Numbers, RecordQuery, Subscription, UpdateCsv, parse
from protocol.values import Value
from storage.csv import load as loader
from storage.csv.load import Column, ColumnType, LoadedCsv, load_csv
from storage.csv.refusals import CsvFormatError
from storage.csv.write import write_blocks
from storage.journal import Journal
from storage.table import TableConfig, TableStore
from storage.table.rows import Rows
from tests.hardening import (
    INT64_MAX,
    INT64_MIN,
    canonical,
    cell_values,
    examples,
    floats,
    socket_ints,
    texts,
    verdict,
)

MAX_CELL = 40
KINDS: dict[str, ColumnType] = {"label": "text", "count": "integer", "amount": "number"}
COLUMNS = [Column("id", "integer"), *(Column(name, kind) for name, kind in KINDS.items())]
TYPES: dict[str, ColumnType] = {c.name: c.type for c in COLUMNS}
FAST = settings(
    max_examples=examples(300, 5000), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def empty_rows() -> Rows:
    rows = Rows(MAX_CELL)
    rows.install(LoadedCsv(columns=list(COLUMNS), ids=[], values=[], rewritten=False), 0, 0)
    return rows


def huge_ints() -> st.SearchStrategy[int]:
    """Integers of any size a JSON decoder hands over (past what a Socket.IO packet carries)."""
    return st.one_of(st.integers(), st.integers(-(10**500), 10**500), st.sampled_from([10**400, -(10**400)]))


# ---- coercion -----------------------------------------------------------------------------


@FAST
@given(st.sampled_from(list(KINDS)), st.one_of(cell_values(MAX_CELL), huge_ints()))
def test_coerce_takes_exactly_what_the_rules_allow(column: str, value: Any) -> None:
    expected = verdict(KINDS[column], value, MAX_CELL)
    code, cell, details = coerced(column, value)
    assert code == expected.code, (value, cell, details)
    if code == "ok":
        assert canonical(cell) == canonical(expected.cell)
        assert type(cell) is type(expected.cell)
    else:
        assert details["field"] == f"values.{column}"


def coerced(column: str, value: Any) -> tuple[str, Value, dict[str, Any]]:
    try:
        return "ok", empty_rows().coerce(column, value), {}
    except (InvalidInput, PayloadTooLarge) as refused:
        return refused.code, None, refused.details


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("count", INT64_MAX + 1),
        ("count", INT64_MIN - 1),
        ("count", 2**64),
        ("count", 10**99),
        ("count", 10**400),
        ("count", 9.3e18),
        ("count", float(2**63)),
        ("count", True),
        ("amount", 10**400),
        ("amount", -(10**309)),
        ("amount", False),
        ("label", "x\ud800y"),
        ("label", "\udfff"),
        ("label", "a\x00b"),
        ("label", "\x1b[2J"),
        ("label", "\x7f"),
        ("label", "\x85"),
    ],
)
def test_the_issues_values_are_invalid_input_naming_the_field(column: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        empty_rows().coerce(column, value)
    assert refused.value.details == {"field": f"values.{column}"}


@pytest.mark.parametrize(
    ("column", "value", "cell"),
    [
        ("count", INT64_MAX, INT64_MAX),
        ("count", INT64_MIN, INT64_MIN),
        ("count", -9.223372036854775808e18, INT64_MIN),  # exactly -2**63
        ("count", -0.0, 0),
        ("amount", 10**308, 1e308),
        ("amount", -0.0, -0.0),
        ("amount", 5e-324, 5e-324),
        ("label", "tab\tline\ncr\r", "tab\tline\ncr\r"),
        ("label", "😀\ufeff\u2028", "😀\ufeff\u2028"),
    ],
)
def test_values_at_the_edges_are_taken(column: str, value: Any, cell: Value) -> None:
    taken = empty_rows().coerce(column, value)
    assert canonical(taken) == canonical(cell)
    assert type(taken) is type(cell)


# ---- what the server writes, it reads back --------------------------------------------------


def accepted(column: str) -> st.SearchStrategy[Value]:
    kind = KINDS[column]
    values: st.SearchStrategy[Any] = {"text": texts(MAX_CELL), "integer": socket_ints(), "number": floats()}[kind]
    return st.one_of(values, st.integers(-(2**64), 2**64), st.none()).filter(
        lambda v: verdict(kind, v, MAX_CELL).code == "ok"
    )


table_rows = st.lists(st.tuples(accepted("label"), accepted("count"), accepted("amount")), min_size=1, max_size=12)


def stored(rows: Rows) -> list[Any]:
    return [[row["id"], *(row["values"][name] for name in KINDS)] for row in rows.page(0, rows.total)]


def loaded_rows(loaded: LoadedCsv) -> list[Any]:
    return [[row_id, *values] for row_id, values in zip(loaded.ids, loaded.values, strict=True)]


@FAST
@given(table_rows, st.sampled_from([2, 250_000]))
def test_every_accepted_cell_loads_back_from_the_csv(cells: list[tuple[Value, ...]], chunk_rows: int) -> None:
    rows = empty_rows()
    for label, count, amount in cells:
        rows.add({"label": label, "count": count, "amount": amount}, "u")
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(loader, "_CHUNK_ROWS", chunk_rows)  # parts read apart are judged alike
        path = Path(tmp) / "t.csv"
        write_blocks(path, rows.header(), rows.blocks())
        # A restart: our own checkpoint, its types pinned.
        pinned = load_csv(path, TYPES)
        assert [(c.name, c.type) for c in pinned.columns] == [(c.name, c.type) for c in COLUMNS]
        assert canonical(loaded_rows(pinned)) == canonical(stored(rows))
        # The same file met as a hand edit: inferred, it loads, and what it loads as is kept
        # on the next restart (written back, read with those types pinned).
        inferred = load_csv(path)
        again = Path(tmp) / "again.csv"
        write_blocks(again, [c.name for c in inferred.columns], inferred.blocks())
        repinned = load_csv(again, {c.name: c.type for c in inferred.columns})
        assert repinned.columns == inferred.columns
        assert canonical(loaded_rows(repinned)) == canonical(loaded_rows(inferred))


# ---- the loader's rules for hand-written files ----------------------------------------------


@pytest.fixture(params=[250_000, 2], ids=["one-chunk", "two-row-chunks"])
def chunk_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(loader, "_CHUNK_ROWS", request.param)
    size: int = request.param
    return size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("9223372036854775808", "not an integer from -9223372036854775808 to 9223372036854775807"),
        ("-9223372036854775809", "not an integer from"),
        ("18446744073709551616", "not an integer from"),
        ("1" * 30, "not an integer from"),
        ("1" * 5000, "not a number"),
        ("1e5", "not an integer from"),
    ],
)
def test_a_pinned_integer_column_refuses_what_64_bits_cannot_hold(tmp_path: Path, cell: str, why: str) -> None:
    path = write(tmp_path, f"id,c\n1,5\n2,\n3,{cell}\n4,6\n")
    with pytest.raises(CsvFormatError, match=why) as refused:
        load_csv(path, {"id": "integer", "c": "integer"})
    shown = repr(cell) if len(cell) <= 40 else repr(cell[:40])
    assert "column 'c' holds a value that" in str(refused.value)
    assert shown in str(refused.value)
    assert str(refused.value).endswith(" in row 3")


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize("cell", ["inf", "-Infinity", "1e400"])
def test_a_pinned_number_column_refuses_what_is_not_finite(tmp_path: Path, cell: str) -> None:
    path = write(tmp_path, f"id,c\n1,1.5\n2,{cell}\n")
    with pytest.raises(CsvFormatError, match=f"not a finite number: '{cell}' in row 2"):
        load_csv(path, {"id": "integer", "c": "number"})


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize(
    ("cells", "kind", "values"),
    [
        (["9223372036854775807", "-9223372036854775808"], "integer", [INT64_MAX, INT64_MIN]),
        (["9223372036854775808", "1"], "number", [9.223372036854775808e18, 1.0]),
        (["-9223372036854775809", "1"], "number", [-9.223372036854775808e18, 1.0]),
        (["18446744073709551616"], "number", [1.8446744073709552e19]),
        (["-0", "5"], "integer", [0, 5]),
        (["1" * 5000], "text", ["1" * 5000]),
    ],
)
def test_whole_numbers_past_64_bits_make_a_number_column(
    tmp_path: Path, cells: list[str], kind: ColumnType, values: list[Value]
) -> None:
    path = write(tmp_path, "c\n" + "".join(f"{cell}\n" for cell in cells))
    inferred = load_csv(path)
    assert inferred.columns[1] == Column("c", kind)
    assert canonical([v[0] for v in inferred.values]) == canonical(values)
    pinned = load_csv(path, {"c": kind})  # a restart of the same file
    assert canonical(pinned.values) == canonical(inferred.values)


# ---- restore --------------------------------------------------------------------------------

BACKUP = "backend_table-20000101T000000.000Z-seq1-rows2.csv"


def seed(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "backend_table.csv").write_text("id,label,count,amount\n1,a,92,2.5\n2,b,7,-1.0\n")
    return data_dir


def put_backup(data_dir: Path, text: str) -> None:
    (data_dir / "backups" / BACKUP).write_text(text)


async def open_store(data_dir: Path) -> TableStore:
    store = TableStore(TableConfig(data_dir=seed(data_dir), flush_s=3600.0), Journal(data_dir / "backend.db"))
    await store.open()
    return store


def table_of(store: TableStore) -> tuple[Any, ...]:
    return canonical(store.columns_wire()), canonical(store.page(0, 100)), store.seq


@pytest.mark.parametrize(
    ("backup", "column", "why"),
    [
        ("id,label,count,amount\n1,a,18446744073709551616,2.5\n2,b,7,1\n", "count", "not an integer from"),
        ("id,label,count,amount\n1,a,92.0,2.5\n2,b,7,1\n", "count", "not an integer from"),
        ("id,label,count,amount\n1,a,92,n/a\n2,b,7,1\n", "amount", "not a number"),
        ("id,label,count,amount\n1,a,92,1e999\n2,b,7,1\n", "amount", "not a finite number"),
    ],
)
async def test_a_restore_that_would_change_a_column_type_is_refused(
    tmp_path: Path, backup: str, column: str, why: str
) -> None:
    store = await open_store(tmp_path / "data")
    try:
        put_backup(tmp_path / "data", backup)
        before = table_of(store)
        with pytest.raises(Unavailable) as refused:
            await store.restore(BACKUP, "u")
        message = str(refused.value)
        assert BACKUP in message
        assert f"column {column!r}" in message
        assert why in message
        assert table_of(store) == before
    finally:
        await store.close()


async def test_a_restore_whose_values_fit_keeps_every_type(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "data")
    try:
        # Whole numbers in the number column, digits in the text column: the table's types hold.
        put_backup(tmp_path / "data", "id,label,count,amount\n1,5,92,3\n2,,-7,\n")
        before = store.columns_wire()
        await store.restore(BACKUP, "u")
        assert store.columns_wire() == before
        assert canonical([r["values"] for r in store.page(0, 10)]) == canonical(
            [{"label": "5", "count": 92, "amount": 3.0}, {"label": None, "count": -7, "amount": None}]
        )
    finally:
        await store.close()


# ---- every integer field of a payload is bounded --------------------------------------------

HUGE = [2**53, 2**63, 10**30, 10**99, 10**400]


@pytest.mark.parametrize("number", HUGE)
@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (FetchCsv, {"offset": "N"}, "offset"),
        (FetchCsv, {"since": "N"}, "since"),
        (FetchCsv, {"limit": "N"}, "limit"),
        (UpdateCsv, {"id": "N", "values": {"a": 1}}, "id"),
        (UpdateCsv, {"id": 1, "values": {"a": 1}, "version": "N"}, "version"),
        (DeleteCsv, {"id": 1, "version": "N"}, "version"),
        (Numbers, {"limit": "N"}, "limit"),
        (Subscription, {"stream": "ohlc", "interval": "1m", "history": "N"}, "history"),
        (RecordQuery, {"offset": "N"}, "offset"),
        (RecordQuery, {"limit": "N"}, "limit"),
    ],
)
def test_a_huge_number_in_a_payload_is_invalid_input_naming_the_field(
    model: Any, payload: dict[str, Any], field: str, number: int
) -> None:
    for sign in (1, -1):
        data = {k: sign * number if v == "N" else v for k, v in payload.items()}
        with pytest.raises(InvalidInput) as refused:
            parse(model, data)
        assert refused.value.details == {"field": field}


def test_a_password_must_be_unicode_text() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(Credentials, {"username": "ann", "password": "pass\ud800word"})
    assert refused.value.details == {"field": "password"}
    assert parse(Credentials, {"username": "ann", "password": "pass\x00wörd😀"}).password == "pass\x00wörd😀"
