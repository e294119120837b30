"""`Backups` on real files in a temp directory, with a clock the test moves: names that say
what a backup holds, newest first, at most one per interval, the newest few kept, found by
name, and a copy (never a half-written one) where hard links fail."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocol.errors import NotFound
from storage.files import replace_file
from storage.table.backups import BackupInfo, Backups, backup_name
from tests.table_parts import Clock

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
T0_MS = 1714979289123


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "backend_table.csv"
    path.write_bytes(b"id,a\r\n1,x\r\n")
    return path


def make_backups(tmp_path: Path, clock: Clock, keep: int = 10, interval_s: float = 60) -> Backups:
    directory = tmp_path / "backups"
    directory.mkdir(exist_ok=True)
    return Backups(directory, keep, interval_s, clock=clock)


def test_a_name_says_when_it_was_taken_and_what_it_holds(tmp_path: Path, clock: Clock, source: Path) -> None:
    name = backup_name(T0, 12, 34)
    assert name == "backend_table-20240506T070809.123Z-seq12-rows34.csv"
    backups = make_backups(tmp_path, clock)
    backups.keep(source, 12, 34)
    listed = backups.list()
    assert listed == [BackupInfo(name, created_at=T0_MS, rows=34, bytes=source.stat().st_size, seq=12)]
    assert listed[0].wire() == {"name": name, "created_at": T0_MS, "rows": 34, "bytes": source.stat().st_size}
    assert backups.path(listed[0]).read_bytes() == source.read_bytes()


def test_listed_newest_first_and_other_files_ignored(tmp_path: Path, clock: Clock, source: Path) -> None:
    backups = make_backups(tmp_path, clock)
    for offset_s, seq in [(10, 3), (0, 1), (5, 2)]:  # taken out of time order
        clock.now = T0
        clock.advance(offset_s)
        backups.keep(source, seq, 1)
    for stray in ["backend_table-nope.csv", "notes.txt", "backend_table-20240506T070809.123Z-seq1-rows1.tmp"]:
        (backups.directory / stray).write_text("x")
    listed = backups.list()
    assert [b.seq for b in listed] == [3, 2, 1]
    assert [b.created_at for b in listed] == [T0_MS + 10_000, T0_MS + 5_000, T0_MS]


def test_keep_if_due_keeps_at_most_one_per_interval(tmp_path: Path, clock: Clock, source: Path) -> None:
    clock.now = T0.replace(microsecond=0)  # whole milliseconds, so the boundary is exact
    backups = make_backups(tmp_path, clock, interval_s=60)
    backups.keep_if_due(source, 1, 1)  # none yet: due
    assert len(backups.list()) == 1
    clock.advance(59.999)
    backups.keep_if_due(source, 2, 1)
    assert [b.seq for b in backups.list()] == [1]
    clock.advance(0.001)
    backups.keep_if_due(source, 3, 1)
    assert [b.seq for b in backups.list()] == [3, 1]
    backups.keep(source, 4, 1)  # `keep` itself is never held back
    assert [b.seq for b in backups.list()] == [4, 3, 1]


def test_only_the_newest_are_kept(tmp_path: Path, clock: Clock, source: Path) -> None:
    backups = make_backups(tmp_path, clock, keep=3)
    for seq in range(1, 6):
        clock.advance(1)
        backups.keep(source, seq, 1)
    assert [b.seq for b in backups.list()] == [5, 4, 3]
    assert sorted(p.name for p in backups.directory.iterdir()) == sorted(b.name for b in backups.list())


def test_two_backups_in_one_millisecond_get_two_names(tmp_path: Path, clock: Clock, source: Path) -> None:
    backups = make_backups(tmp_path, clock)
    backups.keep(source, 7, 1)
    backups.keep(source, 7, 1)
    listed = backups.list()
    assert len(listed) == 2
    assert [b.created_at for b in listed] == [T0_MS + 1, T0_MS]


def keep_twice(backups: Backups, source: Path) -> None:
    backups.keep(source, 7, 1)
    backups.keep(source, 7, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the child that may hang is forked")
def test_two_backups_in_the_last_millisecond_of_a_second_get_two_names(tmp_path: Path, source: Path) -> None:
    backups = make_backups(tmp_path, Clock(T0.replace(microsecond=999_500)))
    # In a child, so that a loop that never ends cannot hold up the tests.
    child = multiprocessing.get_context("fork").Process(target=keep_twice, args=(backups, source))
    child.start()
    child.join(1.5)
    hung = child.is_alive()
    if hung:
        child.kill()
        child.join()
    assert not hung, "keep() did not return"
    assert child.exitcode == 0
    assert len(backups.list()) == 2


def test_find_by_name_or_the_newest(tmp_path: Path, clock: Clock, source: Path) -> None:
    backups = make_backups(tmp_path, clock)
    with pytest.raises(NotFound) as none_yet:
        backups.find(None)
    assert none_yet.value.details == {"name": None}
    backups.keep(source, 1, 1)
    clock.advance(1)
    backups.keep(source, 2, 1)
    older, newer = backups.list()[1], backups.list()[0]
    assert backups.find(None) == newer
    assert backups.find(older.name) == older
    for name in ["nope", "../backend_table.csv", older.name.removesuffix(".csv")]:
        with pytest.raises(NotFound) as missing:
            backups.find(name)
        assert missing.value.details == {"name": name}


def test_a_backup_is_a_hard_link_that_outlives_the_replaced_file(tmp_path: Path, clock: Clock, source: Path) -> None:
    backups = make_backups(tmp_path, clock)
    old = source.read_bytes()
    backups.keep(source, 1, 1)
    kept = backups.path(backups.find(None))
    assert kept.stat().st_ino == source.stat().st_ino
    tmp = source.with_name("next.tmp")
    tmp.write_bytes(b"id,a\r\n1,y\r\n2,z\r\n")
    replace_file(tmp, source)  # how the CSV is replaced
    assert kept.read_bytes() == old


def test_without_hard_links_a_whole_copy_is_kept(
    tmp_path: Path, clock: Clock, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object, *args: object, **kwargs: object) -> None:
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    backups = make_backups(tmp_path, clock)
    backups.keep(source, 1, 1)
    kept = backups.path(backups.find(None))
    assert kept.read_bytes() == source.read_bytes()
    assert kept.stat().st_ino != source.stat().st_ino
    assert [p.name for p in backups.directory.iterdir()] == [kept.name]  # no temp file left


def test_a_missing_source_keeps_nothing(tmp_path: Path, clock: Clock) -> None:
    backups = make_backups(tmp_path, clock)
    backups.keep(tmp_path / "absent.csv", 1, 1)
    backups.keep_if_due(tmp_path / "absent.csv", 1, 1)
    assert backups.list() == []
