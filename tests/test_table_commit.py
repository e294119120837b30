"""`GroupCommit` against a real journal on a temp SQLite file: changes of one tick share one
append, nobody hears of a change before it is on disk, listeners hear in seq order, a failed
append takes back every change not yet durable, and `changes_since` answers only what it holds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path

import pytest

from protocol.errors import Unavailable
from protocol.results import CsvUpdate
from storage.journal import Journal
from storage.table.commit import ChangeListener, GroupCommit, Pending
from storage.table.rows import Rows
from tests.table_parts import BASE_SEQ, HeldAppend, bounded, loaded, make_rows, read_journal, state

MakeCommit = Callable[..., GroupCommit]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
async def journal(db: Path) -> AsyncIterator[Journal]:
    opened = Journal(db)
    await opened.open(history_keep=100)
    yield opened
    await opened.close()


@pytest.fixture
def rows() -> Rows:
    return make_rows()


@pytest.fixture
async def make_commit(journal: Journal, rows: Rows) -> AsyncIterator[MakeCommit]:
    started: list[GroupCommit] = []

    def make(
        listeners: Sequence[ChangeListener] = (),
        history_keep: int = 100,
        on_commit: Callable[[int, float], None] | None = None,
        history: Iterable[CsvUpdate] = (),
        floor: int = BASE_SEQ,
    ) -> GroupCommit:
        commit = GroupCommit(journal, rows, history_keep, listeners, on_commit)
        commit.start(rows.seq, history, floor)
        started.append(commit)
        return commit

    yield make
    for commit in started:
        await bounded(commit.stop())


async def turns(count: int = 10) -> None:
    """Let every task that can run, run."""
    for _ in range(count):
        await asyncio.sleep(0)


async def durable(pendings: Iterable[Pending]) -> None:
    await bounded(asyncio.gather(*(p.durable() for p in pendings)))


async def test_changes_of_one_tick_share_one_append(
    make_commit: MakeCommit, rows: Rows, journal: Journal, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    commit = make_commit()
    pendings = [
        commit.submit(rows.add({"name": "eve"}, "u")),
        commit.submit(rows.update(1, {"qty": 4}, None, "u")),
        commit.submit(rows.delete(2, None, "u")),
    ]
    await durable(pendings)
    assert [[r.seq for r in batch] for batch in appends.batches] == [[BASE_SEQ + 1, BASE_SEQ + 2, BASE_SEQ + 3]]
    assert [r.change for r in appends.batches[0]] == [p.change.payload for p in pendings]
    assert commit.committed_seq == BASE_SEQ + 3
    assert [c["seq"] for c in (await read_journal(db)).history] == [BASE_SEQ + 1, BASE_SEQ + 2, BASE_SEQ + 3]


async def test_nobody_hears_of_a_change_before_its_append_is_done(
    make_commit: MakeCommit, rows: Rows, journal: Journal, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    heard: list[list[CsvUpdate]] = []
    commit = make_commit([heard.append])
    appends.hold()
    pending = commit.submit(rows.add({"name": "eve"}, "u"))
    waiter = asyncio.create_task(pending.durable())
    settled = asyncio.create_task(commit.settle())
    await appends.entered.wait()
    await turns()
    assert not pending.future.done()
    assert not waiter.done()
    assert not settled.done()
    assert heard == []
    assert commit.committed_seq == BASE_SEQ
    assert commit.changes_since(BASE_SEQ) == []
    assert (await read_journal(db)).history == []
    appends.release.set()
    await bounded(waiter)
    await bounded(settled)
    assert heard == [[pending.change.payload]]
    assert [c["seq"] for c in (await read_journal(db)).history] == [BASE_SEQ + 1]


async def test_listeners_hear_every_batch_in_seq_order_and_one_that_fails_silences_none(
    make_commit: MakeCommit,
    rows: Rows,
    journal: Journal,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    first: list[list[CsvUpdate]] = []
    last: list[list[CsvUpdate]] = []
    observed: list[int] = []

    def failing(payloads: list[CsvUpdate]) -> None:
        first.append(payloads)
        raise RuntimeError("listener broke")

    def failing_observer(count: int, seconds: float) -> None:
        observed.append(count)
        raise RuntimeError("observer broke")

    commit = make_commit([failing, last.append], on_commit=failing_observer)
    appends.hold()
    a = commit.submit(rows.add({"name": "a"}, "u"))
    b = commit.submit(rows.add({"name": "b"}, "u"))
    await appends.entered.wait()
    c = commit.submit(rows.update(1, {"name": "c"}, None, "u"))  # queued behind the batch in flight
    d = commit.submit(rows.delete(4, None, "u"))
    appends.release.set()
    await durable([a, b, c, d])
    batches = [[a.change.payload, b.change.payload], [c.change.payload, d.change.payload]]
    assert first == batches
    assert last == batches
    assert [p["seq"] for batch in last for p in batch] == list(range(BASE_SEQ + 1, BASE_SEQ + 5))
    assert observed == [2, 2]
    assert [len(batch) for batch in appends.batches] == [2, 2]
    assert caplog.text.count("change listener failed") == 2
    e = commit.submit(rows.add({"name": "e"}, "u"))  # the failures stopped nothing
    await bounded(e.durable())
    assert last[-1] == [e.change.payload]


async def test_a_failed_append_takes_back_every_change_not_yet_durable(
    make_commit: MakeCommit, rows: Rows, journal: Journal, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    heard: list[list[CsvUpdate]] = []
    commit = make_commit([heard.append])
    kept = commit.submit(rows.update(4, {"qty": 70}, None, "u"))
    await bounded(kept.durable())
    before = state(rows)

    appends.hold()
    appends.fail = OSError("disk full")
    failed = [commit.submit(rows.add({"name": "eve"}, "u"))]
    await appends.entered.wait()
    failed.append(commit.submit(rows.update(1, {"name": "x"}, None, "u")))  # queued behind the failing batch
    failed.append(commit.submit(rows.delete(2, None, "u")))
    mark = commit.mark()
    assert state(rows) != before
    appends.release.set()
    for pending in failed:
        with pytest.raises(Unavailable):
            await bounded(pending.durable())
    assert state(rows) == before
    assert heard == [[kept.change.payload]]
    assert commit.committed_seq == BASE_SEQ + 1
    assert commit.changes_since(BASE_SEQ) == [kept.change.payload]
    assert [c["seq"] for c in (await read_journal(db)).history] == [BASE_SEQ + 1]
    # A read that may have seen the undone changes is refused; one made after them is not.
    with pytest.raises(Unavailable):
        await bounded(commit.settle(mark))
    await bounded(commit.settle())

    # The writer goes on: the next change takes the seq and id the undone ones had.
    appends.fail = None
    again = commit.submit(rows.add({"name": "fay"}, "u"))
    await bounded(again.durable())
    assert (again.change.seq, again.change.row_id) == (BASE_SEQ + 2, 5)
    assert [c["seq"] for c in (await read_journal(db)).history] == [BASE_SEQ + 1, BASE_SEQ + 2]


async def test_settle_waits_only_for_what_was_applied_up_to_the_mark(
    make_commit: MakeCommit, rows: Rows, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    commit = make_commit()
    early = commit.mark()
    appends.hold()
    pending = commit.submit(rows.add({}, "u"))
    await bounded(commit.settle(early))  # the held change came after this mark
    settled = asyncio.create_task(commit.settle(commit.mark()))
    await appends.entered.wait()
    await turns()
    assert not settled.done()
    appends.release.set()
    await bounded(settled)
    assert pending.future.done()


async def test_stop_commits_what_is_queued(make_commit: MakeCommit, rows: Rows, db: Path) -> None:
    commit = make_commit()
    pendings = [commit.submit(rows.add({"name": str(n)}, "u")) for n in range(3)]
    await bounded(commit.stop())
    assert all(p.future.done() and p.future.exception() is None for p in pendings)
    assert [c["seq"] for c in (await read_journal(db)).history] == [BASE_SEQ + 1, BASE_SEQ + 2, BASE_SEQ + 3]


# ---- changes_since ----------------------------------------------------------------------


async def commit_changes(commit: GroupCommit, rows: Rows, count: int) -> list[CsvUpdate]:
    pendings = [commit.submit(rows.add({"name": f"n{n}"}, "u")) for n in range(count)]
    await durable(pendings)
    return [p.change.payload for p in pendings]


async def test_changes_since_answers_within_what_it_holds(make_commit: MakeCommit, rows: Rows) -> None:
    commit = make_commit()
    payloads = await commit_changes(commit, rows, 5)
    assert commit.changes_since(BASE_SEQ) == payloads
    assert commit.changes_since(BASE_SEQ + 3) == payloads[3:]
    assert commit.changes_since(BASE_SEQ + 5) == []
    assert commit.changes_since(BASE_SEQ - 1) is None  # before the floor the commit started from
    assert commit.changes_since(BASE_SEQ + 6) is None  # beyond what is committed


async def test_changes_since_beyond_the_history_kept_is_none(make_commit: MakeCommit, rows: Rows) -> None:
    commit = make_commit(history_keep=3)
    payloads = await commit_changes(commit, rows, 5)
    assert commit.changes_since(BASE_SEQ + 2) == payloads[2:]
    assert commit.changes_since(BASE_SEQ + 1) is None
    assert commit.changes_since(BASE_SEQ) is None


async def test_changes_since_leaves_out_changes_not_yet_durable(
    make_commit: MakeCommit, rows: Rows, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    appends = HeldAppend(journal, monkeypatch)
    commit = make_commit()
    appends.hold()
    pending = commit.submit(rows.add({}, "u"))
    await appends.entered.wait()
    assert commit.changes_since(BASE_SEQ) == []
    assert commit.changes_since(BASE_SEQ + 1) is None
    appends.release.set()
    await bounded(pending.durable())
    assert commit.changes_since(BASE_SEQ) == [pending.change.payload]


async def test_changes_since_starts_from_the_history_it_is_given(
    make_commit: MakeCommit, rows: Rows, journal: Journal
) -> None:
    # After a restart the journal hands back its newest changes, above the last reset.
    other = make_rows()
    history = [other.add({"name": str(n)}, "u").payload for n in range(3)]
    rows.install(loaded({1: ("a", 1, 1.0)}, 1), BASE_SEQ + 3, 0)
    commit = make_commit(history=history, floor=BASE_SEQ - 2)
    assert commit.changes_since(BASE_SEQ) == history
    assert commit.changes_since(BASE_SEQ + 2) == history[2:]
    assert commit.changes_since(BASE_SEQ - 1) is None  # the history does not reach back that far


async def test_after_a_reset_nothing_below_it_is_answered(make_commit: MakeCommit, rows: Rows) -> None:
    commit = make_commit()
    await commit_changes(commit, rows, 3)
    reset_seq = rows.seq + 1
    rows.install(loaded({1: ("a", 1, 1.0)}, reset_seq), reset_seq, rows.max_id)  # a restore, say
    commit.reset(reset_seq)
    assert commit.committed_seq == reset_seq
    assert commit.changes_since(reset_seq) == []
    assert commit.changes_since(reset_seq - 1) is None
    assert commit.changes_since(BASE_SEQ) is None
    payloads = await commit_changes(commit, rows, 2)
    assert [p["seq"] for p in payloads] == [reset_seq + 1, reset_seq + 2]
    assert commit.changes_since(reset_seq) == payloads
    assert commit.changes_since(reset_seq - 1) is None


async def test_a_failing_listener_is_logged(make_commit: MakeCommit, caplog: pytest.LogCaptureFixture) -> None:
    def failing(payloads: list[CsvUpdate]) -> None:
        raise RuntimeError("broken")

    heard: list[list[CsvUpdate]] = []
    commit = make_commit([failing, heard.append])
    reset: CsvUpdate = {"op": "reset", "seq": 9, "by": "u", "ts": 0}
    with caplog.at_level(logging.ERROR, logger="tablecast.table"):
        commit.publish([reset])
    assert heard == [[reset]]
    assert "change listener failed" in caplog.text
