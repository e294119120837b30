"""Broadcast order and completeness while clients of every transport join mid-stream
(PROTOCOL.md sections 4, 6 and 7).

Editors change the table (a steady stream, or all at once so group commit batches the changes)
while receivers connect: python-socketio clients over websocket, long-polling, and polling then
upgrading, and npm socket.io-client sockets under node (tests/node/fanout_receivers.mjs) over the
same plus an upgrade started while broadcasts flow to the socket. Some receivers emit `ping` and
`fetch_csv` while they receive, so acks interleave with broadcasts on the same socket.

Every receiver must get each csv_update from its first one to the final seq exactly once, in
order, equal to the server's history; every draw stored after it joined must reach it once, in
order, seqs stepping by exactly 1; per editor, its csv_update and lock_status events (lock_status
carries no seq) must arrive as the tail of what it did, in its order; every ack must arrive ok;
nothing may disconnect; each socket ends on the transport its kind implies. The checks are exact:
one swapped, lost or repeated packet on one socket fails the test, with counts per client kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, ServerProcess, login, node_with, unique_user
from tests.test_node_clients import NODE_DIR, run_node

Connect = Callable[..., Awaitable[Client]]
Data = dict[str, Any]

# Fast draws so random_number streams alongside the table broadcasts.
# A long-polling receiver takes at most 16 packets per round trip; in a burst on a busy
# machine its backlog can pass the default MAX_SEND_QUEUE_BYTES (1 MiB), and this file is about
# order and completeness, not about slow consumers (tests/test_slow_consumers.py is).
SETTINGS = {"RANDOM_INTERVAL_S": "0.05", "MAX_SEND_QUEUE_BYTES": str(64 << 20)}
STALE_DRAW_MS = 2000  # forty draw periods without a draw: the stream has stopped
# python-engineio finishes its upgrade before the Socket.IO connect goes out, so "upgrade"
# receivers join on websocket after starting on polling; the node scenario's late_upgrade
# sockets are the ones that upgrade while broadcasts are flowing to them.
KINDS: dict[str, list[str]] = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": ["polling", "websocket"]}
FINAL_TRANSPORT = {"websocket": "websocket", "polling": "polling", "upgrade": "websocket", "editor": "websocket"}
FAULTS = (
    "out_of_order",
    "duplicates",
    "gaps",
    "beyond",
    "corrupt",
    "random_out_of_order",
    "random_duplicates",
    "random_gaps",
    "random_corrupt",
    "editor_order",
    "ack_errors",
    "disconnects",
    "connect_errors",
    "wrong_transport",
)
ACK_TIMEOUT_S = 10.0
FINAL_WAIT_S = 20.0
CHAT_PAUSE_S = 0.01
EDIT_PAUSE_S = 0.02
BURST_PAUSE_S = 0.1
LAPS_AFTER_JOINS = 10  # editor rounds after the last receiver joined, so every upgraded socket gets some
BURST_ROUNDS = 3
HISTORY_LIMIT = 10_000
# Every BIG_EVERY-th update carries a cell this long: multi-KB frames keep transports' buffers
# and the sockets' writers busy for longer, the moments a direct write must not overtake them.
BIG_EVERY = 5
BIG_CELL_CHARS = 9000


# ---- the checks (the node scenario uses the same definitions) -----------------------------


def seq_faults(seqs: list[int], start: int, final: int) -> dict[str, int]:
    """All zero exactly when `seqs` is first..final with first <= start (the seq right after the
    receiver's first page: every change from there on was broadcast to it)."""
    first = min(start, seqs[0]) if seqs else start
    have = set(seqs)
    return {
        "out_of_order": sum(b < a for a, b in itertools.pairwise(seqs)),
        "duplicates": len(seqs) - len(have),
        "gaps": len(set(range(first, final + 1)) - have),
        "beyond": sum(seq > final for seq in seqs),
    }


def draw_faults(draws: list[Data], mark_ts: int | None, stored: list[Data]) -> dict[str, int]:
    """random_number checked against the server's stored draws (each is stored, then emitted):
    every draw stored after the receiver's first `numbers` answer (`mark_ts`, the newest draw
    then) up to the newest stored one must arrive once, in order, with its stored value; seqs
    step by exactly 1. Draws are placed by `ts`, which `numbers` answers with (it has no seq)."""
    place = {d["ts"]: i for i, d in enumerate(stored)}
    end_ts = stored[-1]["ts"] if stored else -1
    got = [d for d in draws if d["ts"] <= end_ts]
    indices = [place.get(d["ts"], -1) for d in got]
    offsets = [d["seq"] - i for d, i in zip(got, indices, strict=True)]
    corrupt = sum(
        i < 0 or d["value"] != stored[i]["value"] or offset != offsets[0]
        for d, i, offset in zip(got, indices, offsets, strict=True)
    )
    start = 0
    if mark_ts in place:
        start = place[mark_ts] + 1
    elif mark_ts is not None:
        corrupt += 1  # the newest draw the receiver was told of must be a stored one
    faults = seq_faults([i for i in indices if i >= 0], start, len(stored) - 1)
    return {
        "random_out_of_order": faults["out_of_order"],
        "random_duplicates": faults["duplicates"],
        "random_gaps": faults["gaps"],
        "random_corrupt": corrupt,
    }


def editor_key(event: str, data: Data, toggles: dict[int, str]) -> tuple[str, str] | None:
    """(editor, key) for one of an editor's own changes or a lock change on its toggle row."""
    if event == "csv_update":
        if data["op"] == "update":
            return data["by"], f"update:{data['row']['id']}:{data['row']['values']['broker']}"
        if data["op"] == "add":
            return data["by"], f"add:{data['row']['id']}"
        if data["op"] == "delete":
            return data["by"], f"delete:{data['id']}"
        return None
    if event == "lock_status" and data["id"] in toggles:
        return toggles[data["id"]], f"lock:{data['id']}:{data['state']}"
    return None


def editor_order_faults(events: Iterable[tuple[str, Any]], editors: dict[str, EditorLog]) -> int:
    """Editors whose events, as received, are not the tail of what the editor did, in order.
    A socket joins once, so it gets every broadcast from some moment on; one editor's broadcasts
    are emitted in the order of its acked operations."""
    toggles = {log.toggle: user for user, log in editors.items()}
    got: dict[str, list[str]] = {user: [] for user in editors}
    for event, data in events:
        key = editor_key(event, data, toggles)
        if key is not None and key[0] in got:
            got[key[0]].append(key[1])
    return sum(keys != editors[user].log[len(editors[user].log) - len(keys) :] for user, keys in got.items())


# ---- editors and receivers --------------------------------------------------------------


def update_values(user: str, n: int) -> dict[str, str]:
    values = {"broker": f"{user}-{n}"}
    if n % BIG_EVERY == 0:
        values["API secret"] = f"{n}-".ljust(BIG_CELL_CHARS, "s")
    return values


def newest_ts(numbers: list[Data]) -> int | None:
    return int(numbers[-1]["ts"]) if numbers else None


@dataclass
class EditorLog:
    toggle: int
    log: list[str] = field(default_factory=list)


@dataclass
class Editor:
    user: str
    client: Client
    rows: list[int]
    toggle: int
    start_seq: int = 0
    mark_ts: int | None = None
    log: list[str] = field(default_factory=list)
    acked_seqs: list[int] = field(default_factory=list)

    @classmethod
    async def open(cls, connect: Connect, url: str, rows: list[int], toggle: int) -> Editor:
        user = unique_user("editor")
        editor = cls(user, await connect(url, await login(url, user)), rows, toggle)
        editor.start_seq = (await editor.ok("fetch_csv", {"limit": 1}))["seq"]
        editor.mark_ts = newest_ts((await editor.ok("numbers", {"limit": 1}))["numbers"])
        for row in rows:
            await editor.ok("lock_row", {"id": row})
        return editor

    async def ok(self, event: str, payload: Data) -> Data:
        ack = await self.client.ask(event, payload, timeout=ACK_TIMEOUT_S)
        assert ack["ok"] is True, (self.user, event, payload, ack)
        return ack

    async def update(self, row: int, n: int) -> None:
        ack = await self.ok("update_csv", {"id": row, "values": update_values(self.user, n)})
        self.acked_seqs.append(ack["row"]["version"])
        self.log.append(f"update:{row}:{self.user}-{n}")

    async def toggle_lock(self) -> None:
        """A lock taken and released without an edit: two lock_status, no cooldown."""
        await self.ok("lock_row", {"id": self.toggle})
        self.log.append(f"lock:{self.toggle}:locked")
        await self.ok("unlock_row", {"id": self.toggle})
        self.log.append(f"lock:{self.toggle}:unlocked")

    async def add_and_delete(self) -> None:
        row = (await self.ok("add_csv", {"values": {"user": self.user, "broker": "added"}}))["row"]
        self.acked_seqs.append(row["version"])
        self.log.append(f"add:{row['id']}")
        await self.ok("lock_row", {"id": row["id"]})
        await self.ok("delete_csv", {"id": row["id"]})
        self.log.append(f"delete:{row['id']}")

    async def run(self, started: asyncio.Event, joined: asyncio.Event) -> None:
        """Steady edits until every receiver has joined, then LAPS_AFTER_JOINS more rounds; the
        last operation is an update, so reaching the final seq means every event has arrived."""
        laps = 0
        for n in itertools.count(1):
            await self.update(self.rows[0], n)
            started.set()
            if n % 4 == 1:
                await self.toggle_lock()
            if n % 8 == 3:
                await self.add_and_delete()
            laps += joined.is_set()
            if laps > LAPS_AFTER_JOINS:
                await self.update(self.rows[0], n + 1)
                return
            await asyncio.sleep(EDIT_PAUSE_S)

    async def run_bursts(self, joined: asyncio.Event, size: int) -> None:
        """Rounds of `size` adds in flight at once until every receiver has joined, then
        LAPS_AFTER_JOINS more: one commit carries several changes, whose broadcasts then go out
        back to back, right behind one another in each socket's queue."""
        laps = 0
        for n in itertools.count():
            acks = await asyncio.gather(
                *(self.ok("add_csv", {"values": {"user": self.user, "broker": f"burst-{n}-{k}"}}) for k in range(size))
            )
            self.acked_seqs.extend(ack["row"]["version"] for ack in acks)
            laps += joined.is_set()
            if laps > LAPS_AFTER_JOINS:
                return
            await asyncio.sleep(BURST_PAUSE_S)

    def editor_log(self) -> EditorLog:
        return EditorLog(self.toggle, self.log)


@dataclass
class Receiver:
    kind: str
    chatty: bool
    client: Client | None = None
    start_seq: int | None = None
    mark_ts: int | None = None
    acks: int = 0
    ack_errors: list[str] = field(default_factory=list)
    disconnects: list[str] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    stopping: bool = False
    chatter: asyncio.Task[None] | None = None

    def attach(self, client: Client) -> None:
        self.client = client

        async def disconnected(reason: Any = None) -> None:
            self.disconnects.append(str(reason))

        client.on("disconnect", disconnected)

    async def ask(self, event: str, payload: Data) -> Data | None:
        assert self.client is not None
        try:
            ack = await self.client.ask(event, payload, timeout=ACK_TIMEOUT_S)
        except Exception as exc:  # a lost or malformed ack is a finding to count, not a crash
            self.ack_errors.append(f"{event}: {exc!r}")
            return None
        self.acks += 1
        if ack.get("ok") is not True:
            self.ack_errors.append(f"{event}: {ack}")
            return None
        return ack

    async def chat(self) -> None:
        for turn in itertools.count():
            if self.stopping:
                return
            if turn % 2:
                ack = await self.ask("ping", {})
                if ack is not None and not isinstance(ack.get("ts"), int):
                    self.ack_errors.append(f"ping: {ack}")
            else:
                since = self.last_seq()
                ack = await self.ask("fetch_csv", {"since": since, "limit": HISTORY_LIMIT})
                # The changes after `since`: consecutive, ending at the acked seq.
                if ack is not None and (
                    "changes" not in ack
                    or ack["seq"] != since + len(ack["changes"])
                    or [c["seq"] for c in ack["changes"]] != list(range(since + 1, ack["seq"] + 1))
                ):
                    self.ack_errors.append(f"fetch_csv since {since}: {str(ack)[:300]}")
            await asyncio.sleep(CHAT_PAUSE_S)

    async def stop(self) -> None:
        self.stopping = True
        if self.chatter is not None:
            await self.chatter

    async def close(self) -> None:
        """Close at once: a polling client's own disconnect waits for its pending long-poll."""
        client = self.client
        if client is None or not client.connected:
            return
        if client.transport() == "websocket":
            await client.disconnect()
        else:
            await client.drop()

    def events(self) -> list[tuple[str, Any]]:
        return self.client.events if self.client is not None else []

    def of(self, name: str) -> list[Any]:
        return [data for event, data in self.events() if event == name]

    def last_seq(self) -> int:
        for event, data in reversed(self.events()):
            if event == "csv_update":
                return int(data["seq"])
        return self.start_seq if self.start_seq is not None else -1

    def has_draw(self, ts: int) -> bool:
        """Holds the draw stamped `ts`, or joined when it was already the newest one."""
        return (self.mark_ts is not None and self.mark_ts >= ts) or any(d["ts"] >= ts for d in self.of("random_number"))

    def faults(
        self, final: int, stored: list[Data], history: dict[int, Data], editors: dict[str, EditorLog]
    ) -> dict[str, int]:
        updates = self.of("csv_update")
        transport = self.client.transport() if self.client is not None and self.client.connected else None
        return {
            **seq_faults([u["seq"] for u in updates], (final if self.start_seq is None else self.start_seq) + 1, final),
            "corrupt": sum(u != history.get(u["seq"]) for u in updates),
            **draw_faults(self.of("random_number"), self.mark_ts, stored),
            "editor_order": editor_order_faults(self.events(), editors),
            "ack_errors": len(self.ack_errors),
            "disconnects": len(self.disconnects),
            "connect_errors": len(self.connect_errors),
            "wrong_transport": int(transport != FINAL_TRANSPORT[self.kind]),
        }


async def open_receiver(connect: Connect, url: str, token: str, kind: str, chatty: bool) -> Receiver:
    receiver = Receiver(kind, chatty)
    try:
        receiver.attach(await connect(url, token, transports=KINDS[kind]))
    except Exception as exc:  # a refused or failed connect is counted and reported
        receiver.connect_errors.append(repr(exc))
        return receiver
    page = await receiver.ask("fetch_csv", {"limit": 1})
    if page is None:
        receiver.connect_errors.append("no first page")
        return receiver
    receiver.start_seq = page["seq"]
    numbers = await receiver.ask("numbers", {"limit": 1})
    if numbers is None:
        receiver.connect_errors.append("no numbers mark")
        return receiver
    receiver.mark_ts = newest_ts(numbers["numbers"])
    if chatty:
        receiver.chatter = asyncio.create_task(receiver.chat())
    return receiver


def editor_receiver(editor: Editor) -> Receiver:
    """An editor also receives every broadcast, with its own acks interleaved."""
    receiver = Receiver("editor", chatty=False, start_seq=editor.start_seq, mark_ts=editor.mark_ts)
    receiver.attach(editor.client)
    return receiver


async def python_waves(connect: Connect, url: str, token: str, waves: int, pause_s: float) -> list[Receiver]:
    """`waves` rounds of one receiver per kind, `pause_s` apart; alternate ones chat."""
    opening: list[asyncio.Task[Receiver]] = []
    for wave in range(waves):
        if wave:
            await asyncio.sleep(pause_s)
        for k, kind in enumerate(KINDS):
            opening.append(asyncio.create_task(open_receiver(connect, url, token, kind, (wave + k) % 2 == 1)))
    return list(await asyncio.gather(*opening))


async def bounded(condition: Callable[[], bool], timeout: float) -> None:
    """Wait until `condition` holds or `timeout` passes; the checks after it say what is missing."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def settle_and_check(
    receivers: list[Receiver], reader: Editor, final: int, history: dict[int, Data], editors: dict[str, EditorLog]
) -> tuple[dict[str, dict[str, int]], list[Data]]:
    """Wait (bounded) for every receiver to reach `final` and the newest stored draw, then count
    the faults per kind, with a few faulty receivers as examples."""
    await bounded(lambda: all(r.last_seq() >= final for r in receivers if r.client is not None), FINAL_WAIT_S)
    await asyncio.gather(*(r.stop() for r in receivers))
    stored: list[Data] = (await reader.ok("numbers", {"limit": HISTORY_LIMIT}))["numbers"]
    if stored:
        end_ts = stored[-1]["ts"]
        await bounded(lambda: all(r.has_draw(end_ts) for r in receivers if r.client is not None), FINAL_WAIT_S)
    # The checks below hold for whatever was drawn; a stream that stopped drawing is a fault too.
    assert stored, "no random_number was stored"
    assert time.time() * 1000 - stored[-1]["ts"] <= STALE_DRAW_MS, f"random_number stopped drawing: {stored[-3:]}"
    kinds: dict[str, dict[str, int]] = {}
    examples: list[Data] = []
    for r in receivers:
        faults = r.faults(final, stored, history, editors)
        total = kinds.setdefault(r.kind, dict.fromkeys(("receivers", "csv_updates", "random_numbers", "acks"), 0))
        total["receivers"] += 1
        total["csv_updates"] += len(r.of("csv_update"))
        total["random_numbers"] += len(r.of("random_number"))
        total["acks"] += r.acks
        for name in FAULTS:
            total[name] = total.get(name, 0) + faults[name]
        if any(faults.values()) and len(examples) < 5:
            examples.append(
                {
                    "kind": r.kind,
                    "chatty": r.chatty,
                    "start_seq": r.start_seq,
                    "faults": {name: n for name, n in faults.items() if n},
                    "seqs_tail": [u["seq"] for u in r.of("csv_update")][-8:],
                    "errors": [*r.ack_errors, *r.connect_errors, *r.disconnects][:3],
                }
            )
    return kinds, examples


def faulty(kinds: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The non-zero fault counts, per kind."""
    found = {kind: {name: total[name] for name in FAULTS if total[name]} for kind, total in kinds.items()}
    return {kind: counts for kind, counts in found.items() if counts}


async def close_all(receivers: list[Receiver]) -> None:
    await asyncio.gather(*(r.stop() for r in receivers))
    await asyncio.gather(*(r.close() for r in receivers), return_exceptions=True)


async def history_since(editor: Editor, since: int) -> dict[int, Data]:
    ack = await editor.ok("fetch_csv", {"since": since, "limit": HISTORY_LIMIT})
    assert "changes" in ack, f"history since {since} is no longer held: {str(ack)[:300]}"
    return {change["seq"]: change for change in ack["changes"]}


# ---- node ---------------------------------------------------------------------------------


@pytest.fixture
def node() -> str:
    return node_with("socket.io-client", NODE_DIR / "node_modules")


class NodeScenario:
    """A scenario that reports {"ready": true} on stdout, takes one JSON line on stdin, and ends
    with its one JSON result line, like the others."""

    def __init__(self, script: str, proc: asyncio.subprocess.Process) -> None:
        self.script = script
        self.proc = proc
        self.lines: list[str] = []
        self._line = asyncio.Event()
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._stdout = asyncio.create_task(self._read(proc.stdout))
        self._stderr = asyncio.create_task(proc.stderr.read())

    @classmethod
    async def start(cls, node: str, script: str, variables: dict[str, str]) -> NodeScenario:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / script),
            cwd=NODE_DIR,
            env={**os.environ, **variables},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(script, proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").strip())
            self._line.set()

    async def _failure(self, what: str) -> str:
        await self.kill()
        err = (await self._stderr).decode(errors="replace")
        return f"{self.script} {what}\nstderr:\n{err}\nstdout:\n" + "\n".join(self.lines)

    async def ready(self, timeout: float) -> Data:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("ready") is True:
                        return data
            remaining = deadline - time.monotonic()
            if self._stdout.done() or remaining <= 0:
                pytest.fail(await self._failure("ended or timed out before it was ready"))
            self._line.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._line.wait(), remaining)

    async def finish(self, message: Data, timeout: float) -> Data:
        """Send `message`, wait for the exit; the result, or {"failed": text} to report."""
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):  # it may have failed and exited already
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return {"failed": await self._failure(f"did not finish within {timeout} s")}
        await self._stdout
        if self.proc.returncode != 0 or not self.lines:
            return {"failed": await self._failure(f"exited with {self.proc.returncode}")}
        data = json.loads(self.lines[-1])
        assert isinstance(data, dict), self.lines[-1]
        assert data.get("ok") is True, data
        assert data.get("scenario") == self.script.removesuffix(".mjs"), data
        return data

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def node_faults(result: Data) -> str | None:
    """What is wrong with a node result, or None."""
    if "failed" in result:
        return str(result["failed"])
    bad = faulty(result["kinds"])
    return f"node receivers: {json.dumps(result)}" if bad else None


