"""Accepted means durable and identical, against the running server: random values for every
column type are either refused (`invalid_input` or `payload_too_large`, naming the field, as
the rules say) or, after a `kill -9` and a restart, served byte-for-byte as acked by Socket.IO
(`fetch_csv`), by REST (the JSON page and `/record/`), in the CSV download and in the CSV on
disk. Each example sends a batch of values and restarts the server once; the next example's
start then loads the CSV that holds them (some examples let the checkpoint land before the
kill, the others leave every change to the journal's replay).

The issue's own requests, and restores of backups whose values do not fit, are spelled out too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import Client, ServerProcess, login
from tests.hardening import canonical, cell_values, check_envelope, csv_text, examples, received, tracebacks, verdict

MAX_CELL = 300
KINDS = {"label": "text", "count": "integer", "amount": "number"}
HEADER = ["id", *KINDS]
COLUMNS = [{"name": "id", "type": "integer"}, *({"name": n, "type": k} for n, k in KINDS.items())]
SEED = "id,label,count,amount\r\n1,seed,7,2.5\r\n"
SETTINGS = {"MAX_CELL_CHARS": str(MAX_CELL), "CSV_FLUSH_S": "0.1"}


def seeded_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "backend_table.csv").write_text(SEED, newline="")
    return data_dir


@dataclass
class Model:
    """What the server must hold: every acked row, as acked."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0

    def page(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in sorted(self.rows)]

    def csv(self, *, escape: bool) -> bytes:
        cells = [[row["id"], *(row["values"][name] for name in KINDS)] for row in self.page()]
        return csv_text(HEADER, cells, escape=escape)

    def take(self, row: dict[str, Any]) -> None:
        assert row["version"] > self.seq, (row, self.seq)  # seq strictly increases
        self.seq = row["version"]
        self.rows[row["id"]] = row


@dataclass
class Lab:
    server: ServerProcess
    token: str
    model: Model
    locked: set[int] = field(default_factory=set)  # by us, since the last start
    # The first failure, raised again by every later example: the server's state is past the
    # model's then, and hypothesis replays the failing example to report it.
    failure: BaseException | None = None

    def on_disk(self) -> bytes:
        return (self.server.data_dir / "backend_table.csv").read_bytes()


async def open_lab(server: ServerProcess) -> Lab:
    token = await login(server.url)
    lab = Lab(server, token, Model())
    async with aiohttp.ClientSession() as http:
        page = await rest_page(http, lab)
    for row in page["rows"]:
        lab.model.take(row)
    lab.model.seq = page["seq"]
    return lab


async def connect(lab: Lab) -> Client:
    client = Client()
    await client.connect(lab.server.url, auth={"token": lab.token}, transports=["websocket"], wait_timeout=10)
    return client


async def rest_page(http: aiohttp.ClientSession, lab: Lab) -> dict[str, Any]:
    resp = await http.get(f"{lab.server.url}/api/fetch_csv?limit=10000", headers=auth(lab))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def auth(lab: Lab) -> dict[str, str]:
    return {"Authorization": f"Bearer {lab.token}"}


# ---- one request, judged against the rules ----------------------------------------------------


async def send(lab: Lab, client: Client, op: str, column: str, value: Any) -> None:
    expected = verdict(KINDS[column], received(value), MAX_CELL)
    model = lab.model
    if op == "add":
        ack = await client.ask("add_csv", {"values": {column: value}})
    else:
        target = max(model.rows)
        if target not in lab.locked:
            assert check_envelope(await client.ask("lock_row", {"id": target})) == "ok"
            lab.locked.add(target)
        version = model.rows[target]["version"]
        ack = await client.ask("update_csv", {"id": target, "values": {column: value}, "version": version})
    outcome = check_envelope(ack)
    assert outcome == expected.code, (op, column, value, ack)
    if outcome != "ok":
        assert ack["error"]["field"] == f"values.{column}", ack
        return
    row = ack["row"]
    if op == "add":
        assert row["id"] == max(model.rows) + 1, row
        values: dict[str, Any] = dict.fromkeys(KINDS)
    else:
        values = dict(model.rows[row["id"]]["values"])
    values[column] = expected.cell
    assert canonical(row["values"]) == canonical(values), (value, row)
    model.take(row)


# ---- every way the table is served, against the model ------------------------------------------


