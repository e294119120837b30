"""The server under bench/crash.py: `python run.py` with short checkpoint and backup intervals,
so that its kills (`Server.kill`, SIGKILL) land in the middle of them."""

from __future__ import annotations

from pathlib import Path

from bench.harness import Server, tablecast_server

SETTINGS = {
    "CSV_FLUSH_S": "0.1",  # a checkpoint every ~0.1-0.4 s of the storm: kills land mid-export too
    "BACKUP_INTERVAL_S": "1",  # backups (hard links before the rename) happen during storms too
    "EDIT_COOLDOWN_S": "0.5",
    "LOCK_SWEEP_S": "0.2",
    "AUTO_REGISTER": "true",
    "RATE_LIMIT": "0",
    "LOG_LEVEL": "WARNING",
}


def crash_server(data_dir: Path, log_path: Path) -> Server:
    """The server of one crash run (not started yet)."""
    return tablecast_server(data_dir, log_path, SETTINGS)
