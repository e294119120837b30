"""The clients of bench/crash.py: users and their tokens, writers (python-socketio) storming
rows of their own and recording each ack the moment it is decoded, and a reader downloading
the CSV in a loop."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from bench.crash_model import Model, Pending, Row, check_csv, random_value, short
from bench.harness import PASSWORD, BenchError, Server, login

CALL_TIMEOUT_S = 20.0
MIN_OWNED, MAX_OWNED = 10, 60  # rows a writer holds at the least and the most


READER_PAUSE_S = 0.05  # each download forks the server: leave the two cores to the writers


class Accounts:
    """One REST login per user for the whole run: the tokens outlive restarts."""

    def __init__(self, http: aiohttp.ClientSession, server: Server) -> None:
        self.http = http
        self.server = server
        self.tokens: dict[str, str] = {}
        self.relogins = 0

    async def token(self, username: str, fresh: bool = False) -> str:
        if fresh or username not in self.tokens:
            self.tokens[username] = await login(self.http, self.server.url, username, PASSWORD)
        return self.tokens[username]

    async def connect(self, username: str) -> Any:
        for attempt in range(2):
            client = socketio.AsyncClient(reconnection=False)
            token = await self.token(username, fresh=attempt > 0)
            try:
                await client.connect(
                    self.server.url, auth={"token": token}, transports=["websocket"], wait_timeout=CALL_TIMEOUT_S
                )
                return client
            except socketio.exceptions.ConnectionError:
                await close_client(client)
                if attempt > 0:
                    raise
                self.relogins += 1  # the token was refused after a restart: log in again
        raise AssertionError("unreachable")


async def close_client(client: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 5)
    # A socket whose server died leaves the Engine.IO client's HTTP session open.
    http = getattr(client.eio, "http", None)
    if http is not None and not http.closed:
        await http.close()


async def fetch_all(client: Any) -> tuple[list[dict[str, str]], dict[int, Row], int]:
    rows: dict[int, Row] = {}
    offset = 0
    while True:
        page = await client.call("fetch_csv", {"offset": offset, "limit": 10000}, timeout=CALL_TIMEOUT_S)
        if not isinstance(page, dict) or not page.get("ok"):
            raise BenchError(f"fetch_csv failed: {page!r}")
        rows.update({int(row["id"]): row for row in page["rows"]})
        offset += len(page["rows"])
        if offset >= page["total"] or not page["rows"]:
            return page["columns"], rows, int(page["seq"])


@dataclass
class RoundState:
    killing: bool = False  # set just before SIGKILL: from then on, failures to talk are expected
    acked: int = 0
    downloads: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        if not self.killing:
            self.errors.append(message)


class Writer:
    """One user editing rows of its own: no other writer touches them, so after a restart
    each of its rows must be exactly as its own last ack left it."""

    def __init__(self, index: int, owned: list[int]) -> None:
        self.index = index
        self.username = f"crash_writer_{index}"
        self.owned = owned
        self.added = 0

    async def storm(self, client: Any, model: Model, state: RoundState, rng: random.Random, tag: str) -> None:
        held: set[int] = set()  # locks live in memory only: none survive a restart
        last_version = model.seq
        kinds = {column["name"]: column["type"] for column in model.columns[1:]}
        names = list(kinds)
        text_names = [name for name in names if kinds[name] == "text"]

        async def send(event: str, payload: dict[str, Any], pending: Pending | None) -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[dict[str, Any]] = loop.create_future()

            def on_ack(*args: Any) -> None:
                # Runs as the ack is decoded: it counts even if this task is cancelled next.
                nonlocal last_version
                ack: dict[str, Any] = args[0] if args and isinstance(args[0], dict) else {"ok": False, "error": args}
                if pending is not None:
                    model.pending.pop(self.index, None)
                    if ack.get("ok"):
                        state.acked += 1
                        self.record(model, state, pending, ack, last_version)
                        if "row" in ack:
                            last_version = int(ack["row"]["version"])
                if not done.done():
                    done.set_result(ack)

            if pending is not None:
                model.pending[self.index] = pending  # before sending: the server may apply it at once
            await client.emit(event, payload, callback=on_ack)
            return await asyncio.wait_for(done, CALL_TIMEOUT_S)

        async def lock(row_id: int) -> bool:
            ack = await send("lock_row", {"id": row_id}, None)
            if ack.get("ok"):
                held.add(row_id)
                return True
            if ack.get("error", {}).get("code") == "cooldown":
                await asyncio.sleep(min(float(ack["error"].get("retry_after", 0.1)), 0.1))
                return False
            state.fail(f"writer {self.index}: lock_row {row_id}: {ack}")
            return False

        try:
            while True:
                choice = rng.random()
                if (choice < 0.15 and len(self.owned) < MAX_OWNED) or not self.owned:
                    values = {name: random_value(rng, kinds[name]) for name in names}
                    if text_names:  # a tag no other write has: an in-flight add is told apart by it
                        values[text_names[0]] = f"{tag}-w{self.index}-a{self.added}"
                    self.added += 1
                    ack = await send("add_csv", {"values": values}, Pending("add", None, values))
                    if ack.get("ok"):
                        self.owned.append(int(ack["row"]["id"]))
                    else:
                        state.fail(f"writer {self.index}: add_csv: {ack}")
                    continue
                row_id = rng.choice(self.owned)
                if row_id not in held and not await lock(row_id):
                    continue
                version = model.rows[row_id]["version"]
                if choice < 0.30 and len(self.owned) > MIN_OWNED:
                    payload: dict[str, Any] = {"id": row_id, "version": version}
                    ack = await send("delete_csv", payload, Pending("delete", row_id, {}))
                    if ack.get("ok"):
                        self.owned.remove(row_id)
                        held.discard(row_id)
                    else:
                        state.fail(f"writer {self.index}: delete_csv {row_id}: {ack}")
                    continue
                picked = rng.sample(names, rng.randint(1, min(3, len(names))))
                values = {name: random_value(rng, kinds[name]) for name in picked}
                payload = {"id": row_id, "values": values, "version": version}
                ack = await send("update_csv", payload, Pending("update", row_id, values))
                if not ack.get("ok"):
                    state.fail(f"writer {self.index}: update_csv {row_id}: {ack}")
        except Exception as exc:  # the kill cuts every call short; before it, this is a failure
            state.fail(f"writer {self.index}: {type(exc).__name__}: {exc}")

    def record(self, model: Model, state: RoundState, pending: Pending, ack: dict[str, Any], last: int) -> None:
        """An ok ack: the write is durable, so it is what the server must hold from now on."""
        if pending.op == "delete":
            assert pending.row_id is not None
            if ack.get("id") != pending.row_id:
                state.errors.append(f"delete_csv {pending.row_id} acked for id {ack.get('id')}")
            model.rows.pop(pending.row_id, None)
            model.deleted.add(pending.row_id)
            return
        row: Row = ack["row"]
        row_id, version = int(row["id"]), int(row["version"])
        if pending.op == "add":
            if row_id in model.ids_seen:
                state.errors.append(f"add_csv reused id {row_id}")
            want = pending.values
        else:
            assert pending.row_id is not None
            want = {**model.rows[pending.row_id]["values"], **pending.values}
        if row["values"] != want:
            state.errors.append(f"{pending.op} acked {short(row)}, sent {want}")
        if version <= last:  # each change takes a new, higher seq
            state.errors.append(f"{pending.op} acked version {version} after {last}")
        model.acked_version = max(model.acked_version, version)
        model.ids_seen.add(row_id)
        model.rows[row_id] = row


async def reader(http: aiohttp.ClientSession, url: str, token: str, names: list[str], state: RoundState) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            async with http.get(f"{url}/api/fetch_csv", params={"format": "csv"}, headers=headers) as response:
                if response.status != 200:
                    state.fail(f"download: HTTP {response.status}")
                    return
                # Only a framed body tells a cut-off download from a whole one.
                if response.headers.get("Transfer-Encoding") != "chunked" and not response.content_length:
                    state.fail("download: neither chunked nor of a known length")
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            state.fail(f"download: {type(exc).__name__}: {exc}")
            return
        # A download that arrived whole must be a whole table, even one finished after the kill.
        state.errors.extend(check_csv(body, names, "download"))
        state.downloads += 1
        await asyncio.sleep(READER_PAUSE_S)
