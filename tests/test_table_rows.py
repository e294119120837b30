"""`Rows`, the table in memory: how a value becomes a cell, what each change does and says,
that `undo` takes changes back exactly and `replay` can be repeated, and how rows are read."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from protocol.errors import Conflict, DomainError, InvalidInput, NotFound, PayloadTooLarge
from protocol.results import CsvUpdate
from protocol.values import Value
from storage.table import rows as rows_module
from storage.table.rows import Change, Rows
from tests.table_parts import BASE_SEQ, State, loaded, make_rows, state

BASE_PAGE = [
    {"id": 1, "version": BASE_SEQ, "values": {"name": "anna", "qty": 3, "price": 1.5}},
    {"id": 2, "version": BASE_SEQ, "values": {"name": "ben", "qty": None, "price": -2.0}},
    {"id": 4, "version": BASE_SEQ, "values": {"name": "dora", "qty": 7, "price": None}},
]


@pytest.fixture
def rows() -> Rows:
    return make_rows(max_cell_chars=10)


# ---- coercion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "cell"),
    [
        ("name", "x", "x"),
        ("name", "a" * 10, "a" * 10),  # exactly the limit
        ("name", "", None),  # an empty cell is null
        ("name", None, None),
        ("qty", 5, 5),
        ("qty", -12, -12),
        ("qty", 3.0, 3),
        ("qty", None, None),
        ("price", 1.25, 1.25),
        ("price", 2, 2.0),
        ("price", None, None),
    ],
)
def test_values_taken(rows: Rows, column: str, value: Any, cell: Value) -> None:
    coerced = rows.coerce(column, value)
    assert coerced == cell
    assert type(coerced) is type(cell)  # 3.0 in an integer column is the int 3, 2 in a number column 2.0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("name", 5),
        ("name", True),
        ("name", 1.5),
        ("name", ["a"]),
        ("qty", "5"),
        ("qty", ""),
        ("qty", True),
        ("qty", False),
        ("qty", 3.5),
        ("qty", math.nan),
        ("qty", math.inf),
        ("qty", {"n": 1}),
        ("price", True),
        ("price", "1.5"),
        ("price", math.nan),
        ("price", math.inf),
        ("price", -math.inf),
    ],
)
def test_values_refused_as_invalid_input(rows: Rows, column: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        rows.coerce(column, value)
    assert refused.value.details == {"field": f"values.{column}"}


@pytest.mark.parametrize("column", ["qty", "price"])
def test_an_integer_too_large_for_a_float_is_invalid_input(rows: Rows, column: str) -> None:
    # JSON carries such a number as a Python int; it must be refused like any bad value.
    with pytest.raises(InvalidInput):
        rows.coerce(column, 10**400)


def test_a_text_cell_over_the_limit_is_payload_too_large(rows: Rows) -> None:
    with pytest.raises(PayloadTooLarge) as refused:
        rows.coerce("name", "a" * 11)
    assert refused.value.code == "payload_too_large"
    assert refused.value.details == {"field": "values.name", "limit": 10}


@pytest.mark.parametrize(("column", "message"), [("id", "assigned by the server"), ("nope", "no column named")])
def test_id_and_unknown_columns_are_refused_with_their_field(rows: Rows, column: str, message: str) -> None:
    for attempt in (
        lambda: rows.coerce(column, 1),
        lambda: rows.add({column: 1}, "u"),
        lambda: rows.update(1, {column: 1}, None, "u"),
    ):
        with pytest.raises(InvalidInput, match=message) as refused:
            attempt()
        assert refused.value.details == {"field": f"values.{column}"}


def test_bad_input_changes_nothing(rows: Rows) -> None:
    before = state(rows)
    attempts: list[tuple[type[DomainError], Any]] = [
        (InvalidInput, lambda: rows.add({"name": "ok", "qty": "5"}, "u")),  # a good value before the bad one
        (PayloadTooLarge, lambda: rows.add({"name": "a" * 11}, "u")),
        (InvalidInput, lambda: rows.update(1, {"name": "new", "qty": 1.5}, None, "u")),
        (Conflict, lambda: rows.update(1, {"name": "new"}, BASE_SEQ - 1, "u")),
        (NotFound, lambda: rows.update(3, {"name": "new"}, None, "u")),
        (Conflict, lambda: rows.delete(1, BASE_SEQ + 1, "u")),
        (NotFound, lambda: rows.delete(3, None, "u")),
    ]
    for error, attempt in attempts:
        with pytest.raises(error):
            attempt()
        assert state(rows) == before


# ---- changes ----------------------------------------------------------------------------


def test_add_takes_the_next_id_and_describes_itself(rows: Rows) -> None:
    change = rows.add({"name": "eve", "price": 3}, "alice")
    row = {"id": 5, "version": BASE_SEQ + 1, "values": {"name": "eve", "qty": None, "price": 3.0}}
    assert (change.seq, change.op, change.row_id, change.old) == (BASE_SEQ + 1, "add", 5, None)
    assert isinstance(change.payload["ts"], int)
    assert change.payload == {"op": "add", "seq": BASE_SEQ + 1, "by": "alice", "ts": change.payload["ts"], "row": row}
    assert change.row() == row
    assert rows.page(3, 1) == [row]
    assert (rows.seq, rows.max_id, rows.total) == (BASE_SEQ + 1, 5, 4)


def test_ids_are_never_reused_after_a_delete(rows: Rows) -> None:
    added = rows.add({"name": "eve"}, "u")
    rows.delete(added.row_id, None, "u")
    rows.delete(4, None, "u")
    assert rows.add({}, "u").row_id == added.row_id + 1


def test_install_keeps_the_larger_max_id(rows: Rows) -> None:
    # The journal remembers ids of rows deleted before the file was written.
    rows.install(loaded({1: ("a", 1, 1.0)}, 9), 9, max_id=40)
    assert rows.add({}, "u").row_id == 41
    rows.install(loaded({70: ("a", 1, 1.0)}, 9), 9, max_id=40)
    assert rows.add({}, "u").row_id == 71


def test_update_checks_the_version_and_says_what_it_replaced(rows: Rows) -> None:
    change = rows.update(1, {"qty": 9, "price": None}, BASE_SEQ, "bob")
    row = {"id": 1, "version": BASE_SEQ + 1, "values": {"name": "anna", "qty": 9, "price": None}}
    assert change.payload == {
        "op": "update",
        "seq": BASE_SEQ + 1,
        "by": "bob",
        "ts": change.payload["ts"],
        "row": row,
        "before": {"qty": 3, "price": 1.5},  # only the columns named
    }
    assert (change.op, change.row_id, change.old) == ("update", 1, ("anna", 3, 1.5, BASE_SEQ))
    assert rows.page(0, 1) == [row]
    with pytest.raises(Conflict) as stale:
        rows.update(1, {"qty": 10}, BASE_SEQ, "carl")
    assert stale.value.details == {"row": row}  # the row as it is now
    assert rows.update(1, {"qty": 10}, None, "carl").row()["values"]["qty"] == 10  # no version: no check


def test_delete_checks_the_version_and_carries_the_whole_old_row(rows: Rows) -> None:
    with pytest.raises(Conflict) as stale:
        rows.delete(2, BASE_SEQ - 1, "u")
    assert stale.value.details == {"row": BASE_PAGE[1]}
    change = rows.delete(2, BASE_SEQ, "dan")
    assert change.payload == {
        "op": "delete",
        "seq": BASE_SEQ + 1,
        "by": "dan",
        "ts": change.payload["ts"],
        "id": 2,
        "before": {"name": "ben", "qty": None, "price": -2.0},
    }
    assert change.old == ("ben", None, -2.0, BASE_SEQ)
    assert not rows.has(2)
    assert rows.page(0, 10) == [BASE_PAGE[0], BASE_PAGE[2]]
    with pytest.raises(NotFound) as missing:
        rows.delete(2, None, "u")
    assert missing.value.details == {"id": 2}


def a_mix_of_changes(rows: Rows, states: list[State] | None = None) -> list[Change]:
    """Adds, updates and deletes, some of the same row, some of rows added here; `states`
    gets the table's state before each change."""
    steps: list[Callable[[list[Change]], Change]] = [
        lambda done: rows.add({"name": "eve", "qty": 1}, "u"),
        lambda done: rows.update(1, {"name": "ANNA"}, None, "u"),
        lambda done: rows.update(done[0].row_id, {"qty": 2}, None, "u"),
        lambda done: rows.delete(2, None, "u"),
        lambda done: rows.add({"name": "fay"}, "u"),
        lambda done: rows.delete(done[-1].row_id, None, "u"),
        lambda done: rows.update(4, {"price": 8.5}, None, "u"),
        lambda done: rows.delete(4, None, "u"),
        lambda done: rows.add({"price": 0.5}, "u"),
    ]
    changes: list[Change] = []
    for step in steps:
        if states is not None:
            states.append(state(rows))
        changes.append(step(changes))
    return changes


