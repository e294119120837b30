"""The built-in sample table, written when DATA_DIR has no CSV yet."""

from __future__ import annotations

import random
from pathlib import Path

from storage.csv.write import write_csv
from storage.files import replace_file

SAMPLE_HEADER = ["user", "broker", "API key", "API secret", "pnl", "margin", "max_risk"]
_BROKERS = ["Zerodha", "Upstox", "AngelOne", "Fyers", "Dhan"]


def write_sample(path: Path, rows: int = 100) -> None:
    """Deterministic rows in the original header (no id column: the loader adds it)."""
    rng = random.Random(7)
    tmp = path.with_name(path.name + ".sample")
    write_csv(
        tmp,
        SAMPLE_HEADER,
        (
            [
                f"user_{n}",
                _BROKERS[n % len(_BROKERS)],
                f"key_{rng.getrandbits(40):010x}",
                f"secret_{rng.getrandbits(64):016x}",
                round(rng.uniform(-5000, 5000), 2),
                round(rng.uniform(1000, 100000), 2),
                rng.randint(1, 100),
            ]
            for n in range(1, rows + 1)
        ),
    )
    replace_file(tmp, path)
