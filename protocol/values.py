"""The wire's basic values: cells, column types, times, row ids, candle intervals, backup names."""

from __future__ import annotations

from typing import Literal

# A cell on the wire: a string, a number or null (an empty cell).
Value = str | int | float | None
ColumnType = Literal["integer", "number", "text"]
EpochMs = int
MAX_ROW_ID = 2**53 - 1  # the largest integer a JavaScript client can represent exactly
OHLC_INTERVALS: dict[str, int] = {
    "1s": 1,
    "5s": 5,
    "15s": 15,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
}
OhlcInterval = Literal["1s", "5s", "15s", "1m", "5m", "15m", "1h"]
# A backup's file name: when it was taken (UTC, to the millisecond), the table seq and the rows
# it holds. Anything else (a path, another file of DATA_DIR) can never name a backup.
BACKUP_NAME_PATTERN = r"^backend_table-(\d{8}T\d{6}\.\d{3})Z-seq(\d+)-rows(\d+)\.csv$"
