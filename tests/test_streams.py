"""The random-number and OHLC streams (PROTOCOL.md sections 6 and 7), end to end."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import Client, ServerProcess, login, unique_user

Connect = Callable[..., Awaitable[Client]]
Data = dict[str, Any]

INTERVALS: dict[str, int] = {"1s": 1, "5s": 5, "15s": 15, "1m": 60, "5m": 300, "15m": 900, "1h": 3600}
CANDLE_KEYS = {"interval", "time", "open", "high", "low", "close", "ticks", "closed"}
BAR_KEYS = {"time", "open", "high", "low", "close"}
PRICE_KEYS = ("open", "high", "low", "close")
START_VALUE = 50.0
MAX_STEP = 5.0
EPS = 1e-9
DRAW_S = 0.2


def now_ms() -> int:
    return int(time.time() * 1000)


async def user(server: ServerProcess, connect: Connect) -> Client:
    return await connect(server.url, await login(server.url))


def assert_error(ack: Data, code: str, field: str | None = None) -> None:
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code, ack
    assert isinstance(ack["error"]["message"], str), ack
    if field is not None:
        assert ack["error"].get("field") == field, ack


def assert_value(value: Any) -> None:
    assert isinstance(value, int | float), value
    assert not isinstance(value, bool), value
    assert 0 <= value <= 100, value
    assert round(value, 2) == value, f"{value} has more than two decimals"


def assert_walk(values: list[float]) -> None:
    for before, after in itertools.pairwise(values):
        assert abs(after - before) <= MAX_STEP + EPS, f"step {before} -> {after} exceeds {MAX_STEP}"


def assert_draws(draws: list[Data], since_ms: int) -> None:
    """Well-formed, consecutive draws of the walk, stamped between `since_ms` and now."""
    assert draws
    for draw in draws:
        assert set(draw) == {"value", "ts", "seq"}, draw
        assert_value(draw["value"])
        assert isinstance(draw["seq"], int), draw
        assert isinstance(draw["ts"], int), draw
        assert since_ms - 2000 <= draw["ts"] <= now_ms() + 1000, draw
    assert [d["seq"] for d in draws] == list(range(draws[0]["seq"], draws[0]["seq"] + len(draws)))
    assert [d["ts"] for d in draws] == sorted(d["ts"] for d in draws)
    assert_walk([d["value"] for d in draws])


async def more_draws(client: Client, count: int, timeout: float = 10) -> list[Data]:
    """Wait for `count` random_number events after the ones already received."""
    start = len(client.of("random_number"))
    await client.wait_for("random_number", lambda _d: len(client.of("random_number")) >= start + count, timeout)
    return list(client.of("random_number")[start : start + count])


def candles_of(client: Client, interval: str, closed: bool | None = None) -> list[Data]:
    return [
        c for c in client.of("ohlc") if c.get("interval") == interval and (closed is None or c.get("closed") is closed)
    ]


def at_time(start: int) -> Callable[[Data], bool]:
    return lambda data: bool(data["time"] == start)


def bucket(ts_ms: int, interval: str) -> int:
    seconds = INTERVALS[interval]
    return ts_ms // 1000 // seconds * seconds


def assert_candle(candle: Data, interval: str) -> None:
    assert set(candle) == CANDLE_KEYS, candle
    assert candle["interval"] == interval, candle
    assert isinstance(candle["time"], int), candle
    assert candle["time"] % INTERVALS[interval] == 0, candle
    assert candle["time"] <= now_ms() // 1000, candle
    for key in PRICE_KEYS:
        assert_value(candle[key])
    assert candle["low"] <= min(candle["open"], candle["close"]), candle
    assert max(candle["open"], candle["close"]) <= candle["high"], candle
    assert isinstance(candle["ticks"], int), candle
    assert candle["ticks"] >= 1, candle
    assert isinstance(candle["closed"], bool), candle


def assert_history(candles: Any, interval: str, history: int) -> None:
    """The ack of an OHLC subscribe: at most `history` closed candles, oldest first, all in the past."""
    assert isinstance(candles, list), candles
    assert len(candles) <= history
    for candle in candles:
        assert_candle(candle, interval)
        assert candle["closed"] is True, candle
    times = [c["time"] for c in candles]
    assert times == sorted(set(times)), times
    current = bucket(now_ms(), interval)
    assert all(t < current for t in times), (times, current)


def assert_updates_follow_draws(client: Client, interval: str) -> None:
    """Each open-candle update carries the draw just received: its value as close, one more tick."""
    draw: Data | None = None
    previous: Data | None = None
    for event, data in client.events:
        if event == "random_number":
            draw = data
        elif event == "ohlc" and data["interval"] == interval and not data["closed"]:
            assert draw is not None, data
            assert data["time"] == bucket(draw["ts"], interval), (data, draw)
            assert data["close"] == draw["value"], (data, draw)
            if previous is not None and previous["time"] == data["time"]:
                assert data["ticks"] == previous["ticks"] + 1, (previous, data)
                assert data["open"] == previous["open"], (previous, data)
                assert data["high"] == max(previous["high"], draw["value"]), (previous, data)
                assert data["low"] == min(previous["low"], draw["value"]), (previous, data)
            previous = data


def values_in(draws: list[Data], interval: str, start: int) -> list[float]:
    return [d["value"] for d in draws if bucket(d["ts"], interval) == start]


def assert_candle_matches(candle: Data, values: list[float]) -> None:
    assert values, candle
    assert candle["open"] == values[0], (candle, values)
    assert candle["high"] == max(values), (candle, values)
    assert candle["low"] == min(values), (candle, values)
    assert candle["close"] == values[-1], (candle, values)
    assert candle["ticks"] == len(values), (candle, values)


def assert_candle_covers(candle: Data, values: list[float]) -> None:
    """A candle of which only the last `values` were seen: they must fit inside it and end it."""
    assert values, candle
    assert candle["close"] == values[-1], (candle, values)
    assert candle["high"] >= max(values), (candle, values)
    assert candle["low"] <= min(values), (candle, values)
    assert candle["ticks"] >= len(values), (candle, values)


# ---- random_number broadcasts ------------------------------------------------------------


async def test_random_numbers_reach_authenticated_sockets_only(server: ServerProcess, connect: Connect) -> None:
    started = now_ms()
    member = await user(server, connect)
    guest = await connect(server.url)

    draws = await more_draws(member, 8)
    assert_draws(draws, started)
    span = draws[-1]["ts"] - draws[0]["ts"]
    assert 7 * DRAW_S * 1000 * 0.5 <= span <= 7 * DRAW_S * 1000 * 4, f"8 draws spread over {span} ms"
    assert guest.events == []

    for event, payload in (
        ("subscribe", {"stream": "random_number"}),
        ("subscribe", {"stream": "ohlc", "interval": "1s"}),
        ("numbers", {"limit": 5}),
        ("ohlc-stream", {}),
    ):
        assert_error(await guest.ask(event, payload), "unauthorized")
    await more_draws(member, 3)
    assert guest.events == []

    ack = await guest.ask("login", {"username": unique_user(), "password": "secret-pw"})
    assert ack["ok"] is True, ack
    after_login = await more_draws(guest, 3)
    assert_draws(after_login, started)
    assert guest.of("ohlc") == []


async def test_all_sockets_get_the_same_draws(server: ServerProcess, connect: Connect) -> None:
    first, second = await user(server, connect), await user(server, connect)
    await more_draws(first, 1)
    await more_draws(second, 1)
    await more_draws(first, 5)
    await more_draws(second, 5)
    by_seq = {d["seq"]: d for d in first.of("random_number")}
    shared = [d for d in second.of("random_number") if d["seq"] in by_seq]
    assert len(shared) >= 5
    assert all(by_seq[d["seq"]] == d for d in shared)


async def test_draw_seq_and_walk_continue_across_restart(
    make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    proc = make_server({"RANDOM_INTERVAL_S": "0.05"})
    started = now_ms()
    before = await connect(proc.url, await login(proc.url))
    far = await before.wait_for("random_number", lambda d: abs(d["value"] - START_VALUE) >= 25, timeout=40)
    await before.disconnect()
    last_seen = before.of("random_number")[-1]
    assert last_seen["seq"] >= far["seq"]

    assert_draws(before.of("random_number"), started)
    assert await asyncio.to_thread(proc.stop) == 0
    stopped = now_ms()
    await asyncio.to_thread(proc.start)
    restarted = now_ms()

    after = await connect(proc.url, await login(proc.url))
    first_new = await after.wait_for("random_number", timeout=10)
    assert first_new["seq"] > last_seen["seq"]
    assert first_new["ts"] >= restarted - 1000

    ack = await after.ask("numbers", {"limit": 10000})
    assert ack["ok"] is True, ack
    stored = ack["numbers"]
    keys = [(n["ts"], n["value"]) for n in stored]
    i = keys.index((last_seen["ts"], last_seen["value"]))
    j = keys.index((first_new["ts"], first_new["value"]))
    assert j > i
    assert first_new["seq"] - last_seen["seq"] == j - i, "draw seq is not +1 per stored draw across the restart"
    window = stored[i : j + 1]
    assert_walk([n["value"] for n in window])
    gaps = [(window[k + 1]["ts"] - window[k]["ts"], k) for k in range(len(window) - 1)]
    _, boundary = max(gaps)
    last_before, first_after = window[boundary], window[boundary + 1]
    assert last_before["ts"] <= stopped <= first_after["ts"], (stopped, last_before, first_after)
    assert abs(last_before["value"] - START_VALUE) > 2 * MAX_STEP, "the walk drifted back before the stop"
    assert abs(first_after["value"] - last_before["value"]) <= MAX_STEP + EPS, (last_before, first_after)


async def test_sigterm_with_a_socket_connected_stops_promptly_and_seq_continues(
    make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    proc = make_server()
    before = await connect(proc.url, await login(proc.url))
    await more_draws(before, 3)
    assert proc.proc is not None
    process = proc.proc
    terminated = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code: int | None = await asyncio.to_thread(process.wait, 10)
    except subprocess.TimeoutExpired:
        code = None
        process.kill()
        await asyncio.to_thread(process.wait, 10)
    took = time.monotonic() - terminated
    proc.proc = None
    last_seen = before.of("random_number")[-1]

    await asyncio.to_thread(proc.start)
    after = await connect(proc.url, await login(proc.url))
    first_new = await after.wait_for("random_number", timeout=10)
    assert first_new["seq"] > last_seen["seq"]
    assert abs(first_new["value"] - last_seen["value"]) <= MAX_STEP * (first_new["seq"] - last_seen["seq"]) + EPS

    assert code == 0, f"SIGTERM with a connected socket: still running after {took:.1f}s (killed)"
    assert took < 10


# ---- numbers ------------------------------------------------------------------------------


async def test_numbers_returns_the_stored_draws_oldest_first(server: ServerProcess, connect: Connect) -> None:
    client = await user(server, connect)
    live = await more_draws(client, 6)

    ack = await client.ask("numbers", {"limit": 10000})
    assert set(ack) == {"ok", "numbers"}, ack
    assert ack["ok"] is True
    stored = ack["numbers"]
    assert isinstance(stored, list)
    assert 6 <= len(stored) <= 10000
    for number in stored:
        assert set(number) == {"value", "ts"}, number
        assert_value(number["value"])
        assert isinstance(number["ts"], int), number
    assert [n["ts"] for n in stored] == sorted(n["ts"] for n in stored)
    assert_walk([n["value"] for n in stored])
    assert stored[-1]["ts"] >= live[-1]["ts"]

    seen = [{"value": d["value"], "ts": d["ts"]} for d in live]
    start = stored.index(seen[0])
    assert stored[start : start + len(seen)] == seen

    newest = await client.ask("numbers", {"limit": 3})
    assert newest["ok"] is True, newest
    assert len(newest["numbers"]) == 3
    assert newest["numbers"][-1]["ts"] >= live[-1]["ts"]
    everything = (await client.ask("numbers", {"limit": 10000}))["numbers"]
    at = everything.index(newest["numbers"][0])
    assert everything[at : at + 3] == newest["numbers"]

    one = await client.ask("numbers", {"limit": 1})
    assert one["ok"] is True, one
    assert len(one["numbers"]) == 1
    assert one["numbers"][0]["ts"] >= newest["numbers"][-1]["ts"]

    default = await client.ask("numbers", {})
    assert default["ok"] is True, default
    assert min(100, len(everything)) <= len(default["numbers"]) <= 100
    assert default["numbers"][-1]["ts"] >= one["numbers"][0]["ts"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": 10001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 10, "offset": 0}, "offset"),
    ],
)
async def test_numbers_rejects_a_bad_payload(
    server: ServerProcess, connect: Connect, payload: Data, field: str
) -> None:
    client = await user(server, connect)
    assert_error(await client.ask("numbers", payload), "invalid_input", field)


# ---- subscribe / unsubscribe random_number -----------------------------------------------


async def test_unsubscribe_stops_random_numbers_and_subscribe_resumes(server: ServerProcess, connect: Connect) -> None:
    client, witness = await user(server, connect), await user(server, connect)
    assert await witness.ask("subscribe", {"stream": "random_number"}) == {"ok": True}
    await more_draws(client, 2)

    assert await client.ask("unsubscribe", {"stream": "random_number"}) == {"ok": True}
    count = len(client.of("random_number"))
    last_seq = client.of("random_number")[-1]["seq"]
    await more_draws(witness, 6)
    assert len(client.of("random_number")) == count, client.of("random_number")[count:]
    assert (await client.ask("ping", {}))["ok"] is True

    assert await client.ask("subscribe", {"stream": "random_number"}) == {"ok": True}
    resumed = await more_draws(client, 3)
    assert resumed[0]["seq"] > last_seq + 5
    assert_draws(resumed, now_ms() - 5000)

    await more_draws(witness, 2)
    witnessed = witness.of("random_number")
    assert_draws(witnessed, now_ms() - 30_000)
    by_seq = {d["seq"]: d for d in witnessed}
    assert all(by_seq[d["seq"]] == d for d in resumed)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"stream": "ohlc", "interval": "2m"}, "interval"),
        ({"stream": "ohlc", "interval": 60}, "interval"),
        ({"stream": "ohlc"}, "interval"),
        ({"stream": "random_number", "interval": "1s"}, "interval"),
        ({"stream": "candles"}, "stream"),
        ({}, "stream"),
        ({"stream": "ohlc", "interval": "1s", "history": -1}, "history"),
        ({"stream": "ohlc", "interval": "1s", "history": "10"}, "history"),
        ({"stream": "random_number", "extra": 1}, "extra"),
    ],
)
@pytest.mark.parametrize("event", ["subscribe", "unsubscribe"])
async def test_subscribe_rejects_a_bad_payload(
    server: ServerProcess, connect: Connect, event: str, payload: Data, field: str
) -> None:
    client = await user(server, connect)
    assert_error(await client.ask(event, payload), "invalid_input", field)
    if event == "subscribe":
        await more_draws(client, 6)
        assert client.of("ohlc") == []


# ---- OHLC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", list(INTERVALS))
async def test_ohlc_subscribe_acks_closed_history(server: ServerProcess, connect: Connect, interval: str) -> None:
    client = await user(server, connect)
    ack = await client.ask("subscribe", {"stream": "ohlc", "interval": interval, "history": 50})
    assert set(ack) == {"ok", "candles"}, ack
    assert ack["ok"] is True
    assert_history(ack["candles"], interval, 50)

    update = await client.wait_for("ohlc", lambda c: c["closed"] is False, timeout=5)
    assert_candle(update, interval)
    assert update["time"] in (bucket(now_ms(), interval), bucket(now_ms() - 1000, interval))
    for candle in client.of("ohlc"):
        assert_candle(candle, interval)
        if candle["closed"]:
            assert candle["time"] < update["time"], candle

    default = await client.ask("subscribe", {"stream": "ohlc", "interval": interval})
    assert default["ok"] is True, default
    assert_history(default["candles"], interval, 100)
    assert len(default["candles"]) >= len(ack["candles"])
    rebuilt = {c["time"]: c for c in default["candles"]}
    for candle in ack["candles"]:
        assert rebuilt.get(candle["time"], candle) == candle
    none = await client.ask("subscribe", {"stream": "ohlc", "interval": interval, "history": 0})
    assert none == {"ok": True, "candles": []}


async def watch_1s_candles(server: ServerProcess, connect: Connect, closed: int) -> tuple[Client, int]:
    """A socket on both streams that has seen `closed` 1s candles close; with the time it subscribed."""
    client = await user(server, connect)
    await more_draws(client, 1)
    assert await client.ask("subscribe", {"stream": "ohlc", "interval": "1s", "history": 0}) == {
        "ok": True,
        "candles": [],
    }
    subscribed = now_ms()
    await client.wait_for("ohlc", lambda _d: len(candles_of(client, "1s", closed=True)) >= closed, timeout=20)
    return client, subscribed


async def test_ohlc_1s_candles_follow_the_random_numbers(server: ServerProcess, connect: Connect) -> None:
    client, subscribed = await watch_1s_candles(server, connect, closed=4)
    draws = list(client.of("random_number"))
    assert_draws(draws, subscribed - 10_000)
    updates = client.of("ohlc")
    for candle in updates:
        assert_candle(candle, "1s")

    times = [c["time"] for c in updates]
    assert times == sorted(times), "ohlc events went back in time"
    closed = [c for c in updates if c["closed"]]
    closed_times = [c["time"] for c in closed]
    assert len(closed_times) == len(set(closed_times)), f"a candle closed twice: {closed_times}"
    for index, candle in enumerate(updates):
        if candle["closed"]:
            assert all(later["time"] > candle["time"] for later in updates[index + 1 :]), "update after close"

    full = 0
    for candle in closed:
        values = values_in(draws, "1s", candle["time"])
        live = [c for c in updates if c["time"] == candle["time"] and not c["closed"]]
        if candle["time"] * 1000 >= subscribed:
            full += 1
            assert_candle_matches(candle, values)
            assert [c["ticks"] for c in live] == list(range(1, len(values) + 1)), live
            assert [c["close"] for c in live] == values
            assert [c["open"] for c in live] == [values[0]] * len(values)
            assert [c["high"] for c in live] == [max(values[: k + 1]) for k in range(len(values))]
            assert [c["low"] for c in live] == [min(values[: k + 1]) for k in range(len(values))]
        elif values:
            assert_candle_covers(candle, values)
        if live:
            assert {**live[-1], "closed": True} == candle
    assert full >= 3

    assert_updates_follow_draws(client, "1s")
    for draw in draws[:-1]:
        if draw["ts"] >= subscribed:
            start = bucket(draw["ts"], "1s")
            assert any(c["time"] == start and c["close"] == draw["value"] for c in updates), draw


async def test_ohlc_history_equals_the_candles_closed_live(server: ServerProcess, connect: Connect) -> None:
    watcher, _ = await watch_1s_candles(server, connect, closed=3)
    seen = candles_of(watcher, "1s", closed=True)

    reader = await user(server, connect)
    ack = await reader.ask("subscribe", {"stream": "ohlc", "interval": "1s", "history": 100})
    assert ack["ok"] is True, ack
    assert_history(ack["candles"], "1s", 100)
    rebuilt = {c["time"]: c for c in ack["candles"]}
    for candle in seen:
        assert rebuilt.get(candle["time"]) == candle, (candle, rebuilt.get(candle["time"]))

    last = await reader.ask("subscribe", {"stream": "ohlc", "interval": "1s", "history": 3})
    assert last["ok"] is True, last
    assert_history(last["candles"], "1s", 3)
    assert len(last["candles"]) == 3
    assert last["candles"][-1]["time"] >= ack["candles"][-1]["time"]
    for candle in last["candles"]:
        if candle["time"] in rebuilt:
            assert rebuilt[candle["time"]] == candle


async def test_ohlc_events_reach_only_subscribers_of_their_interval(server: ServerProcess, connect: Connect) -> None:
    fast, slow, bystander = [await user(server, connect) for _ in range(3)]
    assert (await fast.ask("subscribe", {"stream": "ohlc", "interval": "1s", "history": 0}))["ok"] is True
    assert (await slow.ask("subscribe", {"stream": "ohlc", "interval": "5s", "history": 0}))["ok"] is True

    await fast.wait_for("ohlc", lambda _d: len(candles_of(fast, "1s", closed=True)) >= 2, timeout=10)
    await slow.wait_for("ohlc", lambda _d: len(slow.of("ohlc")) >= 5, timeout=10)
    assert {c["interval"] for c in fast.of("ohlc")} == {"1s"}
    assert {c["interval"] for c in slow.of("ohlc")} == {"5s"}
    assert bystander.of("ohlc") == []
    assert len(bystander.of("random_number")) >= 5

    assert await fast.ask("unsubscribe", {"stream": "ohlc", "interval": "1s"}) == {"ok": True}
    count = len(fast.of("ohlc"))
    draws = len(fast.of("random_number"))
    ticks = len(slow.of("ohlc"))
    await slow.wait_for("ohlc", lambda _d: len(slow.of("ohlc")) >= ticks + 6, timeout=10)
    assert len(fast.of("ohlc")) == count, fast.of("ohlc")[count:]
    assert len(fast.of("random_number")) > draws
    assert bystander.of("ohlc") == []
    assert {c["interval"] for c in slow.of("ohlc")} == {"5s"}


# ---- ohlc-stream (seed-frontend compatibility) ----------------------------------------------


async def test_ohlc_stream_acks_history_and_streams_1m_candles(server: ServerProcess, connect: Connect) -> None:
    legacy, bystander = await user(server, connect), await user(server, connect)
    ack = await legacy.ask("ohlc-stream", {})
    assert set(ack) == {"ok", "candles"}, ack
    assert ack["ok"] is True
    assert_history(ack["candles"], "1m", 100)

    await legacy.wait_for("ohlc", lambda _d: len(legacy.of("ohlc")) >= 4, timeout=10)
    updates = legacy.of("ohlc")
    for candle in updates:
        assert_candle(candle, "1m")
    assert len([c for c in updates if not c["closed"]]) >= 3
    assert_updates_follow_draws(legacy, "1m")
    for closed in [c for c in updates if c["closed"]]:
        await legacy.wait_for("ohlc-data", at_time(closed["time"]), timeout=5)
    closes = [{k: c[k] for k in BAR_KEYS} for c in legacy.of("ohlc") if c["closed"]]
    bars = legacy.of("ohlc-data")
    assert bars == closes[: len(bars)]
    assert bystander.of("ohlc") == []
    assert bystander.of("ohlc-data") == []


async def test_ohlc_data_is_emitted_once_per_1m_close(server: ServerProcess, connect: Connect) -> None:
    legacy, plain, dropped, bystander = [await user(server, connect) for _ in range(4)]
    into_minute_ms = now_ms() % 60_000
    if into_minute_ms > 57_000:
        await asyncio.sleep((60_500 - into_minute_ms) / 1000)
    watching = now_ms()
    assert (await legacy.ask("ohlc-stream", {}))["ok"] is True
    assert await plain.ask("subscribe", {"stream": "ohlc", "interval": "1m", "history": 0}) == {
        "ok": True,
        "candles": [],
    }
    assert (await dropped.ask("ohlc-stream", {}))["ok"] is True
    assert await dropped.ask("unsubscribe", {"stream": "ohlc", "interval": "1m"}) == {"ok": True}

    until_close = 60 - (watching // 1000) % 60
    closed = await legacy.wait_for("ohlc", lambda c: c["closed"] is True, timeout=until_close + 8)
    assert_candle(closed, "1m")
    assert closed["time"] == bucket(watching, "1m")
    bar = await legacy.wait_for("ohlc-data", timeout=5)
    assert set(bar) == BAR_KEYS, bar
    assert bar == {k: closed[k] for k in BAR_KEYS}
    assert await plain.wait_for("ohlc", lambda c: c["closed"] is True, timeout=5) == closed
    await more_draws(legacy, 5)

    assert legacy.of("ohlc-data") == [bar], "ohlc-data must come once per 1m close and only then"
    assert candles_of(legacy, "1m", closed=True) == [closed]
    assert candles_of(plain, "1m", closed=True) == [closed]
    assert plain.of("ohlc-data") == []
    assert dropped.of("ohlc") == []
    assert dropped.of("ohlc-data") == []
    assert bystander.of("ohlc") == []
    assert bystander.of("ohlc-data") == []

    values = values_in(legacy.of("random_number"), "1m", closed["time"])
    assert_candle_covers(closed, values)
    before = [c for c in legacy.of("ohlc") if c["time"] == closed["time"] and not c["closed"]]
    assert before
    assert {**before[-1], "closed": True} == closed
    after = [c for c in legacy.of("ohlc") if c["time"] > closed["time"]]
    assert after
    assert all(c["time"] == closed["time"] + 60 and c["closed"] is False for c in after)

    history = await bystander.ask("subscribe", {"stream": "ohlc", "interval": "1m", "history": 1})
    assert history == {"ok": True, "candles": [closed]}


# ---- ping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True])
async def test_ping_answers_the_server_time(server: ServerProcess, connect: Connect, authenticated: bool) -> None:
    client = await user(server, connect) if authenticated else await connect(server.url)
    payloads: tuple[Data | None, ...] = ({}, None)
    for payload in payloads:
        before = now_ms()
        ack = await client.ask("ping", payload)
        after = now_ms()
        assert set(ack) == {"ok", "ts"}, ack
        assert ack["ok"] is True
        assert isinstance(ack["ts"], int), ack
        assert before - 50 <= ack["ts"] <= after + 50, (before, ack, after)


async def test_draws_and_logins_go_on_while_sockets_connect_and_the_table_is_written(
    make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    """Session reads (every connect), draws and logins share one database connection while
    the journal writes through another: a read left open under a draw must never wedge it."""
    srv = make_server({"RANDOM_INTERVAL_S": "0.02"})
    tokens = [await login(srv.url) for _ in range(4)]
    editor = await connect(srv.url, tokens[0])
    assert (await editor.ask("lock_row", {"id": 1}))["ok"]
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            assert (await editor.ask("update_csv", {"id": 1, "values": {"pnl": n}}))["ok"]

    async def churn(token: str) -> None:
        while not stop.is_set():
            client = await connect(srv.url, token)
            await client.disconnect()

    jobs = [asyncio.create_task(write()), *(asyncio.create_task(churn(t)) for t in tokens for _ in range(3))]
    await asyncio.sleep(4)
    stop.set()
    await asyncio.gather(*jobs)
    started = now_ms()
    await asyncio.sleep(0.5)
    await login(srv.url)  # a 503 here fails the test
    numbers = (await editor.ask("numbers", {"limit": 5}))["numbers"]
    assert numbers[-1]["ts"] >= started, f"the stream stopped drawing: {numbers}; log:\n{srv.log()[-3000:]}"
