"""The wire's basic values: cells, column types, times, row ids, candle intervals, backup names."""

from __future__ import annotations

import re
from typing import Literal

# A cell on the wire: a string, a number or null (an empty cell).
Value = str | int | float | None
ColumnType = Literal["integer", "number", "text"]
EpochMs = int
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer a JavaScript client can represent exactly
MAX_ROW_ID = MAX_SAFE_INTEGER
# What an `integer` column holds: what every CSV reader and database takes as an integer.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# What a text cell may not hold. Lone surrogates are not Unicode text (UTF-8 cannot encode
# them, so the CSV could not be written). Control characters other than TAB, LF and CR are
# refused too: NUL and the rest round-trip through our CSV, but spreadsheets, terminals and C
# string APIs that read the file or the download mangle or act on them.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a text cell, or None when it can."""
    found = UNSAFE_TEXT.search(text)
    if found is None:
        return None
    char = found.group()
    kind = "a lone surrogate" if LONE_SURROGATE.match(char) else "a control character"
    return f"{kind} (U+{ord(char):04X}) at position {found.start()}"


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
