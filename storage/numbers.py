"""The random-number stream: a stored random walk and OHLC candles built from it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import cast

from protocol.broadcasts import RandomNumber
from protocol.results import NumberPoint, Ohlc
from protocol.values import OHLC_INTERVALS, OhlcInterval
from storage.db import Database, storage_failures_unavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS random_numbers (
    seq INTEGER PRIMARY KEY, value REAL NOT NULL, ts INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS random_numbers_ts ON random_numbers (ts);
"""
START_VALUE = 50.0
MAX_STEP = 5.0


@dataclass(frozen=True)
class Tick:
    seq: int
    value: float
    ts: int  # epoch ms

    def wire(self) -> RandomNumber:
        return {"value": self.value, "ts": self.ts, "seq": self.seq}


@dataclass(frozen=True)
class Candle:
    interval: str
    time: int  # open time, epoch seconds
    open: float
    high: float
    low: float
    close: float
    ticks: int
    closed: bool = False

    def wire(self) -> Ohlc:
        return {
            "interval": cast(OhlcInterval, self.interval),
            "time": self.time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "ticks": self.ticks,
            "closed": self.closed,
        }

    def with_tick(self, value: float) -> Candle:
        return replace(self, high=max(self.high, value), low=min(self.low, value), close=value, ticks=self.ticks + 1)


def bucket_start(ts_ms: int, interval: str) -> int:
    seconds = OHLC_INTERVALS[interval]
    return ts_ms // 1000 // seconds * seconds


class StreamService:
    def __init__(self, db: Database, retention_s: float, rng: random.Random | None = None) -> None:
        self._db = db
        self._retention_ms = int(retention_s * 1000)
        self._rng = rng or random.Random()
        self._last: Tick | None = None
        self._live: dict[str, Candle] = {}

    async def init(self) -> None:
        await self._db.script(_SCHEMA)
        row = await self._db.row("SELECT seq, value, ts FROM random_numbers ORDER BY seq DESC LIMIT 1")
        if row is not None:
            self._last = Tick(int(row[0]), float(row[1]), int(row[2]))
            for interval in OHLC_INTERVALS:
                start = bucket_start(self._last.ts, interval)
                candles = await self._aggregate(interval, start * 1000)
                if candles:
                    self._live[interval] = candles[-1]

    @storage_failures_unavailable
    async def draw(self) -> tuple[Tick, list[Candle]]:
        """The next step of the walk, stored, with the candle updates it causes (closes first)."""
        previous = self._last.value if self._last else START_VALUE
        value = round(min(100.0, max(0.0, previous + self._rng.uniform(-MAX_STEP, MAX_STEP))), 2)
        tick = Tick(seq=(self._last.seq if self._last else 0) + 1, value=value, ts=int(time.time() * 1000))
        await self._db.write(
            "INSERT INTO random_numbers (seq, value, ts) VALUES (?, ?, ?)", (tick.seq, tick.value, tick.ts)
        )
        self._last = tick
        return tick, self._advance(tick)

    def _advance(self, tick: Tick) -> list[Candle]:
        updates: list[Candle] = []
        for interval in OHLC_INTERVALS:
            start = bucket_start(tick.ts, interval)
            live = self._live.get(interval)
            if live is not None and live.time != start:
                updates.append(replace(live, closed=True))
                live = None
            live = (
                Candle(interval, start, tick.value, tick.value, tick.value, tick.value, 1)
                if live is None
                else live.with_tick(tick.value)
            )
            self._live[interval] = live
            updates.append(live)
        return updates

    @storage_failures_unavailable
    async def numbers(self, limit: int) -> list[NumberPoint]:
        rows = await self._db.rows("SELECT value, ts FROM random_numbers ORDER BY seq DESC LIMIT ?", (limit,))
        return [{"value": value, "ts": ts} for value, ts in reversed(rows)]

    @storage_failures_unavailable
    async def history(self, interval: str, count: int) -> list[Ohlc]:
        """The last `count` closed candles, rebuilt from the stored numbers."""
        if count == 0:
            return []
        seconds = OHLC_INTERVALS[interval]
        current = bucket_start(int(time.time() * 1000), interval)
        candles = await self._aggregate(interval, (current - count * seconds) * 1000)
        closed = [replace(c, closed=True).wire() for c in candles if c.time < current]
        return closed[-count:]

    async def _aggregate(self, interval: str, from_ms: int) -> list[Candle]:
        width_ms = OHLC_INTERVALS[interval] * 1000
        groups = await self._db.rows(
            "SELECT ts / ? AS bucket, MIN(value), MAX(value), COUNT(*), MIN(seq), MAX(seq)"
            " FROM random_numbers WHERE ts >= ? GROUP BY bucket ORDER BY bucket",
            (width_ms, from_ms),
        )
        if not groups:
            return []
        ends = sorted({g[4] for g in groups} | {g[5] for g in groups})
        values: dict[int, float] = {}
        for offset in range(0, len(ends), 500):
            part = ends[offset : offset + 500]
            found = await self._db.rows(
                f"SELECT seq, value FROM random_numbers WHERE seq IN ({','.join('?' * len(part))})", part
            )
            values.update({int(s): float(v) for s, v in found})
        return [
            Candle(interval, int(bucket) * width_ms // 1000, values[first], high, low, values[last], ticks)
            for bucket, low, high, ticks, first, last in groups
        ]

    @storage_failures_unavailable
    async def prune(self) -> None:
        """Drop numbers past retention, always keeping the newest so the walk and seq go on."""
        cutoff = int(time.time() * 1000) - self._retention_ms
        await self._db.write(
            "DELETE FROM random_numbers WHERE ts < ? AND seq < (SELECT MAX(seq) FROM random_numbers)", (cutoff,)
        )