def report(kinds: dict[str, dict[str, int]], examples: list[Data], node: Data) -> str:
    python = json.dumps({"faulty": faulty(kinds), "kinds": kinds, "examples": examples})
    return f"python receivers: {python}\nnode: {node.get('failed') or json.dumps(node.get('kinds'))}"


# ---- tests --------------------------------------------------------------------------------


def test_checks_are_exact() -> None:
    """The counts are zero only for an exact +1 run, so any swap, loss or repeat shows."""
    clean = {"out_of_order": 0, "duplicates": 0, "gaps": 0, "beyond": 0}
    assert seq_faults([5, 6, 7, 8], 6, 8) == clean
    assert seq_faults([3, 4, 5, 6, 7, 8], 6, 8) == clean  # broadcasts from before the first page may trail in
    assert seq_faults([5, 7, 6, 8], 6, 8)["out_of_order"] == 1
    assert seq_faults([5, 6, 6, 7, 8], 6, 8)["duplicates"] == 1
    assert seq_faults([5, 6, 8], 6, 8)["gaps"] == 1
    assert seq_faults([5, 6, 7], 6, 8)["gaps"] == 1  # the tail is missing
    assert seq_faults([7, 8], 6, 8)["gaps"] == 1  # the first change after the page is missing
    assert seq_faults([], 6, 8)["gaps"] == 3
    assert seq_faults([5, 6, 7, 8, 9], 6, 8)["beyond"] == 1
    stored = [{"value": 50.0 + n, "ts": 1000 + n} for n in range(6)]  # seqs 20..25

    def draws(*seqs: int) -> list[Data]:
        return [{"value": 50.0 + s - 20, "ts": 1000 + s - 20, "seq": s} for s in seqs]

    clean_draws = dict.fromkeys(("random_out_of_order", "random_duplicates", "random_gaps", "random_corrupt"), 0)
    assert draw_faults(draws(22, 23, 24, 25), 1001, stored) == clean_draws
    assert draw_faults([*draws(22, 23, 24, 25), {"value": 1, "ts": 2000, "seq": 26}], 1001, stored) == clean_draws
    assert draw_faults([], 1005, stored) == clean_draws  # joined after the last draw
    assert draw_faults(draws(22, 24, 23, 25), 1001, stored)["random_out_of_order"] == 1
    assert draw_faults(draws(22, 23, 23, 24, 25), 1001, stored)["random_duplicates"] == 1
    assert draw_faults(draws(22, 23, 25), 1001, stored)["random_gaps"] == 1
    assert draw_faults(draws(22, 23, 24), 1001, stored)["random_gaps"] == 1  # the newest is missing
    assert draw_faults(draws(23, 24, 25), 1001, stored)["random_gaps"] == 1  # the first after the mark
    assert draw_faults([], 1001, stored)["random_gaps"] == 4
    wrong = [*draws(22, 23), {"value": 0.5, "ts": 1004, "seq": 24}, *draws(25)]
    assert draw_faults(wrong, 1001, stored)["random_corrupt"] == 1

    editors = {"e": EditorLog(9, ["update:1:e-1", "lock:9:locked", "lock:9:unlocked", "update:1:e-2"])}

    def update(n: int) -> tuple[str, Data]:
        return "csv_update", {"op": "update", "by": "e", "seq": n, "row": {"id": 1, "values": {"broker": f"e-{n}"}}}

    def lock(state: str) -> tuple[str, Data]:
        return "lock_status", {"id": 9, "state": state}

    assert editor_order_faults([update(1), lock("locked"), lock("unlocked"), update(2)], editors) == 0
    assert editor_order_faults([lock("unlocked"), update(2)], editors) == 0  # joined late: a tail
    assert editor_order_faults([lock("locked"), update(2)], editors) == 1  # the unlock was lost
    assert editor_order_faults([update(1), lock("unlocked"), lock("locked"), update(2)], editors) == 1
    assert editor_order_faults([update(1), lock("locked"), update(2), lock("unlocked")], editors) == 1