def test_undo_takes_every_change_back_exactly(rows: Rows) -> None:
    before = state(rows)
    changes = a_mix_of_changes(rows)
    assert state(rows) != before
    rows.undo(changes)
    assert state(rows) == before
    assert [rows.has(i) for i in (1, 2, 3, 4, 5)] == [True, True, False, True, False]
    # The table goes on as if they were never made: the same seq and id come next.
    again = rows.add({}, "u")
    assert (again.seq, again.row_id) == (BASE_SEQ + 1, 5)


@pytest.mark.parametrize("kept", range(9))
def test_undo_of_the_newest_changes_leaves_the_older_ones(kept: int) -> None:
    rows = make_rows()
    states: list[State] = []
    changes = a_mix_of_changes(rows, states)
    rows.undo(changes[kept:])
    assert state(rows) == states[kept]
    after = state(rows)
    rows.undo([])  # nothing to take back
    assert state(rows) == after


def journaled(change: Change) -> CsvUpdate:
    """The payload as the journal gives it back: through JSON."""
    payload: CsvUpdate = json.loads(json.dumps(change.payload))
    return payload


def test_replay_rebuilds_the_table_and_can_be_repeated(rows: Rows) -> None:
    changes = a_mix_of_changes(rows)
    copy = make_rows()
    for change in changes:
        copy.replay(journaled(change))
    assert state(copy) == state(rows)
    for change in changes:  # a start after a crash may replay what the CSV already holds
        copy.replay(journaled(change))
    assert state(copy) == state(rows)
    assert copy.add({}, "u").row_id == rows.add({}, "u").row_id


