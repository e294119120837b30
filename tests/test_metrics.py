"""GET /metrics: real traffic from real clients moves the Prometheus numbers as it should."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, ServerProcess, login, unique_user

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{url}/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
async def polling_guest() -> AsyncIterator[Callable[[str], Awaitable[Client]]]:
    """Guests on long-polling, dropped at the end without waiting for a pending poll to return."""
    clients: list[Client] = []

    async def make(url: str) -> Client:
        client = Client()
        await client.connect(url, transports=["polling"], wait_timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.drop()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def eventually(url: str, check: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(url)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.05)


def events(samples: Samples, event: str, outcome: str) -> float:
    return value(samples, "tablecast_socket_events_total", event=event, outcome=outcome)


def sockets(samples: Samples, transport: str, kind: str) -> float:
    return value(samples, "tablecast_sockets_connected", transport=transport, kind=kind)


async def test_metrics_follow_real_traffic(
    make_server: Callable[..., ServerProcess],
    connect: Callable[..., Awaitable[Client]],
    polling_guest: Callable[[str], Awaitable[Client]],
) -> None:
    url = make_server({"EDIT_COOLDOWN_S": "60"}).url
    before = await scrape(url)
    assert not any(name.startswith(("python_", "process_")) for name, _ in before), "not the default registry"

    alice = await connect(url, await login(url, unique_user("alice")))
    bob = await connect(url)  # a guest who logs in over the socket
    assert (await bob.ask("login", {"username": unique_user("bob"), "password": "secret-pw"}))["ok"]
    guest = await polling_guest(url)
    leaver = await connect(url)  # a guest on a websocket, who leaves later
    page = await alice.ask("fetch_csv", {"limit": 5})
    assert page["ok"]
    row_id, other_id = page["rows"][0]["id"], page["rows"][1]["id"]
    assert (await alice.ask("lock_row", {"id": row_id}))["ok"]
    updates = 3
    for n in range(updates):
        assert (await alice.ask("update_csv", {"id": row_id, "values": {"pnl": n + 0.5}}))["ok"]
    no_lock = await alice.ask("update_csv", {"id": other_id, "values": {"pnl": 1.0}})
    assert no_lock["error"]["code"] == "lock_required"
    taken = await bob.ask("lock_row", {"id": row_id})
    assert taken["error"]["code"] == "locked"
    refused = await guest.ask("fetch_csv", {})
    assert refused["error"]["code"] == "unauthorized"
    assert (await guest.ask("ping", {}))["ok"]
    assert (await alice.ask("no_such_event", {}))["error"]["code"] == "invalid_input"
    final = await alice.ask("fetch_csv", {"limit": 1})
    assert final["seq"] == page["seq"] + updates
    await bob.wait_for("csv_update", lambda d: d["seq"] == final["seq"])

    after = await eventually(
        url,
        lambda s: value(s, "tablecast_broadcast_duration_seconds_count", event="csv_update") >= updates,
    )

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert events(after, "update_csv", "ok") - events(before, "update_csv", "ok") == updates
    assert events(after, "update_csv", "lock_required") - events(before, "update_csv", "lock_required") == 1
    assert events(after, "lock_row", "ok") - events(before, "lock_row", "ok") == 1
    assert events(after, "lock_row", "locked") - events(before, "lock_row", "locked") == 1
    assert events(after, "fetch_csv", "unauthorized") - events(before, "fetch_csv", "unauthorized") == 1
    assert events(after, "fetch_csv", "ok") - events(before, "fetch_csv", "ok") == 2
    assert events(after, "login", "ok") - events(before, "login", "ok") == 1
    assert events(after, "ping", "ok") - events(before, "ping", "ok") == 1
    assert events(after, "unknown", "invalid_input") - events(before, "unknown", "invalid_input") == 1
    assert delta("tablecast_socket_ack_duration_seconds_count", event="update_csv") == updates + 1
    assert delta("tablecast_socket_ack_duration_seconds_sum", event="update_csv") > 0

    assert sockets(after, "websocket", "authenticated") == 2
    assert sockets(after, "websocket", "guest") == 1
    assert sockets(after, "polling", "guest") == 1
    assert sockets(after, "polling", "authenticated") == 0

    assert value(after, "tablecast_table_seq") == final["seq"]
    assert value(after, "tablecast_table_rows") == final["total"]
    assert value(after, "tablecast_locks_held", state="locked") == 1
    assert value(after, "tablecast_locks_held", state="cooldown") == 0

    commits = delta("tablecast_journal_commit_batch_size_count")
    assert 0 < commits <= updates
    assert delta("tablecast_journal_commit_batch_size_sum") == updates  # every change committed exactly once
    assert delta("tablecast_journal_commit_duration_seconds_count") == commits
    assert value(after, "tablecast_journal_commit_batch_size_bucket", le="+Inf") == value(
        after, "tablecast_journal_commit_batch_size_count"
    )

    csv_updates = delta("tablecast_broadcast_duration_seconds_count", event="csv_update")
    assert csv_updates == updates
    # Alice and Bob are authenticated; the guest gets no table broadcasts.
    assert delta("tablecast_broadcast_recipients_total", event="csv_update") == 2 * updates
    assert delta("tablecast_broadcast_duration_seconds_count", event="lock_status") >= 1

    # Releasing the edited row starts its cooldown; a guest leaving drops its gauge.
    assert (await alice.ask("unlock_row", {"id": row_id}))["ok"]
    await leaver.disconnect()
    later = await eventually(url, lambda s: sockets(s, "websocket", "guest") == 0)
    assert sockets(later, "websocket", "guest") == 0
    assert sockets(later, "polling", "guest") == 1
    assert value(later, "tablecast_locks_held", state="locked") == 0
    assert value(later, "tablecast_locks_held", state="cooldown") == 1


async def test_random_ticks_are_counted(make_server: Callable[..., ServerProcess]) -> None:
    url = make_server({"RANDOM_INTERVAL_S": "0.05"}).url
    first = await scrape(url)
    later = await eventually(
        url, lambda s: value(s, "tablecast_random_ticks_total") >= value(first, "tablecast_random_ticks_total") + 3
    )
    assert value(later, "tablecast_random_ticks_total") >= value(first, "tablecast_random_ticks_total") + 3
    assert value(later, "tablecast_broadcast_duration_seconds_count", event="random_number") >= 3
    assert value(later, "tablecast_broadcast_recipients_total", event="random_number") == 0  # nobody listening