async def test_node_checks_are_exact(node: str) -> None:
    """The node scenario's own checks, on made-up streams: each fault is counted, clean is not."""
    result = await run_node(node, "fanout_receivers.mjs", {"TABLECAST_SELF_TEST": "1"}, timeout=30)
    assert result["cases"] >= 24, result


@pytest.mark.timeout(150)
async def test_broadcasts_stay_ordered_while_clients_join_on_every_transport(
    node: str, make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    srv = make_server(SETTINGS)
    editors = [await Editor.open(connect, srv.url, rows=[1 + 2 * i], toggle=2 + 2 * i) for i in range(3)]
    burster = await Editor.open(connect, srv.url, rows=[], toggle=0)
    since = (await editors[0].ok("fetch_csv", {"limit": 1}))["seq"]
    py_token, node_token = await login(srv.url, unique_user("reader")), await login(srv.url, unique_user("reader"))

    started, joined = asyncio.Event(), asyncio.Event()
    scenario = await NodeScenario.start(
        node,
        "fanout_receivers.mjs",
        {"TABLECAST_URL": srv.url, "TABLECAST_TOKEN": node_token, "TABLECAST_WAVES": "4", "TABLECAST_WAVE_MS": "600"},
    )
    receivers: list[Receiver] = []
    editing = asyncio.gather(*(e.run(started, joined) for e in editors), burster.run_bursts(joined, size=8))
    try:
        await asyncio.wait_for(started.wait(), ACK_TIMEOUT_S)
        receivers.extend(await python_waves(connect, srv.url, py_token, waves=4, pause_s=0.6))
        ready = await scenario.ready(timeout=60)
        joined.set()
        await editing

        final = (await editors[0].ok("fetch_csv", {"limit": 1}))["seq"]
        assert final == max(s for e in [*editors, burster] for s in e.acked_seqs)
        logs = {e.user: e.editor_log() for e in editors}
        wire_logs = {user: {"toggle": log.toggle, "log": log.log} for user, log in logs.items()}
        finishing = asyncio.create_task(
            scenario.finish({"final_seq": final, "since": since, "editors": wire_logs}, timeout=60)
        )
        history = await history_since(editors[0], since)
        assert sorted(history) == list(range(since + 1, final + 1))
        everyone = [*receivers, *(editor_receiver(e) for e in [*editors, burster])]
        kinds, examples = await settle_and_check(everyone, editors[0], final, history, logs)
        result = await finishing
    finally:
        editing.cancel()
        await close_all(receivers)
        await scenario.kill()

    assert not faulty(kinds), report(kinds, examples, result)
    assert set(kinds) == {*KINDS, "editor"}, kinds
    assert all(kinds[kind]["csv_updates"] > 0 for kind in kinds), kinds
    assert sum(kinds[kind]["acks"] for kind in KINDS) > 0, kinds
    problem = node_faults(result)
    assert problem is None, problem
    assert ready["sockets"] == 16, ready
    assert result["final_seq"] == final, result
    assert set(result["kinds"]) == {"websocket", "polling", "upgrade", "late_upgrade"}, result
    assert all(total["csv_updates"] > 0 and total["acks"] > 0 for total in result["kinds"].values()), result
    assert result["transports"]["polling"] == ["polling"] * 4, result
    for kind in ("websocket", "upgrade", "late_upgrade"):
        assert result["transports"][kind] == ["websocket"] * 4, result


async def commit_batches(url: str) -> tuple[float, float]:
    """(commits, changes committed) from the journal's group-commit histogram."""
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{url}/metrics")
        assert resp.status == 200
        text = await resp.text()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return samples["tablecast_journal_commit_batch_size_count"], samples["tablecast_journal_commit_batch_size_sum"]


@pytest.mark.timeout(120)
async def test_a_burst_of_concurrent_writes_reaches_every_receiver_in_order(
    node: str, make_server: Callable[..., ServerProcess], connect: Connect
) -> None:
    srv = make_server(SETTINGS)
    editors = [await Editor.open(connect, srv.url, rows=[1 + 3 * i, 2 + 3 * i, 3 + 3 * i], toggle=0) for i in range(4)]
    py_token, node_token = await login(srv.url, unique_user("reader")), await login(srv.url, unique_user("reader"))
    scenario = await NodeScenario.start(
        node,
        "fanout_receivers.mjs",
        {
            "TABLECAST_URL": srv.url,
            "TABLECAST_TOKEN": node_token,
            "TABLECAST_WAVES": "2",
            "TABLECAST_WAVE_MS": "0",
            "TABLECAST_KINDS": "websocket,polling,upgrade",
        },
    )
    receivers: list[Receiver] = []
    try:
        receivers.extend(await python_waves(connect, srv.url, py_token, waves=2, pause_s=0))
        await scenario.ready(timeout=60)
        since = (await editors[0].ok("fetch_csv", {"limit": 1}))["seq"]
        commits_before, changes_before = await commit_batches(srv.url)

        # Every write of a round is in flight at once: updates on each editor's rows, and adds,
        # which need no lock and so pile up for one commit.
        async def burst(editor: Editor, round_: int) -> list[int]:
            acks = await asyncio.gather(
                *(
                    editor.ok("update_csv", {"id": row, "values": update_values(editor.user, 10 * round_ + n)})
                    for row in editor.rows
                    for n in range(10)
                ),
                *(
                    editor.ok("add_csv", {"values": {"user": editor.user, "broker": f"burst-{round_}-{n}"}})
                    for n in range(15)
                ),
            )
            return [ack["row"]["version"] for ack in acks]

        seqs: list[int] = []
        for round_ in range(BURST_ROUNDS):
            seqs += [seq for acked in await asyncio.gather(*(burst(e, round_) for e in editors)) for seq in acked]
        final = since + len(seqs)
        assert sorted(seqs) == list(range(since + 1, final + 1))
        commits_after, changes_after = await commit_batches(srv.url)

        finishing = asyncio.create_task(
            scenario.finish({"final_seq": final, "since": since, "editors": {}}, timeout=60)
        )
        history = await history_since(editors[0], since)
        everyone = [*receivers, *(editor_receiver(e) for e in editors)]
        kinds, examples = await settle_and_check(everyone, editors[0], final, history, {})
        result = await finishing
    finally:
        await close_all(receivers)
        await scenario.kill()

    commits, changes = commits_after - commits_before, changes_after - changes_before
    assert changes == len(seqs), (changes, len(seqs))
    assert commits < changes, f"{changes} changes in {commits} commits: no commit carried more than one"
    assert not faulty(kinds), report(kinds, examples, result)
    assert set(kinds) == {*KINDS, "editor"}, kinds
    assert all(total["csv_updates"] >= len(seqs) for total in kinds.values()), kinds
    problem = node_faults(result)
    assert problem is None, problem
    assert result["transports"] == {
        "websocket": ["websocket"] * 2,
        "polling": ["polling"] * 2,
        "upgrade": ["websocket"] * 2,
    }, result
    assert all(total["csv_updates"] == 2 * len(seqs) for total in result["kinds"].values()), result
