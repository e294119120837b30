"""`TableStore` in-process, on a temp DATA_DIR with a real journal: what it makes of the files
it finds (none, its own checkpoint, a CSV without ids, one edited by hand), that a restart
(clean, or a crash after the acks) gives back the same table, one server per directory,
restores, and no write once closing has begun."""

from __future__ import annotations

import asyncio
import json
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import InvalidInput, NotFound, Unavailable
from protocol.results import CsvUpdate
from storage.csv.load import ColumnType, load_csv, read_header
from storage.csv.write import write_csv
from storage.files import fingerprint
from storage.journal import Journal
from storage.sample import SAMPLE_HEADER
from storage.table import CSV_NAME, ChangeListener, Pending, TableConfig, TableLoadError, TableStore
from storage.table.fork import CAN_FORK
from tests.table_parts import bounded, read_journal

SAMPLE_COLUMNS = [
    {"name": "id", "type": "integer"},
    {"name": "user", "type": "text"},
    {"name": "broker", "type": "text"},
    {"name": "API key", "type": "text"},
    {"name": "API secret", "type": "text"},
    {"name": "pnl", "type": "number"},
    {"name": "margin", "type": "number"},
    {"name": "max_risk", "type": "integer"},
]

Snapshot = tuple[Any, ...]
Open = Callable[..., Awaitable[TableStore]]


def config(data_dir: Path, **settings: Any) -> TableConfig:
    # No flush by time: a test says when the CSV is written.
    return TableConfig(data_dir=data_dir, **{"flush_s": 3600.0, **settings})


def db_path(data_dir: Path) -> Path:
    return data_dir / "backend.db"


def snapshot(store: TableStore) -> Snapshot:
    return store.columns_wire(), store.page(0, store.total + 10), store.seq, store.committed_seq, store.total


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def open_store(data_dir: Path) -> AsyncIterator[Open]:
    opened: list[TableStore] = []

    async def make(listeners: Sequence[ChangeListener] = (), **settings: Any) -> TableStore:
        store = TableStore(config(data_dir, **settings), Journal(db_path(data_dir)), listeners)
        opened.append(store)  # closed at the end even if opening fails
        await store.open()
        return store

    yield make
    for store in opened:
        await bounded(store.close())


async def change(pending: Pending) -> CsvUpdate:
    await bounded(pending.durable())
    return pending.change.payload


def put_csv(data_dir: Path, content: bytes) -> None:
    """The CSV a server finds at its first start."""
    data_dir.mkdir()
    (data_dir / CSV_NAME).write_bytes(content)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def sample_backup(data_dir: Path) -> Path:
    (path,) = (data_dir / "backups").glob("*-seq0-rows100.csv")
    return path


def file_rows(path: Path, types: dict[str, ColumnType] | None = None) -> list[tuple[int, tuple[Any, ...]]]:
    loaded = load_csv(path, types)
    return list(zip(loaded.ids, loaded.values, strict=True))


def page_rows(store: TableStore) -> list[tuple[int, tuple[Any, ...]]]:
    return [(r["id"], tuple(r["values"].values())) for r in store.page(0, store.total)]


def types_of(store: TableStore) -> dict[str, ColumnType]:
    return {c.name: c.type for c in store.columns}


# ---- opening and closing ------------------------------------------------------------------


async def test_an_empty_directory_gets_the_sample_with_ids(open_store: Open, data_dir: Path) -> None:
    store = await open_store()
    assert store.columns_wire() == SAMPLE_COLUMNS
    assert store.total == 100
    page = store.page(0, 1000)
    assert [r["id"] for r in page] == list(range(1, 101))
    assert {r["version"] for r in page} == {1}
    assert (store.seq, store.committed_seq) == (1, 1)
    assert page[0]["values"]["user"] == "user_1"
    assert store.changes_since(1) == []
    assert store.changes_since(0) is None  # from before the table existed: a reset
    csv = data_dir / CSV_NAME
    assert read_header(csv) == ["id", *SAMPLE_HEADER]
    assert file_rows(csv, types_of(store)) == page_rows(store)
    # The sample as first written, before the id column was added, is kept.
    assert read_header(sample_backup(data_dir)) == SAMPLE_HEADER
    assert [(b.seq, b.rows) for b in store.list_backups()] == [(0, 100)]


