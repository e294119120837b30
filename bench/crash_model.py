"""What bench/crash.py expects of the table: every acked write as the model of each row, the
writes in flight at a kill (either outcome is right), the values writers send, and the checks
of a downloaded or on-disk CSV against what the server serves."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Value = str | int | float | None


Row = dict[str, Any]  # {"id", "version", "values"} as the server sends it


TEXTS = (
    "comma, inside",
    'quote " inside',
    "line\nbreak",
    "crlf\r\nend",
    "ünïcødé ✓ 表",
    "=SUM(A1:A9)",
    "-starts with minus",
    "@at",
    " padded ",
    "'already quoted",
    "NA",
    "null",
)


@dataclass
class Pending:
    """A write sent whose ack has not come (yet): after a kill it may or may not be stored."""

    op: str  # "add" | "update" | "delete"
    row_id: int | None  # None for an add: its id is the server's choice
    values: dict[str, Value]  # an add's whole row, an update's columns; {} for a delete


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    applied: dict[int, int] = field(default_factory=dict)  # writer -> id of its in-flight add that was stored
    applied_count: int = 0


@dataclass
class Model:
    columns: list[dict[str, str]]
    rows: dict[int, Row]
    seq: int
    ids_seen: set[int] = field(default_factory=set)  # ids are never reused, even after deletes
    deleted: set[int] = field(default_factory=set)
    pending: dict[int, Pending] = field(default_factory=dict)  # per writer: at most one in flight
    acked_version: int = 0  # the highest version any ack carried

    @property
    def names(self) -> list[str]:
        return [column["name"] for column in self.columns]

    def verify(self, served: Mapping[int, Row], seq: int) -> Verdict:
        """Compare what the restarted server serves with every acked write."""
        verdict = Verdict()
        if seq < max(self.acked_version, self.seq):
            verdict.errors.append(f"seq went back: served {seq}, acked up to {self.acked_version}")
        in_flight = {p.row_id: p for p in self.pending.values() if p.row_id is not None}
        for row_id, want in self.rows.items():
            got = served.get(row_id)
            if got == want:
                continue
            p = in_flight.get(row_id)
            if p is not None and p.op == "delete" and got is None:
                verdict.applied_count += 1
                continue
            if (
                p is not None
                and p.op == "update"
                and got is not None
                and got["values"] == {**want["values"], **p.values}
                and want["version"] < got["version"] <= seq
            ):
                verdict.applied_count += 1
                continue
            verdict.lost.append(f"row {row_id}: acked {short(want)}, served {short(got)}")
        for row_id in self.deleted & served.keys():
            verdict.lost.append(f"row {row_id}: acked delete, served {short(served[row_id])}")
        adds = {k: p for k, p in self.pending.items() if p.op == "add"}
        for row_id in sorted(served.keys() - self.rows.keys() - self.deleted):
            got = served[row_id]
            match = next((k for k, p in adds.items() if p.values == got["values"]), None)
            if match is None or row_id in self.ids_seen or got["version"] > seq:
                verdict.errors.append(f"row {row_id} served but never written: {short(got)}")
                continue
            del adds[match]
            verdict.applied[match] = row_id
            verdict.applied_count += 1
        return verdict

    def adopt(self, served: Mapping[int, Row], seq: int) -> None:
        """The server's table, checked, becomes the model: in-flight writes are settled."""
        self.deleted |= self.rows.keys() - served.keys()
        self.rows = dict(served)
        self.ids_seen |= served.keys()
        self.seq = seq
        self.pending.clear()


def short(row: Row | None, width: int = 300) -> str:
    text = json.dumps(row, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def random_value(rng: random.Random, kind: str) -> Value:
    """A value for a column of `kind` that must come back exactly as sent (no empty strings:
    those are stored as null)."""
    if rng.random() < 0.08:
        return None
    if kind == "integer":
        choice = rng.randrange(4)
        if choice == 0:
            return rng.randrange(-(2**63), 2**63)
        if choice == 1:
            return rng.choice((-(2**63), 2**63 - 1, 0, -1))
        return rng.randrange(0, 100_000)
    if kind == "number":
        choice = rng.randrange(5)
        if choice == 0:
            return rng.uniform(-1e6, 1e6)  # every digit of a double must survive
        if choice == 1:
            return float(rng.randrange(-1000, 1000))
        if choice == 2:
            return rng.uniform(-1, 1) * 1e-300
        if choice == 3:
            return rng.uniform(-1, 1) * 1e300
        return round(rng.uniform(-25_000, 25_000), 2)
    if rng.random() < 0.4:
        return rng.choice(TEXTS)
    return f"v{rng.getrandbits(40):010x}"


def check_csv(data: bytes, names: Sequence[str], where: str) -> list[str]:
    """Whole and parseable: the header, every record of its width, ids ascending."""
    try:
        records = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        return [f"{where}: not CSV: {exc}"]
    if not records or records[0] != list(names):
        return [f"{where}: header {records[:1]}, expected {list(names)}"]
    previous = 0
    for n, record in enumerate(records[1:], start=2):
        if len(record) != len(names):
            return [f"{where}: record {n} has {len(record)} fields: {record[:3]}..."]
        try:
            row_id = int(record[0])
        except ValueError:
            return [f"{where}: record {n} id {record[0]!r}"]
        if row_id <= previous:
            return [f"{where}: record {n} id {row_id} after {previous}"]
        previous = row_id
    return []


def compare_disk(data: bytes, columns: list[dict[str, str]], served: Mapping[int, Row]) -> list[str]:
    """The CSV on disk, read by the column types, against the served rows."""
    parse: dict[str, Callable[[str], Value]] = {"integer": int, "number": float, "text": str}
    kinds = [column["type"] for column in columns]
    names = [column["name"] for column in columns]
    records = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))[1:]
    problems: list[str] = []
    on_disk: dict[int, dict[str, Value]] = {}
    for record in records:
        cells = [None if cell == "" else parse[kind](cell) for cell, kind in zip(record, kinds, strict=True)]
        on_disk[int(str(cells[0]))] = dict(zip(names[1:], cells[1:], strict=True))
    if on_disk.keys() != served.keys():
        problems.append(
            f"CSV on disk ids differ: only on disk {sorted(on_disk.keys() - served.keys())[:10]}, "
            f"only served {sorted(served.keys() - on_disk.keys())[:10]}"
        )
    for row_id in sorted(on_disk.keys() & served.keys()):
        if on_disk[row_id] != served[row_id]["values"]:
            problems.append(f"CSV on disk row {row_id}: {on_disk[row_id]}, served {short(served[row_id])}")
            if len(problems) >= 10:
                break
    return problems