async def wait_until(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def served_as_acked(lab: Lab, client: Client) -> None:
    model = lab.model
    expected_rows = canonical(model.page())
    page = await client.ask("fetch_csv", {"limit": 10000})
    assert check_envelope(page) == "ok"
    assert page["columns"] == COLUMNS
    assert page["seq"] == model.seq
    assert page["total"] == len(model.rows)
    assert canonical(page["rows"]) == expected_rows
    async with aiohttp.ClientSession() as http:
        rest = await rest_page(http, lab)
        assert rest["columns"] == COLUMNS
        assert canonical(rest["rows"]) == expected_rows
        resp = await http.get(f"{lab.server.url}/record/", headers=auth(lab))
        assert resp.status == 200
        flat = [{"id": row["id"], **row["values"]} for row in model.page()]
        assert canonical(await resp.json()) == canonical(flat)
        resp = await http.get(f"{lab.server.url}/api/fetch_csv?format=csv", headers=auth(lab))
        assert resp.status == 200
        assert await resp.read() == model.csv(escape=True)
    written = model.csv(escape=False)
    await wait_until(lambda: lab.on_disk() == written)
    assert lab.on_disk() == written


def restart(lab: Lab) -> None:
    lab.server.kill()
    lab.server.start()
    lab.locked.clear()


async def one_batch(lab: Lab, batch: list[tuple[str, str, Any]], checkpoint_first: bool) -> None:
    if lab.server.proc is None:
        lab.server.start()
    client = await connect(lab)
    try:
        for op, column, value in batch:
            await send(lab, client, op, column, value)
        if checkpoint_first:
            written = lab.model.csv(escape=False)
            await wait_until(lambda: lab.on_disk() == written)
    finally:
        await client.disconnect()
    restart(lab)  # kill -9: no cleanup, no final checkpoint
    client = await connect(lab)
    try:
        await served_as_acked(lab, client)
    finally:
        await client.disconnect()
    assert tracebacks(lab.server.log()) == []


requests = st.lists(
    st.tuples(st.sampled_from(["add", "add", "update"]), st.sampled_from(list(KINDS)), cell_values(MAX_CELL)),
    min_size=5,
    max_size=30,
)


@pytest.mark.timeout(examples(120, 3600))
def test_every_acked_value_survives_kill_9_byte_for_byte(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(SETTINGS, data_dir=seeded_dir(tmp_path))
    lab = asyncio.run(open_lab(server))

    # Shrinking would restart the server once per attempt; the failing batch is reported as drawn.
    @settings(
        max_examples=examples(12, 200),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=requests, checkpoint_first=st.booleans())
    def batch_survives(batch: list[tuple[str, str, Any]], checkpoint_first: bool) -> None:
        if lab.failure is not None:
            raise lab.failure
        try:
            asyncio.run(one_batch(lab, batch, checkpoint_first))
        except BaseException as exc:
            lab.failure = exc
            raise

    batch_survives()
    # The last batch was served from the journal's replay; once more from the CSV alone.
    restart(lab)

    async def last_look() -> None:
        client = await connect(lab)
        try:
            await served_as_acked(lab, client)
        finally:
            await client.disconnect()

    asyncio.run(last_look())


# ---- the issue's requests ---------------------------------------------------------------------

BACKUP = "backend_table-20000101T000000.000Z-seq1-rows1.csv"


async def test_the_issues_requests_are_refused_and_the_server_restarts(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(SETTINGS, data_dir=seeded_dir(tmp_path))
    lab = await open_lab(server)
    client = await connect(lab)
    try:
        assert check_envelope(await client.ask("lock_row", {"id": 1})) == "ok"
        for value in (-(2**63) - 1, 2**63, 2**64, 10**99):
            for event, payload in (
                ("update_csv", {"id": 1, "values": {"count": value}}),
                ("add_csv", {"values": {"count": value}}),
            ):
                ack = await client.ask(event, payload)
                assert check_envelope(ack) == "invalid_input", (value, ack)
                assert ack["error"]["field"] == "values.count"
        for text in ("x\ud800y", "\udc00", "a\x00b"):
            ack = await client.ask("add_csv", {"values": {"label": text}})
            assert check_envelope(ack) == "invalid_input", (text, ack)
            assert ack["error"]["field"] == "values.label"
        ack = await client.ask("add_csv", {"values": {"label": "kept", "count": 2**63 - 1, "amount": -0.0}})
        assert check_envelope(ack) == "ok"
        lab.model.take(ack["row"])
    finally:
        await client.disconnect()
    restart(lab)
    client = await connect(lab)
    try:
        await served_as_acked(lab, client)
    finally:
        await client.disconnect()


async def test_a_backup_whose_values_do_not_fit_is_not_restored(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = make_server(SETTINGS, data_dir=seeded_dir(tmp_path))
    lab = await open_lab(server)
    backups = server.data_dir / "backups"
    client = await connect(lab)
    try:
        for content, column in (
            ("id,label,count,amount\r\n1,a,18446744073709551616,2.5\r\n", "count"),
            ("id,label,count,amount\r\n1,a,92.0,2.5\r\n", "count"),
            ("id,label,count,amount\r\n1,a,92,n/a\r\n", "amount"),
        ):
            (backups / BACKUP).write_text(content, newline="")
            ack = await client.ask("restore_backup", {"name": BACKUP})
            assert check_envelope(ack) == "unavailable", ack
            assert f"column {column!r}" in ack["error"]["message"], ack
            await served_as_acked(lab, client)  # nothing changed, the types least of all
        # Values that fit: restored, and 92 stays the integer 92.
        (backups / BACKUP).write_text("id,label,count,amount\r\n1,a,92,3\r\n", newline="")
        ack = await client.ask("restore_backup", {"name": BACKUP})
        assert check_envelope(ack) == "ok", ack
        page = await client.ask("fetch_csv", {})
        assert page["columns"] == COLUMNS
        assert canonical([r["values"] for r in page["rows"]]) == canonical([{"label": "a", "count": 92, "amount": 3.0}])
    finally:
        await client.disconnect()
    assert tracebacks(server.log()) == []