async def test_close_then_open_gives_back_the_same_table(open_store: Open) -> None:
    store = await open_store()
    payloads = [
        await change(store.update(3, {"user": "renamed", "pnl": None}, 1, "u")),
        await change(store.delete(100, None, "u")),  # the highest id
        await change(store.add({"user": "new", "max_risk": 5}, "u")),
        await change(store.update(101, {"margin": 12.5}, None, "u")),
    ]
    before = snapshot(store)
    await store.close()

    again = await open_store()
    assert snapshot(again) == before
    assert again.changes_since(1) == payloads
    assert (await change(again.add({}, "u")))["row"]["id"] == 102  # 100 and 101 are never given again
    after = snapshot(again)
    await again.close()
    assert snapshot(await open_store()) == after


async def test_a_second_store_on_the_same_directory_is_refused(open_store: Open, data_dir: Path) -> None:
    first = await open_store()
    with pytest.raises(TableLoadError, match="in use"):
        await open_store()
    await change(first.add({"user": "still mine"}, "u"))  # the first goes on as before
    assert first.total == 101
    await first.close()
    assert (await open_store()).total == 101


@pytest.mark.parametrize(
    "text",
    [
        "name,qty\r\nanna,1\r\nben,2\r\ncy,3\r\n",
        'name,qty\n"a, b",1\n"say ""hi""",2\nc,3\n',  # quoted: ids are added by rewriting it whole
    ],
    ids=["plain", "quoted"],
)
@pytest.mark.parametrize("can_fork", [True, False], ids=["forked", "no-fork"])
async def test_a_csv_without_ids_gets_ids_1_to_n_and_the_original_is_kept(
    open_store: Open, data_dir: Path, text: str, can_fork: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if can_fork and not CAN_FORK:
        pytest.skip("no fork here")
    monkeypatch.setattr("storage.table.store.CAN_FORK", can_fork)
    original = text.encode()
    put_csv(data_dir, original)
    store = await open_store()
    assert [c["name"] for c in store.columns_wire()] == ["id", "name", "qty"]
    assert [r["id"] for r in store.page(0, 10)] == [1, 2, 3]
    assert [r["values"]["qty"] for r in store.page(0, 10)] == [1, 2, 3]
    assert {r["version"] for r in store.page(0, 10)} == {1}
    csv = data_dir / CSV_NAME
    assert read_header(csv) == ["id", "name", "qty"]
    assert file_rows(csv) == page_rows(store)
    (kept,) = store.list_backups()
    assert (kept.seq, kept.rows) == (0, 3)
    assert (data_dir / "backups" / kept.name).read_bytes() == original
    before = snapshot(store)
    await store.close()
    again = await open_store()  # now our own checkpoint: nothing is migrated again
    assert snapshot(again) == before
    assert len(again.list_backups()) == 1


def edit_by_hand(csv: Path, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
    """Rewrite the CSV in place, as a person with an editor would."""
    loaded = load_csv(csv)
    header = [c.name for c in loaded.columns]
    lines = [
        [str(i), *("" if v is None else str(v) for v in values)]
        for i, values in zip(loaded.ids, loaded.values, strict=True)
    ]
    write_csv(csv.with_suffix(".edit"), header, edit(lines))
    csv.write_bytes(csv.with_suffix(".edit").read_bytes())
    csv.with_suffix(".edit").unlink()


async def test_a_csv_edited_by_hand_while_closed_is_served_as_one_new_change(open_store: Open, data_dir: Path) -> None:
    store = await open_store()
    await change(store.update(3, {"user": "before the edit"}, None, "u"))
    await change(store.delete(4, None, "u"))
    seq = store.seq
    await store.close()

    def edit(lines: list[list[str]]) -> list[list[str]]:
        lines[0][1] = "edited"  # row 1
        lines[2][1] = "by hand"  # row 3, changed before the close too
        del lines[1]  # row 2
        return [*lines, ["500", "added by hand", "", "", "", "1.5", "", "9"]]

    edit_by_hand(data_dir / CSV_NAME, edit)
    backups = len(store.list_backups())
    again = await open_store()
    assert again.seq == again.committed_seq == seq + 1
    assert {r["version"] for r in again.page(0, 1000)} == {seq + 1}
    assert file_rows(data_dir / CSV_NAME, types_of(again)) == page_rows(again)
    ids = [r["id"] for r in again.page(0, 1000)]
    assert ids == [1, 3, *range(5, 101), 500]
    assert again.page(0, 2)[1]["values"]["user"] == "by hand"  # the edit wins over the journal
    assert again.page(0, 1000)[-1]["values"]["user"] == "added by hand"
    assert again.changes_since(seq) is None  # a reset: clients refetch
    assert again.changes_since(seq + 1) == []
    assert len(again.list_backups()) == backups  # a file with ids needs no rewriting, so no backup
    assert (await change(again.add({}, "u")))["row"]["id"] == 501
    adopted = snapshot(again)
    await again.close()
    assert snapshot(await open_store()) == adopted  # now our own checkpoint: not adopted again


async def test_blank_ids_in_a_hand_edit_never_reuse_an_id(open_store: Open, data_dir: Path) -> None:
    store = await open_store()
    added = await change(store.add({"user": "short-lived"}, "u"))
    await change(store.delete(added["row"]["id"], None, "u"))
    await store.close()
    edit_by_hand(data_dir / CSV_NAME, lambda lines: [*lines, ["", "added by hand", "", "", "", "", "", ""]])
    again = await open_store()
    assert again.page(again.total - 1, 1)[0]["id"] > added["row"]["id"]


async def test_an_unreadable_csv_stops_the_open(open_store: Open, data_dir: Path) -> None:
    put_csv(data_dir, b"id,a,a\n1,2,3\n")
    with pytest.raises(TableLoadError, match="duplicate"):
        await open_store()


async def test_every_integer_a_column_takes_loads_back(open_store: Open) -> None:
    store = await open_store()
    with pytest.raises(InvalidInput):  # past 64 bits: the CSV could not be loaded back
        await change(store.add({"max_risk": 2**64}, "u"))
    added = [await change(store.add({"max_risk": edge}, "u")) for edge in (2**63 - 1, -(2**63))]
    await store.close()
    again = await open_store()
    assert again.page(again.total - 2, 2) == [a["row"] for a in added]


# ---- a crash after the acks -----------------------------------------------------------------


async def crash_after_acks(data_dir: Path, expected: Path, mid_checkpoint: bool) -> None:
    """Acked changes before and after a checkpoint, then the process dies without closing;
    with `mid_checkpoint`, while the next checkpoint has renamed its file over the CSV but
    not yet told the journal."""
    journal = Journal(db_path(data_dir))
    store = TableStore(config(data_dir), journal)
    await store.open()
    await change(store.update(5, {"user": "before the checkpoint"}, None, "u"))
    await change(store.add({"user": "added before"}, "u"))
    await store.checkpoint()
    await change(store.update(6, {"pnl": 1.25}, None, "u"))
    await change(store.delete(7, None, "u"))
    await change(store.add({"user": "added after"}, "u"))
    await change(store.add({"user": "and another"}, "u"))
    write_json(expected, {"snapshot": snapshot(store), "changes": store.changes_since(1)})
    if mid_checkpoint:

        async def die(*args: Any, **kwargs: Any) -> None:
            os._exit(0)

        setattr(journal, "finish_checkpoint", die)  # noqa: B010 - a method of this one journal
        await store.checkpoint()
    os._exit(0)


def crash(data_dir: Path, expected: Path, mid_checkpoint: bool) -> dict[str, Any]:
    pid = os.fork()
    if pid == 0:
        try:
            asyncio.run(crash_after_acks(data_dir, expected, mid_checkpoint))
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result: dict[str, Any] = json.loads(expected.read_text())
    return result


def tuples(value: Any) -> Any:
    """JSON gives lists where the snapshot had tuples."""
    return json.loads(json.dumps(value))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the crashing process is forked")
@pytest.mark.parametrize("mid_checkpoint", [False, True], ids=["after-acks", "mid-checkpoint"])
def test_a_crash_loses_no_acked_change(data_dir: Path, tmp_path: Path, mid_checkpoint: bool) -> None:
    written = crash(data_dir, tmp_path / "expected.json", mid_checkpoint)

    async def reopen() -> None:
        meta = (await read_journal(db_path(data_dir))).meta
        # The crash came where it was meant to: after the rename, or with the CSV behind.
        assert (meta.get("pending_fp") == fingerprint(data_dir / CSV_NAME)) is mid_checkpoint
        store = TableStore(config(data_dir), Journal(db_path(data_dir)))
        await store.open()
        try:
            assert tuples(snapshot(store)) == written["snapshot"]
            assert store.changes_since(1) == written["changes"]
            assert (await change(store.add({}, "u")))["row"]["id"] == 104
        finally:
            await store.close()

    asyncio.run(reopen())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the crashing process is forked")
def test_after_a_crash_mid_checkpoint_backups_are_named_with_their_rows(data_dir: Path, tmp_path: Path) -> None:
    crash(data_dir, tmp_path / "expected.json", mid_checkpoint=True)

    async def reopen() -> None:
        store = TableStore(config(data_dir, backup_interval_s=0), Journal(db_path(data_dir)))
        await store.open()
        try:
            await change(store.add({}, "u"))
            await store.checkpoint()  # keeps the CSV the crashed checkpoint wrote
            for backup in store.list_backups():
                assert len(load_csv(data_dir / "backups" / backup.name)) == backup.rows, backup.name
        finally:
            await store.close()

    asyncio.run(reopen())


# ---- restore ------------------------------------------------------------------------------


async def test_restore_brings_a_backup_back_as_one_reset(open_store: Open, data_dir: Path) -> None:
    heard: list[list[CsvUpdate]] = []
    store = await open_store([heard.append])
    sample_page = store.page(0, 1000)
    await change(store.update(1, {"user": "changed"}, None, "u"))
    added = await change(store.add({"user": "added"}, "u"))
    await change(store.delete(2, None, "u"))
    await store.checkpoint()
    replaced = page_rows(store)
    seq = store.seq
    (original,) = [b for b in store.list_backups() if b.seq == 0]
    heard.clear()

    result = await store.restore(original.name, "alice")
    assert result == {"ok": True, "seq": seq + 1, "total": 100}
    assert store.seq == store.committed_seq == seq + 1
    page = store.page(0, 1000)
    assert [(r["id"], r["values"]) for r in page] == [(r["id"], r["values"]) for r in sample_page]
    assert {r["version"] for r in page} == {seq + 1}
    assert len(heard) == 1
    assert heard[0] == [{"op": "reset", "seq": seq + 1, "by": "alice", "ts": heard[0][0]["ts"]}]
    assert store.changes_since(seq) is None
    assert store.changes_since(seq + 1) == []
    # The table it replaced is kept, and ids it had are not given again.
    newest = store.list_backups()[0]
    assert file_rows(data_dir / "backups" / newest.name, types_of(store)) == replaced
    assert (await change(store.add({}, "u")))["row"]["id"] == added["row"]["id"] + 1
    restored = snapshot(store)
    await store.close()
    assert snapshot(await open_store()) == restored


async def test_restore_without_a_name_takes_the_newest(open_store: Open) -> None:
    store = await open_store(backup_interval_s=0)
    await change(store.update(1, {"user": "first"}, None, "u"))
    await store.checkpoint()  # keeps the sample with ids
    await change(store.update(1, {"user": "second"}, None, "u"))
    await store.checkpoint()  # keeps the table with "first"
    newest = store.list_backups()[0]
    assert newest.seq == 2
    result = await store.restore(None, "u")
    assert result["total"] == 100
    assert store.page(0, 1)[0]["values"]["user"] == "first"


async def test_restore_of_a_missing_backup_changes_nothing(open_store: Open) -> None:
    heard: list[list[CsvUpdate]] = []
    store = await open_store([heard.append])
    await change(store.add({"user": "x"}, "u"))
    before, backups = snapshot(store), store.list_backups()
    heard.clear()
    with pytest.raises(NotFound):
        await store.restore("backend_table-20000101T000000.000Z-seq1-rows1.csv", "u")
    assert snapshot(store) == before
    assert store.list_backups() == backups
    assert heard == []


async def test_restore_keeps_the_table_it_replaces_when_the_csv_is_behind(open_store: Open, data_dir: Path) -> None:
    store = await open_store()
    await change(store.add({"user": "only in the journal"}, "u"))
    replaced = page_rows(store)
    (original,) = store.list_backups()
    await store.restore(original.name, "u")
    newest = store.list_backups()[0]
    assert file_rows(data_dir / "backups" / newest.name, types_of(store)) == replaced


# ---- closing --------------------------------------------------------------------------------


async def test_no_write_once_closing_has_begun(open_store: Open) -> None:
    store = await open_store()
    queued = store.add({"user": "just in time"}, "u")
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)  # close() has begun
    writes: list[Callable[[], Pending]] = [
        lambda: store.add({"user": "too late"}, "u"),
        lambda: store.update(1, {"user": "too late"}, None, "u"),
        lambda: store.delete(1, None, "u"),
    ]
    refused = []
    for write in writes:
        try:
            write()
        except Unavailable:
            refused.append(True)
        else:
            refused.append(False)
    await bounded(closing)  # before judging: a failed check must not leave the close running
    assert refused == [True, True, True]
    assert queued.future.done()
    assert queued.future.exception() is None
    again = await open_store()
    assert again.total == 101
    assert again.page(100, 1)[0]["values"]["user"] == "just in time"
    assert again.page(0, 1)[0]["values"]["user"] == "user_1"