def test_replay_never_lowers_seq_or_max_id(rows: Rows) -> None:
    added = rows.add({"name": "eve"}, "u")
    later = make_rows()
    later.replay(journaled(added))
    later.seq = 50
    later.replay(journaled(added))
    assert (later.seq, later.max_id) == (50, added.row_id)


# ---- reads ------------------------------------------------------------------------------


def test_pages_are_in_id_order(rows: Rows) -> None:
    assert rows.page(0, 10) == BASE_PAGE  # installed as 4, 1, 2
    assert rows.page(1, 1) == [BASE_PAGE[1]]
    assert rows.page(2, 5) == [BASE_PAGE[2]]
    assert rows.page(3, 5) == []
    rows.add({"name": "eve"}, "u")
    assert [r["id"] for r in rows.page(0, 10)] == [1, 2, 4, 5]
    assert rows.total == 4


def test_wire_row_keeps_the_version_out_of_the_values(rows: Rows) -> None:
    assert rows.wire(7, ("x", 1, 2.5, 42)) == {"id": 7, "version": 42, "values": {"name": "x", "qty": 1, "price": 2.5}}
    assert rows.columns_wire() == [
        {"name": "id", "type": "integer"},
        {"name": "name", "type": "text"},
        {"name": "qty", "type": "integer"},
        {"name": "price", "type": "number"},
    ]
    assert rows.header() == ["id", "name", "qty", "price"]


def test_blocks_hold_the_id_and_every_value_column_but_not_the_version(
    rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows_module, "ROWS_PER_BLOCK", 2)
    blocks = [[list(column) for column in block] for block in rows.blocks()]
    assert blocks == [
        [[1, 2], ["anna", "ben"], [3, None], [1.5, -2.0]],
        [[4], ["dora"], [7], [None]],
    ]
    assert [[list(c) for c in b] for b in rows.blocks(1, 3)] == [[[2, 4], ["ben", "dora"], [None, 7], [-2.0, None]]]
    assert list(rows.blocks(3)) == []


def test_set_versions_changes_only_the_versions_of_rows_present(rows: Rows) -> None:
    rows.set_versions([(1, 2), (4, 3), (99, 7)])
    assert [(r["id"], r["version"]) for r in rows.page(0, 10)] == [(1, 2), (2, BASE_SEQ), (4, 3)]
    assert [r["values"] for r in rows.page(0, 10)] == [r["values"] for r in BASE_PAGE]
    assert not rows.has(99)
    assert rows.seq == BASE_SEQ
