"""Backups of the CSV in `backups/`: the version about to be replaced, kept as a hard link
(the rename that replaces the CSV leaves a link intact), at most once per interval, the
newest few kept. A backup's name says when it was taken and what it holds: it is written here,
to the format `protocol.values.BACKUP_NAME_PATTERN` that restore requests are checked against."""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from protocol.errors import NotFound
from protocol.results import Backup
from protocol.values import BACKUP_NAME_PATTERN
from storage.files import fsync_dir

log = logging.getLogger("tablecast.table")

_STAMP = "%Y%m%dT%H%M%S"
_NAME = re.compile(BACKUP_NAME_PATTERN)


def backup_name(taken: datetime, seq: int, rows: int) -> str:
    return f"backend_table-{taken:{_STAMP}}.{taken.microsecond // 1000:03d}Z-seq{seq}-rows{rows}.csv"


@dataclass(frozen=True)
class BackupInfo:
    name: str
    created_at: int  # epoch ms
    rows: int
    bytes: int
    seq: int

    def wire(self) -> Backup:
        return {"name": self.name, "created_at": self.created_at, "rows": self.rows, "bytes": self.bytes}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Backups:
    def __init__(self, directory: Path, keep: int, interval_s: float, clock: Callable[[], datetime] = _utc_now) -> None:
        self.directory = directory
        self._keep = keep
        self._interval_ms = interval_s * 1000
        self._clock = clock

    def list(self) -> list[BackupInfo]:
        """Every backup, newest first."""
        found: list[BackupInfo] = []
        for path in self.directory.glob("backend_table-*.csv"):
            match = _NAME.match(path.name)
            if not match:
                continue
            taken = datetime.strptime(match.group(1), f"{_STAMP}.%f").replace(tzinfo=UTC)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            found.append(BackupInfo(path.name, int(taken.timestamp() * 1000), int(match[3]), size, int(match[2])))
        found.sort(key=lambda b: (b.created_at, b.name), reverse=True)
        return found

    def find(self, name: str | None) -> BackupInfo:
        """The backup called `name`, or the newest; `NotFound` if there is none."""
        chosen = next((b for b in self.list() if name is None or b.name == name), None)
        if chosen is None:
            raise NotFound(f"no backup named {name!r}" if name else "there are no backups", name=name)
        return chosen

    def path(self, backup: BackupInfo) -> Path:
        return self.directory / backup.name

    def keep_if_due(self, source: Path, seq: int, rows: int) -> None:
        """Keep `source` unless a backup was taken within the interval."""
        newest = self.list()
        now = self._clock().timestamp() * 1000
        if not newest or now - newest[0].created_at >= self._interval_ms:
            self.keep(source, seq, rows)

    def keep(self, source: Path, seq: int, rows: int) -> None:
        """Keep `source` as it is now (it holds the table at `seq`, `rows` rows). `OSError`
        if the backup cannot be made durable: then none is left behind under that name, so a
        later attempt makes and syncs a new one rather than trusting a second fsync of it."""
        if not source.exists():
            return
        target = self._free_name(seq, rows)
        try:
            os.link(source, target)
        except OSError:  # a file system without hard links: a copy, made durable first
            self._copy(source, target)
        try:
            fsync_dir(self.directory)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        for stale in self.list()[self._keep :]:
            self.path(stale).unlink(missing_ok=True)
        log.info("backup kept", extra={"backup": target.name, "rows": rows})

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        tmp = target.with_suffix(".tmp")
        try:
            shutil.copyfile(source, tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    def _free_name(self, seq: int, rows: int) -> Path:
        taken = self._clock()
        while (target := self.directory / backup_name(taken, seq, rows)).exists():
            taken += timedelta(milliseconds=1)  # names hold milliseconds: the next free one
        return target
