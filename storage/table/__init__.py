"""The table: rows in memory (`rows`), every change journaled before its ack (`commit`), the
CSV a checkpoint written from a forked snapshot (`checkpoint`, `fork`), backups of it
(`backups`), its files (`files`), and the store that puts them together (`store`)."""

from storage.table.backups import BackupInfo
from storage.table.commit import ChangeListener, Pending
from storage.table.files import CSV_NAME, TableLoadError
from storage.table.store import TableConfig, TableStore

__all__ = ["CSV_NAME", "BackupInfo", "ChangeListener", "Pending", "TableConfig", "TableLoadError", "TableStore"]
