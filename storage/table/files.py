"""The table's files in DATA_DIR: the CSV, its backups directory, the sidecar lock that
keeps two servers off one directory, and temp names of our own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import portalocker

CSV_NAME = "backend_table.csv"


class TableLoadError(Exception):
    """The table cannot be opened; the server must not start."""


class TableFiles:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.csv = data_dir / CSV_NAME
        self.backups = data_dir / "backups"
        self._lock: IO[str] | None = None
        self._temps = 0

    def claim(self) -> None:
        """Create the directories and take the lock; `TableLoadError` if another server holds it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.backups.mkdir(exist_ok=True)
        # The sidecar is never replaced, so the lock survives every CSV rename.
        lock = (self.data_dir / (CSV_NAME + ".lock")).open("a")
        try:
            portalocker.lock(lock, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.exceptions.LockException:
            lock.close()
            raise TableLoadError(f"{self.data_dir} is in use by another server") from None
        self._lock = lock
        for stale in self.data_dir.glob(CSV_NAME + ".*.tmp"):
            stale.unlink()  # left by a crash; never the CSV itself

    def release(self) -> None:
        if self._lock is not None:
            portalocker.unlock(self._lock)
            self._lock.close()
            self._lock = None

    def temp(self) -> Path:
        """A temp name of our own: an export child orphaned by a crash never shares it."""
        self._temps += 1
        return self.csv.with_name(f"{CSV_NAME}.{os.getpid()}-{self._temps}.tmp")
