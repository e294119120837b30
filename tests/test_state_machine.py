"""A hypothesis state machine against the real server: three users, each with zero to two
python-socketio sockets, lock, unlock, add, update (with and without a version, current or
stale), delete and fetch rows while the server is now and then stopped cleanly or killed with
SIGKILL and started again on the same DATA_DIR. After every step the server must agree with a
model written from PROTOCOL.md alone: every row and its version, the table `seq` (exactly +1 per
change, never back, not even after a restart), who holds which lock, which rows cool down, each
socket's `csv_update` and `lock_status` broadcasts, `fetch_csv {since}`, and the CSV on disk.

Timers are set so that nothing ends by itself during a run (lock TTL, cooldown and grace of an
hour): every answer is then decided by the steps alone, never by the clock. Locks are not
table state and the contract says nothing of them across a restart, so a restart may drop
them (an edited lock may turn into a cooldown) but never invent or re-own one; the model then
takes what the server lists.

`TABLECAST_LONG_TESTS=1` runs many more and longer examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from tests.conftest import Client, ServerProcess, login
from tests.hardening import INT64_MAX, INT64_MIN, canonical, check_envelope, csv_text, examples, tracebacks, verdict

T = TypeVar("T")

USERS = ("alice", "bob", "carol")
# The sample table the server writes on its first start, by column and inferred type.
KINDS = {
    "user": "text",
    "broker": "text",
    "API key": "text",
    "API secret": "text",
    "pnl": "number",
    "margin": "number",
    "max_risk": "integer",
}
HEADER = ["id", *KINDS]
COLUMNS = [{"name": "id", "type": "integer"}, *({"name": n, "type": k} for n, k in KINDS.items())]
MAX_CELL = 10000
HOUR_S = 3600.0
SETTINGS = {
    # An hour: no lock, cooldown or grace ends within a run, so no answer depends on the clock.
    "LOCK_TTL_S": str(HOUR_S),
    "EDIT_COOLDOWN_S": str(HOUR_S),
    "LOCK_GRACE_S": str(HOUR_S),
    "LOCK_SWEEP_S": "0.2",
    "CSV_FLUSH_S": "0.2",
    "RANDOM_INTERVAL_S": "1",  # the number stream is not under test: keep its noise low
    "RATE_LIMIT": "0",
    "LOGIN_RATE_LIMIT": "0",
}
MAX_SOCKETS = 2  # per user: a lock belongs to the user, whichever socket asks
RESTART_EVERY = 6  # steps between restarts at least: a restart costs seconds
WAIT_S = 30.0  # how long to wait for what must come eventually (broadcasts, the CSV checkpoint)

# ---- values ---------------------------------------------------------------------------------

_SAFE_CHAR = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n\r\t,\"'")
TEXTS = st.one_of(
    st.sampled_from(["", " pad ", "a,b", 'say "hi"', "line\nbreak", "\r\n", "=1+1", "-5", "007", "\u00e9", "NaN"]),
    st.text(_SAFE_CHAR, max_size=12),
)
INTS = st.one_of(st.integers(-1000, 1000), st.sampled_from([INT64_MIN, INT64_MAX]), st.integers(INT64_MIN, INT64_MAX))
NUMBERS = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6).map(lambda x: round(x, 2)))
BY_KIND: dict[str, st.SearchStrategy[Any]] = {"text": TEXTS, "integer": INTS, "number": NUMBERS}


@st.composite
def cells(draw: st.DrawFn, min_size: int) -> dict[str, Any]:
    """Valid cells for some columns: the machine is about state, tests/test_values.py about values."""
    names = draw(st.lists(st.sampled_from(list(KINDS)), min_size=min_size, max_size=3, unique=True))
    return {name: draw(st.none() | BY_KIND[KINDS[name]]) for name in names}


def stored(name: str, value: Any) -> Any:
    """The cell the server keeps for a valid `value` (`""` is null, `3` in a number column is 3.0)."""
    judged = verdict(KINDS[name], value, MAX_CELL)
    assert judged.code == "ok", (name, value)
    return judged.cell


# ---- the model ------------------------------------------------------------------------------


@dataclass
class Held:
    owner: str
    expires_at: int
    edited: bool = False  # a successful update under this lock: its end starts a cooldown


@dataclass(frozen=True)
class LockEvent:
    """A `lock_status` broadcast as the model predicts it; `expires_at` None: any int."""

    id: int
    state: str
    owner: str | None
    reason: str
    expires_at: int | None = None

    def matches(self, got: dict[str, Any]) -> bool:
        if (got.get("id"), got.get("state"), got.get("owner"), got.get("reason")) != (
            self.id,
            self.state,
            self.owner,
            self.reason,
        ):
            return False
        if self.state == "unlocked":
            return got.get("expires_at") is None
        return isinstance(got.get("expires_at"), int) and self.expires_at in (None, got["expires_at"])


@dataclass
class Model:
    rows: dict[int, dict[str, Any]]  # id -> the row as on the wire
    seq: int
    next_id: int  # ids are never reused: the highest id ever + 1
    held: dict[int, Held] = field(default_factory=dict)
    cooling: dict[int, str] = field(default_factory=dict)  # id -> the editor
    changes: list[dict[str, Any]] = field(default_factory=list)  # csv_update without `ts`
    lock_events: list[LockEvent] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)  # ids the machine aims at (a few, for contention)
    started_seq: int = 0  # seq at the last start: a `since` before it may be answered `reset`
    started_locks: int = 0  # len(lock_events) at the last start

    def page(self) -> list[dict[str, Any]]:
        return [self.rows[i] for i in sorted(self.rows)]

    def csv(self) -> bytes:
        return csv_text(HEADER, [[row["id"], *(row["values"][n] for n in KINDS)] for row in self.page()])

    def locks(self) -> list[dict[str, Any]]:
        """`fetch_csv` `locks` without `expires_at` (checked apart)."""
        listed = [{"id": i, "state": "locked", "owner": h.owner} for i, h in self.held.items()]
        listed += [{"id": i, "state": "cooldown", "owner": o} for i, o in self.cooling.items()]
        return sorted(listed, key=lambda lock: int(lock["id"]))

    def change(self, entry: dict[str, Any]) -> None:
        assert entry["seq"] == self.seq + 1, (entry, self.seq)  # +1 per change, strictly
        self.seq = entry["seq"]
        self.changes.append(entry)


# ---- sockets --------------------------------------------------------------------------------

_numbers = itertools.count(1)


class Sock:
    """One socket of a user; not a dataclass, so that hypothesis prints it short."""

    def __init__(self, user: str, client: Client, joined_seq: int, joined_locks: int, transport: str) -> None:
        self.user = user
        self.client = client
        self.joined_seq = joined_seq  # the table seq when it connected: it must see every change after that
        self.joined_locks = joined_locks  # len(model.lock_events) when it connected
        self.transport = transport
        self.number = next(_numbers)

    def __repr__(self) -> str:
        return f"<{self.user}#{self.number} {self.transport}>"


async def close(client: Client) -> None:
    with contextlib.suppress(Exception):
        await client.drop()
    # An aborted client's write loop may still open a new HTTP session for a last packet.
    writer = client.eio.write_loop_task
    if writer is not None:
        writer.cancel()
        with contextlib.suppress(BaseException):
            await writer
    # A socket the server dropped leaves the Engine.IO client's HTTP session open.
    http = getattr(client.eio, "http", None)
    if http is not None and not http.closed:
        await http.close()


async def eventually(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Wait for what the server must deliver sooner or later; the caller then asserts it."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def ok(ack: dict[str, Any]) -> dict[str, Any]:
    assert check_envelope(ack) == "ok", ack
    return ack


def error(ack: dict[str, Any], code: str) -> dict[str, Any]:
    assert check_envelope(ack) == code, (code, ack)
    err: dict[str, Any] = ack["error"]
    return err


def without_ts(change: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(change.get("ts"), int), change
    return {k: v for k, v in change.items() if k != "ts"}


# ---- the machine ----------------------------------------------------------------------------


class TableMachine(RuleBasedStateMachine):
    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # Set when a step fails, so teardown only cleans up and does not mask the failure.
        self.failed = False
        self.server = ServerProcess(data_dir, SETTINGS).start()
        self.tokens: dict[str, str] = {}
        self.sockets: list[Sock] = []
        self.steps_since_restart = 0
        try:
            self.model = self.run(self._open())
        except BaseException:  # hypothesis calls teardown only on a machine it got
            self.loop.run_until_complete(self._close_all())
            self.server.stop()
            self.close_loop()
            raise

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        try:
            return self.loop.run_until_complete(step)
        except BaseException:
            self.failed = True
            raise

    async def _open(self) -> Model:
        for user in USERS:
            self.tokens[user] = await login(self.server.url, user)
        first = await self._dial(USERS[0], "websocket")
        page = ok(await first.ask("fetch_csv", {"limit": 10000}))
        rows = {row["id"]: row for row in page["rows"]}
        model = Model(rows=rows, seq=page["seq"], next_id=max(rows) + 1, started_seq=page["seq"])
        assert page["locks"] == [], page["locks"]
        model.touched = set(sorted(rows)[:4])
        self.sockets.append(Sock(USERS[0], first, model.seq, 0, "websocket"))
        for user in USERS[1:]:
            await self._connect(user, model)
        return model

    async def _dial(self, user: str, transport: str) -> Client:
        client = Client()
        try:
            await client.connect(
                self.server.url, auth={"token": self.tokens[user]}, transports=[transport], wait_timeout=10
            )
        except BaseException:
            await close(client)
            raise
        return client

    async def _connect(self, user: str, model: Model, transport: str = "websocket") -> Sock:
        client = await self._dial(user, transport)
        sock = Sock(user, client, model.seq, len(model.lock_events), transport)
        self.sockets.append(sock)
        return sock

    async def _close_all(self) -> None:
        for sock in self.sockets:
            await close(sock.client)
        self.sockets.clear()

    def connected(self, user: str) -> list[Sock]:
        return [s for s in self.sockets if s.user == user]

    def teardown(self) -> None:
        try:
            if not self.failed:
                self.run(self._settled())
        finally:
            self.loop.run_until_complete(self._close_all())
            code = self.server.stop()
            self.close_loop()
        if not self.failed:
            # A clean stop writes the CSV: on disk it is the model, byte for byte.
            assert code == 0, self.server.log()[-3000:]
            assert self.on_disk() == self.model.csv()
            assert tracebacks(self.server.log()) == []

    def close_loop(self) -> None:
        """End what the clients left running (their write loops) before the loop goes."""
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()

        async def ended() -> None:
            await asyncio.gather(*pending, return_exceptions=True)

        self.loop.run_until_complete(ended())
        self.loop.close()

    def on_disk(self) -> bytes:
        return (self.server.data_dir / "backend_table.csv").read_bytes()

    # ---- targets ------------------------------------------------------------------------

    def target(self, data: st.DataObject, sock: Sock, *, mine: bool = False) -> int:
        """A row id among a few (so users collide), deleted ones included, or one never used;
        often one with a lock or a cooldown (with `mine`, one the actor holds), else nearly
        every answer would be the same refusal."""
        model = self.model
        ids = [*sorted(model.touched), model.next_id + 5]
        held = sorted(i for i, h in model.held.items() if h.owner == sock.user)
        hot = sorted({*model.held, *model.cooling})
        pick = data.draw(st.integers(0, 3), label="pick")
        if mine and held and pick > 0:
            ids = held
        elif hot and pick > 1:
            ids = hot
        return data.draw(st.sampled_from(ids), label="id")

    def actor(self, data: st.DataObject) -> Sock:
        return data.draw(st.sampled_from(self.sockets), label="socket")

    # ---- connections --------------------------------------------------------------------

    @precondition(lambda self: any(len(self.connected(u)) < MAX_SOCKETS for u in USERS))
    @rule(data=st.data(), transport=st.sampled_from(["websocket", "websocket", "polling"]))
    def connect(self, data: st.DataObject, transport: str) -> None:
        user = data.draw(st.sampled_from([u for u in USERS if len(self.connected(u)) < MAX_SOCKETS]), label="user")
        self.run(self._connect(user, self.model, transport))

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        # The grace is an hour: the user's locks stay theirs while they are away (PROTOCOL 5).
        sock = self.actor(data)
        self.sockets.remove(sock)
        self.run(self._disconnect(sock))

    async def _disconnect(self, sock: Sock) -> None:
        self.check_broadcasts(sock)
        if sock.transport == "websocket":
            # Politely; python-socketio's polling client would wait out a long-poll (~30 s) for it.
            await sock.client.disconnect()
        await close(sock.client)

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def reconnect(self, data: st.DataObject) -> None:
        sock = self.actor(data)
        self.sockets.remove(sock)
        self.run(self._reconnect(sock))

    async def _reconnect(self, sock: Sock) -> None:
        self.check_broadcasts(sock)
        await close(sock.client)  # abruptly, as a lost network does
        await self._connect(sock.user, self.model, sock.transport)

    # ---- locks --------------------------------------------------------------------------

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def lock_row(self, data: st.DataObject) -> None:
        sock = self.actor(data)
        row_id = self.target(data, sock)
        self.run(self._lock_row(sock, row_id))

    async def _lock_row(self, sock: Sock, row_id: int) -> None:
        model = self.model
        ack = await sock.client.ask("lock_row", {"id": row_id})
        held = model.held.get(row_id)
        if row_id not in model.rows:
            error(ack, "not_found")
        elif held is not None and held.owner != sock.user:
            err = error(ack, "locked")
            assert (err["owner"], err["expires_at"]) == (held.owner, held.expires_at), (err, held)
        elif row_id in model.cooling:
            retry = error(ack, "cooldown")["retry_after"]
            assert isinstance(retry, int | float)
            assert 0 < retry <= HOUR_S, retry
        else:
            assert set(ok(ack)) == {"ok", "lock"}, ack
            lock = ack["lock"]
            assert set(lock) == {"id", "owner", "expires_at"}, lock
            assert (lock["id"], lock["owner"]) == (row_id, sock.user), lock
            assert isinstance(lock["expires_at"], int), lock
            if held is not None:  # a renewal keeps the lock, its edit mark included
                held.expires_at = lock["expires_at"]
                reason = "renewed"
            else:
                model.held[row_id] = Held(sock.user, lock["expires_at"])
                reason = "acquired"
            model.lock_events.append(LockEvent(row_id, "locked", sock.user, reason, lock["expires_at"]))

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def unlock_row(self, data: st.DataObject) -> None:
        sock = self.actor(data)
        row_id = self.target(data, sock, mine=True)
        self.run(self._unlock_row(sock, row_id))

    async def _unlock_row(self, sock: Sock, row_id: int) -> None:
        model = self.model
        ack = await sock.client.ask("unlock_row", {"id": row_id})
        held = model.held.get(row_id)
        if row_id not in model.rows:
            error(ack, "not_found")
        elif held is not None and held.owner != sock.user:
            error(ack, "not_owner")
        elif held is None:
            assert set(ok(ack)) == {"ok"}, ack  # nobody holds it (free or cooling): nothing changes
        else:
            assert set(ok(ack)) == {"ok"}, ack
            del model.held[row_id]
            if held.edited:
                model.cooling[row_id] = sock.user
                model.lock_events.append(LockEvent(row_id, "cooldown", sock.user, "released"))
            else:
                model.lock_events.append(LockEvent(row_id, "unlocked", sock.user, "released"))

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data(), values=cells(min_size=1), then=st.sampled_from(["update", "update, unlock", "delete"]))
    def edit_cycle(self, data: st.DataObject, values: dict[str, Any], then: str) -> None:
        """lock_row, then update_csv (and unlock_row) or delete_csv, each judged as on its own:
        what a client does, and what reaches edits, conflicts and cooldowns even in the examples
        where hypothesis's swarm testing has switched the lone lock_row rule off."""
        sock = self.actor(data)
        row_id = self.target(data, sock)
        version = self.version_for(data, row_id)
        self.run(self._edit_cycle(sock, row_id, values, version, then))

    async def _edit_cycle(
        self, sock: Sock, row_id: int, values: dict[str, Any], version: int | None, then: str
    ) -> None:
        await self._lock_row(sock, row_id)
        if then == "delete":
            await self._delete_csv(sock, row_id, version)
            return
        await self._update_csv(sock, row_id, values, version)
        if then == "update, unlock":
            await self._unlock_row(sock, row_id)

    # ---- table writes -------------------------------------------------------------------

    def version_for(self, data: st.DataObject, row_id: int) -> int | None:
        """No version, the current one, or a stale one (any other: the contract says `conflict`)."""
        row = self.model.rows.get(row_id)
        current = row["version"] if row is not None else self.model.seq
        stale = sorted({v for v in (0, current - 1, current + 1) if v >= 0 and v != current})
        choice = data.draw(st.sampled_from(["none", "current", "stale"]), label="version kind")
        if choice == "none":
            return None
        return current if choice == "current" else data.draw(st.sampled_from(stale), label="stale version")

    def guard(self, ack: dict[str, Any], sock: Sock, row_id: int) -> bool:
        """The state errors of update/delete, in the documented order; True when none applies."""
        model = self.model
        held = model.held.get(row_id)
        if row_id not in model.rows:
            error(ack, "not_found")
        elif held is None:
            error(ack, "lock_required")  # free or cooling: nobody's lock
        elif held.owner != sock.user:
            err = error(ack, "locked")
            assert (err["owner"], err["expires_at"]) == (held.owner, held.expires_at), (err, held)
        else:
            return True
        return False

    def stale(self, ack: dict[str, Any], row_id: int, version: int | None) -> bool:
        row = self.model.rows[row_id]
        if version is None or version == row["version"]:
            return False
        err = error(ack, "conflict")
        assert canonical(err["row"]) == canonical(row), (err, row)
        return True

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data(), values=cells(min_size=1))
    def update_csv(self, data: st.DataObject, values: dict[str, Any]) -> None:
        sock = self.actor(data)
        row_id = self.target(data, sock, mine=True)
        version = self.version_for(data, row_id)
        self.run(self._update_csv(sock, row_id, values, version))

    async def _update_csv(self, sock: Sock, row_id: int, values: dict[str, Any], version: int | None) -> None:
        payload: dict[str, Any] = {"id": row_id, "values": values}
        if version is not None:
            payload["version"] = version
        ack = await sock.client.ask("update_csv", payload)
        model = self.model
        if not self.guard(ack, sock, row_id) or self.stale(ack, row_id, version):
            return
        old = model.rows[row_id]
        expected = {
            "id": row_id,
            "version": model.seq + 1,
            "values": {**old["values"], **{n: stored(n, v) for n, v in values.items()}},
        }
        assert set(ok(ack)) == {"ok", "row"}, ack
        row = ack["row"]
        assert canonical(row) == canonical(expected), (row, expected)
        before = {n: old["values"][n] for n in values}
        model.change({"op": "update", "seq": row["version"], "by": sock.user, "row": row, "before": before})
        model.rows[row_id] = row
        model.held[row_id].edited = True

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def delete_csv(self, data: st.DataObject) -> None:
        sock = self.actor(data)
        row_id = self.target(data, sock, mine=True)
        version = self.version_for(data, row_id)
        self.run(self._delete_csv(sock, row_id, version))

    async def _delete_csv(self, sock: Sock, row_id: int, version: int | None) -> None:
        payload: dict[str, Any] = {"id": row_id} if version is None else {"id": row_id, "version": version}
        ack = await sock.client.ask("delete_csv", payload)
        model = self.model
        if not self.guard(ack, sock, row_id) or self.stale(ack, row_id, version):
            return
        assert ok(ack) == {"ok": True, "id": row_id}, ack
        old = model.rows.pop(row_id)
        model.change({"op": "delete", "seq": model.seq + 1, "by": sock.user, "id": row_id, "before": old["values"]})
        del model.held[row_id]  # ends the lock, with no cooldown however edited
        model.lock_events.append(LockEvent(row_id, "unlocked", sock.user, "deleted"))

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data(), values=cells(min_size=0))
    def add_csv(self, data: st.DataObject, values: dict[str, Any]) -> None:
        self.run(self._add_csv(self.actor(data), values))

    async def _add_csv(self, sock: Sock, values: dict[str, Any]) -> None:
        ack = await sock.client.ask("add_csv", {"values": values})
        model = self.model
        expected = {
            "id": model.next_id,
            "version": model.seq + 1,
            "values": {n: stored(n, values[n]) if n in values else None for n in KINDS},
        }
        assert set(ok(ack)) == {"ok", "row"}, ack
        row = ack["row"]
        assert canonical(row) == canonical(expected), (row, expected)
        model.change({"op": "add", "seq": row["version"], "by": sock.user, "row": row})
        model.rows[row["id"]] = row
        model.next_id += 1
        model.touched.add(row["id"])

    # ---- reads --------------------------------------------------------------------------

    @precondition(lambda self: bool(self.sockets))
    @rule(data=st.data())
    def fetch_since(self, data: st.DataObject) -> None:
        model = self.model
        seqs = sorted({model.started_seq, model.seq} | {c["seq"] for c in model.changes})
        since = data.draw(st.sampled_from(seqs), label="since")
        self.run(self._fetch_since(self.actor(data), since))

    async def _fetch_since(self, sock: Sock, since: int) -> None:
        model = self.model
        ack = ok(await sock.client.ask("fetch_csv", {"since": since, "limit": 10000}))
        if "changes" in ack:
            assert set(ack) == {"ok", "changes", "seq"}, ack
            assert ack["seq"] == model.seq, (ack["seq"], model.seq)
            expected = [c for c in model.changes if c["seq"] > since]
            assert canonical([without_ts(c) for c in ack["changes"]]) == canonical(expected)
        else:
            # Only a `since` from before the last restart may be answered with the whole page.
            assert since < model.started_seq, ("reset for a since the server must still hold", since, ack)
            assert ack.get("reset") is True, ack
            assert ack["seq"] == model.seq, (ack["seq"], model.seq)
            assert canonical(ack["rows"]) == canonical(model.page())

    # ---- restarts -----------------------------------------------------------------------

    @precondition(lambda self: self.steps_since_restart >= RESTART_EVERY)
    @rule(kill=st.booleans())
    def restart(self, kill: bool) -> None:
        self.run(self._restart(kill))

    async def _restart(self, kill: bool) -> None:
        await self._settled()
        if kill:
            self.server.kill()  # no cleanup at all: every acked change must come from the journal
            # Whatever moment the kill hit, the CSV on disk is whole: a header and full records.
            records = list(csv.reader(io.StringIO(self.on_disk().decode(), newline="")))
            assert records[0] == HEADER, records[:1]
            assert all(len(record) == len(HEADER) for record in records), records
        else:
            assert self.server.stop() == 0, self.server.log()[-3000:]
            # A clean stop writes the CSV: on disk it is the model, byte for byte.
            assert self.on_disk() == self.model.csv()
        await self._close_all()
        assert tracebacks(self.server.log()) == []
        self.server.start()
        model = self.model
        model.started_seq, model.started_locks = model.seq, len(model.lock_events)
        for user in USERS:  # everyone comes back, each on one socket
            await self._connect(user, model)
        page = ok(await self.sockets[0].client.ask("fetch_csv", {"limit": 10000}))
        # Served as acked, at the seq the last change left (a restart is no table change).
        assert page["seq"] == model.seq, (page["seq"], model.seq)
        assert canonical(page["rows"]) == canonical(model.page())
        self.resync_locks(page["locks"])
        if kill:
            # The journal's replay reaches the CSV within CSV_FLUSH_S, a few seconds at most.
            written = model.csv()
            await eventually(lambda: self.on_disk() == written)
            assert self.on_disk() == written
        self.steps_since_restart = 0

    def resync_locks(self, listed: list[dict[str, Any]]) -> None:
        """After a restart the server may have dropped locks (an edited one may have cooled
        down), but every lock or cooldown it lists must be one the model had, with its owner."""
        model = self.model
        held: dict[int, Held] = {}
        cooling: dict[int, str] = {}
        for lock in listed:
            row_id, state, owner = lock["id"], lock["state"], lock["owner"]
            before = model.held.get(row_id)
            if state == "locked":
                assert before is not None, lock
                assert before.owner == owner, (lock, before)
                held[row_id] = Held(owner, lock["expires_at"], before.edited)
            else:
                assert state == "cooldown", lock
                assert model.cooling.get(row_id) == owner or (
                    before is not None and before.owner == owner and before.edited
                ), (lock, before, model.cooling)
                cooling[row_id] = owner
        model.held, model.cooling = held, cooling

    # ---- what must hold after every step --------------------------------------------------

    @invariant()
    def table_matches(self) -> None:
        self.steps_since_restart += 1
        if self.sockets:
            self.run(self._table_matches(self.sockets[0]))

    async def _table_matches(self, sock: Sock) -> None:
        model = self.model
        page = ok(await sock.client.ask("fetch_csv", {"limit": 10000}))
        assert page["columns"] == COLUMNS, page["columns"]
        assert page["seq"] == model.seq, (page["seq"], model.seq)
        assert page["total"] == len(model.rows)
        assert canonical(page["rows"]) == canonical(model.page())
        locks = page["locks"]
        assert [{k: lk[k] for k in ("id", "state", "owner")} for lk in locks] == model.locks(), locks
        for lk in locks:
            assert isinstance(lk["expires_at"], int), lk
            if lk["state"] == "locked":
                assert lk["expires_at"] == model.held[lk["id"]].expires_at, lk
        for each in self.sockets:
            self.check_broadcasts(each)

    def check_broadcasts(self, sock: Sock, complete: bool = False) -> None:
        """What one socket has received so far is in order and as predicted; with `complete`,
        it is everything since it connected. A broadcast of a change from just before the
        connect may still arrive (clients skip `seq` they have): it is allowed, not required,
        but never one from before the server's last start."""
        model = self.model
        updates = sock.client.of("csv_update")
        seqs = [u["seq"] for u in updates]
        assert seqs == sorted(set(seqs)), (sock, seqs)  # each once, in seq order
        recent = [without_ts(u) for u in updates if u["seq"] > sock.joined_seq]
        expected = [c for c in model.changes if c["seq"] > sock.joined_seq]
        wanted = expected if complete else expected[: len(recent)]
        assert canonical(recent) == canonical(wanted), (sock, recent, wanted)
        known = {canonical(c) for c in model.changes if c["seq"] > model.started_seq}
        for u in updates:
            if u["seq"] <= sock.joined_seq:
                assert canonical(without_ts(u)) in known, (sock, u)
        assert self.lock_starts(sock, complete), (sock, sock.client.of("lock_status"), model.lock_events)

    def lock_starts(self, sock: Sock, complete: bool) -> list[int]:
        """Where in the model's lock events the socket's `lock_status` broadcasts can start:
        they are a contiguous run of them, starting at or before its connect (and not before
        the server's last start), and with `complete` running to the last."""
        statuses = sock.client.of("lock_status")
        events = self.model.lock_events
        return [
            start
            for start in range(max(self.model.started_locks, sock.joined_locks - len(statuses)), sock.joined_locks + 1)
            if start + len(statuses) <= len(events)
            and all(e.matches(s) for e, s in zip(events[start:], statuses, strict=False))
            and (not complete or start + len(statuses) == len(events))
        ]

    def delivered(self, sock: Sock) -> bool:
        updates = [u for u in sock.client.of("csv_update") if u["seq"] > sock.joined_seq]
        owed = [c for c in self.model.changes if c["seq"] > sock.joined_seq]
        return len(updates) >= len(owed) and bool(self.lock_starts(sock, complete=True))

    async def _settled(self) -> None:
        """Every socket has had every broadcast it is owed, and nothing else."""
        for sock in self.sockets:
            await eventually(functools.partial(self.delivered, sock))
            self.check_broadcasts(sock, complete=True)


@pytest.mark.timeout(examples(600, 7200))
def test_the_server_follows_the_model(tmp_path: Path) -> None:
    runs = itertools.count()

    class Machine(TableMachine):
        def __init__(self) -> None:  # a fresh server and DATA_DIR per example: examples share nothing
            super().__init__(tmp_path / f"data{next(runs)}")

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples(5, 100),
            stateful_step_count=examples(20, 60),
            deadline=None,
            database=None,  # each example starts its own server: nothing to replay cheaply
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
