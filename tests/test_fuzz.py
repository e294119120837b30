"""Fuzzing of every client->server Socket.IO event of `protocol.events.EVENTS` and of every REST
route that takes input, against one running server.

Inputs: wrong types, nulls, deep lists and objects, huge numbers (integers of hundreds of
digits, 1e999, NaN), huge strings, any code point including lone surrogates (which JSON carries
as escapes), extra and missing fields, payloads that are no object, null, none at all or
several. Socket.IO events go out from an authenticated python-socketio client (with an ack and
fire-and-forget), from a guest client, and over a websocket spoken by hand (`RawSocket`) for
what no client library sends; REST requests carry raw bodies, content types, query strings and
`Authorization` headers.

Every answer is the documented envelope: an error code of `protocol.errors` that the input
calls for (REST: with that code's HTTP status), or an ok result of the documented shape. A
mutating event only ever gets input that breaks its payload model or the value rules (only
`register` is also sent valid payloads, and the users it creates are counted), so after each
event's fuzz the table (every row and `seq`), the locks, the users and the broadcasts seen are
exactly as before, the known users still log in and the log holds no traceback.

What lies before any handler is spelled out apart, so each event's fuzz judges the event:
event names that python-socketio reserves or cannot look up, packets nested past the JSON
decoder's recursion limit, request lines and headers past aiohttp's 8190 bytes.

`examples(40, 2000)` examples per event and route; the counts are printed at the end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from yarl import URL

from protocol.errors import HTTP_STATUS, ErrorEnvelope
from protocol.events import EVENTS
from protocol.results import FetchResult, Records, RegisterResult
from protocol.values import BACKUP_NAME_PATTERN, LONE_SURROGATE, MAX_ROW_ID, MAX_SAFE_INTEGER, OHLC_INTERVALS
from server.settings import Settings
from tests.conftest import Client, ServerProcess, login, unique_user
from tests.hardening import (
    SOCKET_INT_CHARS,
    Dropped,
    RawSocket,
    canonical,
    cell_values,
    check_envelope,
    examples,
    floats,
    received,
    socket_ints,
    tracebacks,
    verdict,
)

T = TypeVar("T")

pytestmark = pytest.mark.timeout(examples(300, 14400))

MAX_PAYLOAD = Settings().max_payload_bytes  # the shared server runs with the defaults
MAX_CELL = Settings().max_cell_chars
CLIENT_FRAME_MAX = MAX_PAYLOAD - 1024  # what the python client may send without being cut off
ANSWER_S = 10.0  # a guard against a hang, not a speed requirement: answers take milliseconds
# Past about 960 levels the packet decoder itself fails (test_a_packet_nested_past_the_json_
# decoders_limit); the per-event fuzz stays below, so it judges each event's own handling.
RAW_DEPTH = 400
CLIENT_DEPTH = 100
PASSWORD = "fuzz-secret-pw"
INVALID = frozenset({"invalid_input", "payload_too_large"})
OK = frozenset({"ok"})
UNAUTHORIZED = frozenset({"unauthorized"})
# Events that change the table, the locks, the users or the socket's identity: they only ever
# get input that breaks their model or the value rules (register is counted instead).
INVALID_ONLY = frozenset(
    {"login", "logout", "add_csv", "update_csv", "delete_csv", "lock_row", "unlock_row", "restore_backup"}
)
CHANNELS = ("member", "member", "guest", "fire", "raw", "raw_guest")
FUZZ = settings(
    max_examples=examples(40, 2000),
    deadline=None,
    database=None,  # nothing written into the work tree; a failure prints its example
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
COUNTS: Counter[str] = Counter()  # examples run, by event or route
OUTCOMES: Counter[tuple[str, str]] = Counter()  # (event or route, "ok", an error code, "closed" or "no ack")

ERROR_ENVELOPE: TypeAdapter[Any] = TypeAdapter(ErrorEnvelope)
RESULTS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(spec.result) for name, spec in EVENTS.items()}
FETCH_RESULT: TypeAdapter[Any] = TypeAdapter(FetchResult)
RECORDS: TypeAdapter[Any] = TypeAdapter(Records)
REGISTER_RESULT: TypeAdapter[Any] = TypeAdapter(RegisterResult)


# ---- one running server, driven from a loop that keeps running between examples ----------------


@dataclass
class Lab:
    server: ServerProcess
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None
    fuzzer: str = field(default_factory=lambda: unique_user("fuzz"))
    holder: str = field(default_factory=lambda: unique_user("holder"))
    token: str = ""
    other: str = ""  # a token of a third user, for the tests that find the server's lifecycle bugs
    revoked: str = ""
    columns: dict[str, str] = field(default_factory=dict)  # name -> type, `id` left out
    users: set[str] = field(default_factory=set)  # every username the server should hold
    clients: dict[str, Client] = field(default_factory=dict)
    _http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        # Socket.IO clients answer heartbeats and take broadcasts only while their loop runs.
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()
        self.run(self._open())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(ANSWER_S * 6)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    async def _open(self) -> None:
        self._http = aiohttp.ClientSession()
        self.token = await login(self.url, self.fuzzer, PASSWORD)
        holder_token = await login(self.url, self.holder, PASSWORD)
        self.other = await login(self.url, unique_user("other"), PASSWORD)
        gone = await login(self.url)
        resp = await self.http.post(f"{self.url}/api/logout", headers={"Authorization": f"Bearer {gone}"})
        assert resp.status == 200
        self.revoked = gone
        for name, token in (("member", self.token), ("guest", None), ("holder", holder_token)):
            client = Client()
            self.clients[name] = client
            await client.connect(
                self.url, auth={"token": token} if token else None, transports=["websocket"], wait_timeout=10
            )
        # A lock of the fuzzer's own and one of another user's: a bad payload that slipped
        # through would change, end or renew one of them.
        assert (await self.clients["member"].ask("lock_row", {"id": 1}))["ok"] is True
        assert (await self.clients["holder"].ask("lock_row", {"id": 2}))["ok"] is True
        page = await self.clients["member"].ask("fetch_csv", {"limit": 1})
        self.columns = {c["name"]: c["type"] for c in page["columns"] if c["name"] != "id"}
        self.users = set(self.usernames())

    async def _close(self) -> None:
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                await client.disconnect()
        await self.http.close()

    def usernames(self) -> set[str]:
        path = self.server.data_dir / "backend.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            return {str(row[0]) for row in db.execute("SELECT username FROM users")}


@dataclass(frozen=True)
class State:
    rows: str
    seq: int
    total: int
    locks: str
    broadcasts: int  # csv_update and lock_status events the holder has received


async def state(lab: Lab) -> State:
    page = await lab.clients["holder"].ask("fetch_csv", {"limit": 10000})
    assert page["ok"] is True, page
    seen = len(lab.clients["holder"].of("csv_update")) + len(lab.clients["holder"].of("lock_status"))
    return State(canonical(page["rows"]), page["seq"], page["total"], canonical(page["locks"]), seen)


async def still_the_same(lab: Lab, before: State) -> None:
    after = await state(lab)
    assert after.seq == before.seq, "the table seq moved"
    assert after.total == before.total
    assert after.rows == before.rows, "a row changed"
    assert after.locks == before.locks, f"the locks changed: {before.locks} -> {after.locks}"
    assert after.broadcasts == before.broadcasts, lab.clients["holder"].events[-5:]
    assert lab.usernames() == lab.users, "users were created or lost"
    for username in (lab.fuzzer, lab.holder):
        await login(lab.url, username, PASSWORD)  # asserts 200
    resp = await lab.http.get(f"{lab.url}/api/fetch_csv?limit=1", headers=bearer(lab.token))
    assert resp.status == 200, "the fuzzer's token no longer works"
    resp.release()
    pong = await lab.clients["member"].ask("ping")
    assert pong["ok"] is True


def errors_in(log: str) -> str:
    """The last line of each traceback in `log`, for an assertion message."""
    found = []
    for line in tracebacks(log):
        text = line
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            text = str(record.get("error") or record.get("event"))
        last = text.strip().splitlines()[-1][:300]
        if not last.startswith("Traceback"):  # a plain-text copy of a record's traceback
            found.append(last)
    return "\n".join(["tracebacks in the server log:", *found])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def lab(server: ServerProcess) -> Iterator[Lab]:
    lab = Lab(server)
    lab.start()
    yield lab
    lab.stop()


async def seq_and_locks(lab: Lab) -> tuple[int, str]:
    page = await lab.clients["holder"].ask("fetch_csv", {"limit": 1})
    return page["seq"], canonical(page["locks"])


async def renew_locks(lab: Lab) -> None:
    """Renew both locks (LOCK_TTL_S is 15 minutes; a long run takes longer), and wait for the
    holder to see both renewals, so the broadcasts counted before a fuzz are all in."""
    for name, row in (("member", 1), ("holder", 2)):
        ack = await lab.clients[name].ask("lock_row", {"id": row})
        assert ack["ok"] is True, ack
        expires = ack["lock"]["expires_at"]

        def renewed(data: Any, row: int = row, expires: int = expires) -> bool:
            return bool(data["id"] == row and data["expires_at"] == expires)

        await lab.clients["holder"].wait_for("lock_status", renewed)


def fuzzed(lab: Lab, name: str, strategy: st.SearchStrategy[T], check: Callable[[T], None]) -> None:
    """Run `check` on examples of `strategy`, then require the server's state to be as it was
    and no traceback in the log since. The seq, the locks and the number of users are also
    checked after each example, so a change is reported with the example that made it."""
    lab.users = lab.usernames()  # a failure before this test is not this test's
    lab.run(renew_locks(lab))
    before = lab.run(state(lab))
    log_start = len(lab.server.log())

    @FUZZ
    @given(case=strategy)
    def one(case: T) -> None:
        COUNTS[name] += 1
        check(case)
        assert lab.run(seq_and_locks(lab)) == (before.seq, before.locks), f"changed the table or a lock: {case!r}"
        assert len(lab.usernames()) == len(lab.users), f"made a user it should not have: {case!r}"

    one()
    lab.run(still_the_same(lab, before))
    assert not tracebacks(lab.server.log()[log_start:]), errors_in(lab.server.log()[log_start:])


# ---- values of every JSON type ----------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())
SMALL_TEXT = st.text(ANY_CHAR, max_size=12)
# Over a client's JSON they travel as \u escapes: up to 6 bytes a character.
HUGE_TEXT = st.sampled_from([("x", 20_000), ("é", 3_000), ("\ud800", 2_000), ("😀", 2_000), ("y", MAX_CELL + 1)]).map(
    lambda p: p[0] * p[1]
)
EXTRA_KEYS = st.one_of(
    SMALL_TEXT, st.sampled_from(["", "__proto__", "constructor", "ok", "error", "ID", " id", "values ", "\ud800"])
)


def leaves(binary: bool) -> st.SearchStrategy[Any]:
    options: list[st.SearchStrategy[Any]] = [
        st.none(),
        st.booleans(),
        socket_ints(),
        floats(),
        SMALL_TEXT,
        HUGE_TEXT,
    ]
    if binary:  # binary attachments: only a client library sends them
        options.append(st.binary(max_size=16))
    return st.one_of(options)


def nest(leaf: Any, depth: int, as_object: bool) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if as_object else [leaf]
    return leaf


def anything(binary: bool = True) -> st.SearchStrategy[Any]:
    leaf = leaves(binary)
    return st.one_of(
        st.recursive(
            leaf,
            lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(EXTRA_KEYS, kids, max_size=3)),
            max_leaves=8,
        ),
        st.builds(nest, leaf, st.integers(1, CLIENT_DEPTH), st.booleans()),
    )


def non_objects(binary: bool = True) -> st.SearchStrategy[Any]:
    return anything(binary).filter(lambda v: not isinstance(v, dict) and v is not None)


# ---- payload models, as the contract states them ----------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    valid: st.SearchStrategy[Any]
    invalid: st.SearchStrategy[Any] | None  # None: every value is valid
    required: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Model:
    fields: Mapping[str, FieldSpec]
    extra: bool = False  # unknown fields allowed (ohlc-stream)
    rule: Callable[[dict[str, Any]], bool] = lambda payload: True  # across fields, each valid

    def accepts_empty(self) -> bool:
        return not any(spec.required for spec in self.fields.values()) and self.rule({})


def bad_ints(lo: int, hi: int, *, nullable: bool = False) -> st.SearchStrategy[Any]:
    out_of_range = st.one_of(
        st.integers(-(10**98), lo - 1), st.integers(hi + 1, 10**99), st.sampled_from([lo - 1, hi + 1])
    )
    wrong = anything().filter(lambda v: type(v) is not int and not (nullable and v is None))
    return st.one_of(out_of_range, wrong)


def ints(lo: int, hi: int, *, nullable: bool = False) -> FieldSpec:
    valid = st.integers(lo, hi)
    return FieldSpec(
        st.one_of(valid, st.none()) if nullable else valid, bad_ints(lo, hi, nullable=nullable), integer=True
    )


def wrong_for_text(nullable: bool) -> st.SearchStrategy[Any]:
    return anything().filter(lambda v: not isinstance(v, str) and not (nullable and v is None))


def around(middle: st.SearchStrategy[str], edges: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, m, b: a + m + b, edges, middle, edges)


USERNAME_CHARS = "ABCXYZabcxyz0189_.@+-"
USERNAMES = st.text(st.sampled_from(USERNAME_CHARS), min_size=1, max_size=64)
BAD_USERNAMES = st.one_of(
    st.sampled_from(["", "a" * 65, "abc\n", "abc ", " abc", "ab\x00c", "ab/c", "é"]),
    around(ANY_CHAR.filter(lambda c: not re.fullmatch(r"[A-Za-z0-9_.@+-]", c)), st.text(USERNAME_CHARS, max_size=8)),
    wrong_for_text(False),
)
PASSWORDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)  # no lone surrogates
BAD_PASSWORDS = st.one_of(
    st.sampled_from(["", "p" * 1025]),
    around(st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"]), st.text("abc", max_size=5)),
    wrong_for_text(False),
)
BACKUP_NAMES = st.builds(
    "backend_table-{:08d}T{:06d}.{:03d}Z-seq{}-rows{}.csv".format,
    st.integers(0, 10**8 - 1),
    st.integers(0, 10**6 - 1),
    st.integers(0, 999),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
BAD_BACKUP_NAMES = st.one_of(
    st.text(ANY_CHAR, max_size=40).filter(lambda s: re.fullmatch(BACKUP_NAME_PATTERN, s) is None),
    BACKUP_NAMES.map(lambda n: n + "\n"),
    BACKUP_NAMES.map(lambda n: "../" + n),
    BACKUP_NAMES.map(lambda n: n.replace("-rows", "-rows" + "1" * 250)),  # the form, but over 255 characters
    st.sampled_from(["backend.db", "/etc/passwd", "backend_table.csv", "secret.key"]),
    wrong_for_text(True),
)
ROW_IDS = st.one_of(st.sampled_from([1, 2, 3, 100, 101, 99_999]), st.integers(1, MAX_ROW_ID))


def cells(kind: str, ok: bool) -> st.SearchStrategy[Any]:
    """Cells for a column of `kind` that the value rules take (`ok`) or refuse."""
    return cell_values(MAX_CELL).filter(lambda v: (verdict(kind, received(v), MAX_CELL).code == "ok") is ok)


def good_values(columns: Mapping[str, str], min_size: int) -> st.SearchStrategy[dict[str, Any]]:
    names = st.lists(st.sampled_from(sorted(columns)), min_size=min_size, max_size=3, unique=True)
    return names.flatmap(lambda chosen: st.fixed_dictionaries({n: cells(columns[n], True) for n in chosen}))


def bad_values(columns: Mapping[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """`values` with at least one cell the rules refuse: of the wrong type or range, too long,
    binary, under an unknown column or under `id`."""
    column = st.sampled_from(sorted(columns))
    bad_entry = st.one_of(
        column.flatmap(lambda n: st.tuples(st.just(n), cells(columns[n], False))),
        st.tuples(column, st.binary(max_size=8)),
        st.tuples(EXTRA_KEYS.filter(lambda k: k not in columns), anything()),
        st.tuples(st.just("id"), anything()),
    )
    return st.builds(lambda good, bad: {**good, bad[0]: bad[1]}, good_values(columns, 0), bad_entry)


def models(columns: Mapping[str, str]) -> dict[str, Model]:
    row_id = FieldSpec(ROW_IDS, bad_ints(1, MAX_ROW_ID), required=True, integer=True)
    version = ints(0, MAX_SAFE_INTEGER, nullable=True)
    credentials = Model(
        {"username": FieldSpec(USERNAMES, BAD_USERNAMES, True), "password": FieldSpec(PASSWORDS, BAD_PASSWORDS, True)}
    )
    not_a_dict = anything().filter(lambda v: not isinstance(v, dict))
    intervals = sorted(OHLC_INTERVALS)
    subscription = Model(
        {
            "stream": FieldSpec(
                st.sampled_from(["random_number", "ohlc"]),
                st.one_of(st.text(ANY_CHAR, max_size=14), wrong_for_text(False)).filter(
                    lambda v: v not in ("random_number", "ohlc")
                ),
                required=True,
            ),
            "interval": FieldSpec(
                st.one_of(st.none(), st.sampled_from(intervals)),
                st.one_of(st.text(ANY_CHAR, max_size=4), wrong_for_text(True)).filter(lambda v: v not in intervals),
            ),
            "history": ints(0, 1000),
        },
        # An interval exactly for the ohlc stream.
        rule=lambda p: (p.get("interval") is None) == (p.get("stream") == "random_number"),
    )
    empty = Model({})
    return {
        "register": credentials,
        "login": credentials,
        "ping": empty,
        "logout": empty,
        "fetch_csv": Model(
            {
                "offset": ints(0, MAX_SAFE_INTEGER),
                "limit": ints(1, 10000),
                "since": ints(0, MAX_SAFE_INTEGER, nullable=True),
            }
        ),
        "add_csv": Model(
            {"values": FieldSpec(good_values(columns, 0), st.one_of(not_a_dict, bad_values(columns)), True)}
        ),
        "update_csv": Model(
            {
                "id": row_id,
                "values": FieldSpec(
                    good_values(columns, 1), st.one_of(not_a_dict, st.just({}), bad_values(columns)), True
                ),
                "version": version,
            }
        ),
        "delete_csv": Model({"id": row_id, "version": version}),
        "lock_row": Model({"id": row_id}),
        "unlock_row": Model({"id": row_id}),
        "list_backups": empty,
        "restore_backup": Model({"name": FieldSpec(st.one_of(st.none(), BACKUP_NAMES), BAD_BACKUP_NAMES)}),
        "numbers": Model({"limit": ints(1, 10000)}),
        "subscribe": subscription,
        "unsubscribe": subscription,
        "ohlc-stream": Model({"message": FieldSpec(anything(), None)}, extra=True),
    }


EXTRA = "\x00extra"  # a marker, never a field name


@st.composite
def objects(draw: st.DrawFn, model: Model, broken: bool = False, clean: bool = False) -> tuple[dict[str, Any], bool]:
    """An object payload and whether it is of the documented shape; `broken`: never is;
    `clean`: every field valid or left out, and no unknown ones."""
    payload: dict[str, Any] = {}
    valid = True
    for name, spec in model.fields.items():
        choices = ["valid", "absent", "invalid"] if spec.invalid is not None and not clean else ["valid", "absent"]
        how = draw(st.sampled_from(choices))
        if how == "valid":
            payload[name] = draw(spec.valid)
        elif how == "invalid":
            assert spec.invalid is not None
            payload[name] = draw(spec.invalid)
            valid = False
        elif spec.required:
            valid = False
    extras = draw(
        st.dictionaries(EXTRA_KEYS.filter(lambda k: k not in model.fields), anything(), max_size=0 if clean else 2)
    )
    if extras and not model.extra:
        valid = False
    payload.update(extras)
    if valid and not model.rule(payload):
        valid = False
    if broken and valid:
        targets = [n for n, s in model.fields.items() if s.invalid is not None]
        if not model.extra:
            targets.append(EXTRA)
        assert targets, "a model every object fits cannot be broken"
        target = draw(st.sampled_from(targets))
        if target == EXTRA:
            payload[draw(EXTRA_KEYS.filter(lambda k: k not in model.fields))] = draw(anything())
        else:
            invalid = model.fields[target].invalid
            assert invalid is not None
            payload[target] = draw(invalid)
        valid = False
    return payload, valid


# ---- what one example sends over Socket.IO ----------------------------------------------------


@dataclass(frozen=True)
class Sent:
    args: tuple[Any, ...] | None  # the arguments as a client library sends them; None: raw text only
    valid: bool  # of the documented shape, so the answer is ok
    raw: str | None = None  # the arguments as JSON text (`,{...}`), when only a raw socket sends them
    huge: bool = False  # holds an integer literal python-engineio refuses: the connection may close
    # "Any object" (ohlc-stream) with a field name that is no Unicode text: the contract leaves
    # open whether that is still an object it takes, so invalid_input is accepted too.
    odd_key: bool = False

    def text(self) -> str:
        if self.raw is not None:
            return self.raw
        assert self.args is not None
        return "".join("," + json.dumps(arg, allow_nan=True) for arg in self.args)

    def __repr__(self) -> str:  # a falsifying example stays readable with 60 KB payloads
        text = self.text() if self.args is None or not binary_parts(self.args) else repr(self.args)
        return f"Sent(valid={self.valid}, huge={self.huge}, {text[:400]}{'...' if len(text) > 400 else ''})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints an example
        printer.text(repr(self))


FLOAT_LITERALS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1E2", "0.5", "-0.0", "5e-999", "1" * 400 + ".5"]
# (text, times): the last two are over MAX_PAYLOAD_BYTES.
STRING_LITERALS = [("\\ud800", 1), ("\\udfff\\ud800", 1), ("\\u0000", 1), ("\\u00e9", 11_000), ("x", 70_000)]


def raw_tokens() -> st.SearchStrategy[tuple[str, bool, bool]]:
    """JSON text no client library writes: (text, holds a huge integer, is an object)."""
    return st.one_of(
        st.integers(SOCKET_INT_CHARS + 1, 600).map(lambda n: ("9" * n, True, False)),
        st.just(("-" + "1" * SOCKET_INT_CHARS, True, False)),
        st.sampled_from(FLOAT_LITERALS).map(lambda t: (t, False, False)),
        st.sampled_from(STRING_LITERALS).map(lambda p: ('"' + p[0] * p[1] + '"', False, False)),
        st.integers(1, RAW_DEPTH).map(lambda n: ("[" * n + "]" * n, False, False)),
        st.integers(1, RAW_DEPTH).map(lambda n: ('{"k":' * n + "0" + "}" * n, False, True)),
    )


def dumps(data: Any, *, ensure_ascii: bool = True) -> str:
    """JSON text as python-socketio writes it (lone surrogates as escapes, NaN as a literal).
    Only a client library sends binary attachments: here bytes become a list of numbers,
    which is as wrong as bytes wherever they stood."""
    return json.dumps(data, allow_nan=True, ensure_ascii=ensure_ascii, default=list)


def spliced(base: dict[str, Any], key: str, token: str) -> str:
    """`base` as JSON with `key` set to the raw `token`."""
    rest = dumps({k: v for k, v in base.items() if k != key})[1:-1]
    return "{" + (rest + "," if rest else "") + json.dumps(key) + ":" + token + "}"


@st.composite
def raw_only(draw: st.DrawFn, model: Model) -> Sent:
    token, huge, is_object = draw(raw_tokens())
    integers = [name for name, spec in model.fields.items() if spec.integer]
    variant = draw(st.sampled_from(["payload", "extra", "second"] + (["integer"] if integers else [])))
    base, valid = draw(objects(model))
    if variant == "payload":  # the payload is the token itself
        return Sent(None, is_object and model.extra, "," + token, huge)
    if variant == "extra":  # an unknown field holds it
        key = draw(EXTRA_KEYS.filter(lambda k: k not in model.fields))
        text = "," + spliced(base, key, token)
        return Sent(None, valid and model.extra, text, huge, odd_keys(model, key, *base))
    if variant == "second":  # a second argument
        return Sent(None, False, "," + dumps(base) + "," + token, huge)
    # An integer field holds a float literal or an integer past every bound.
    token, huge = draw(
        st.one_of(
            st.sampled_from(FLOAT_LITERALS).map(lambda t: (t, False)),
            st.integers(SOCKET_INT_CHARS + 1, 600).map(lambda n: ("9" * n, True)),
        )
    )
    return Sent(None, False, "," + spliced(base, draw(st.sampled_from(integers)), token), huge)


@st.composite
def socket_payloads(draw: st.DrawFn, model: Model, invalid_only: bool) -> Sent:
    empty_ok = model.accepts_empty()
    kinds = ["object"] * 4 + ["non_object", "second", "raw"]
    if not invalid_only:  # mostly of the documented shape
        kinds += ["clean"] * 2
    if not (invalid_only and empty_ok):  # no payload and null are read as {}
        kinds += ["nothing", "null"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("object", "clean"):
        payload, valid = draw(objects(model, broken=invalid_only, clean=kind == "clean"))
        return Sent((payload,), valid, odd_key=odd_keys(model, *payload))
    if kind == "non_object":
        return Sent((draw(non_objects()),), False)
    if kind == "nothing":
        return Sent((), empty_ok)
    if kind == "null":
        return Sent((None,), empty_ok)
    if kind == "second":
        payload, _ = draw(objects(model))
        return Sent((payload, draw(anything())), False)
    return draw(raw_only(model))


def binary_parts(data: Any) -> list[bytes]:
    if isinstance(data, bytes):
        return [data]
    if isinstance(data, list | tuple):
        return [part for item in data for part in binary_parts(item)]
    if isinstance(data, dict):
        return [part for item in data.values() for part in binary_parts(item)]
    return []


def client_frame_bytes(event: str, args: tuple[Any, ...]) -> int:
    """About what the python client sends for these arguments, attachments included."""
    text = json.dumps([event, *args], allow_nan=True, default=lambda b: {"_placeholder": True, "num": 99})
    return len(text) + sum(len(part) for part in binary_parts(args)) + 16


def channel_for(event: str, sent: Sent, drawn: str) -> str:
    if drawn == "fire" and event == "register" and sent.valid:
        return "member"  # a user made without an answer could not be counted
    guest = drawn in ("guest", "raw_guest")
    if sent.args is None:
        return "raw_guest" if guest else "raw"
    parts = binary_parts(sent.args)
    assume(len(parts) <= 16)  # more attachments than the server buffers end the connection
    if drawn.startswith("raw") and parts:
        return "guest" if guest else "member"
    if not drawn.startswith("raw") and client_frame_bytes(event, sent.args) > CLIENT_FRAME_MAX:
        assume(not parts)
        return "raw_guest" if guest else "raw"  # a raw socket may be cut off; the client must not be
    return drawn


def odd_keys(model: Model, *keys: str) -> bool:
    """Whether a model that takes unknown fields gets one named by a lone surrogate."""
    return model.extra and any(LONE_SURROGATE.search(received(key)) for key in keys)


def expected(lab: Lab, event: str, sent: Sent, guest: bool) -> frozenset[str]:
    if guest and not EVENTS[event].guest:
        return UNAUTHORIZED  # a guest is refused before its payload is read
    if not sent.valid:
        return INVALID
    if sent.odd_key:
        return frozenset({"ok", "invalid_input"})
    if event == "register":
        assert sent.args is not None
        return frozenset({"username_taken"}) if received(sent.args[0])["username"] in lab.users else OK
    return OK


def judged(event: str, ack: Any, expect: frozenset[str], sent: Sent, channel: str) -> str:
    outcome = check_envelope(ack)
    if outcome == "ok":
        RESULTS[event].validate_python(ack)
    else:
        ERROR_ENVELOPE.validate_python(ack)
    assert outcome in expect, f"{event} over {channel} {sent!r}: wanted {sorted(expect)}, got {ack}"
    return outcome


async def raw_call(url: str, token: str | None, frame: str) -> Any:
    """The ack of one raw event, or `Dropped` when the server closed the connection."""
    async with RawSocket(url, token) as raw, asyncio.timeout(ANSWER_S):
        try:
            return await raw.call(frame, ANSWER_S)
        except (ConnectionResetError, aiohttp.ClientConnectionError) as exc:
            raise Dropped(str(exc)) from exc


async def send_event(lab: Lab, event: str, sent: Sent, channel: str) -> None:
    expect = expected(lab, event, sent, guest=channel in ("guest", "raw_guest"))
    if event in INVALID_ONLY:
        assert "ok" not in expect, "the fuzz must not send this event a valid payload"
    if channel.startswith("raw"):
        frame = f"[{json.dumps(event)}{sent.text()}]"
        try:
            ack = await raw_call(lab.url, lab.token if channel == "raw" else None, frame)
        except Dropped:
            # Documented: python-engineio refuses integers over 100 characters, and packets
            # over MAX_PAYLOAD_BYTES are refused.
            assert sent.huge or len(frame.encode()) + 8 > MAX_PAYLOAD, f"{event} over {channel} {sent!r}: closed"
            OUTCOMES[event, "closed"] += 1
            return
    else:
        assert sent.args is not None
        client = lab.clients["guest" if channel == "guest" else "member"]
        if channel == "fire":  # without an ack callback: nothing to answer, nothing may break
            await client.emit(event, sent.args)
            assert (await client.ask("ping", timeout=ANSWER_S))["ok"] is True
            OUTCOMES[event, "no ack"] += 1
            return
        ack = await client.call(event, sent.args, timeout=ANSWER_S)
    outcome = judged(event, ack, expect, sent, channel)
    OUTCOMES[event, outcome] += 1
    if outcome == "ok" and event == "register":
        lab.users.add(ack["username"])


@pytest.mark.parametrize("event", list(EVENTS))
def test_every_event_answers_every_payload_with_the_documented_envelope(lab: Lab, event: str) -> None:
    model = models(lab.columns)
    assert model.keys() == EVENTS.keys()  # every event a client can emit has a model here
    strategy = st.tuples(socket_payloads(model[event], event in INVALID_ONLY), st.sampled_from(CHANNELS))

    def check(case: tuple[Sent, str]) -> None:
        sent, drawn = case
        lab.run(send_event(lab, event, sent, channel_for(event, sent, drawn)))

    fuzzed(lab, event, strategy, check)


# ---- event names no handler serves ------------------------------------------------------------


def test_unknown_event_names_are_invalid_input(lab: Lab) -> None:
    # Reserved names of python-socketio are spelled out below; these are every other name.
    reserved = {"connect", "disconnect", "*"}
    names: st.SearchStrategy[Any] = st.one_of(
        st.text(ANY_CHAR, max_size=20).filter(lambda n: n not in EVENTS and n not in reserved),
        st.sampled_from(["connect_error", "__disconnect_final", "message", "ping ", "PING", "fetch-csv"]),
        st.sampled_from([5, None, 1.5, True]),  # unhashable names: below
    )
    args = st.one_of(st.just(""), anything(binary=False).map(lambda a: "," + json.dumps(a, allow_nan=True)))

    async def one(name: Any, text: str) -> None:
        frame = f"[{json.dumps(name)}{text}]"
        async with RawSocket(lab.url, lab.token) as raw, asyncio.timeout(ANSWER_S):
            try:
                ack = await raw.call(frame, ANSWER_S)
            except Dropped:
                assert len(frame) + 8 > MAX_PAYLOAD, f"{frame[:300]}: closed"
                return
            assert check_envelope(ack) == "invalid_input", (name, ack)
            assert ack["error"]["field"] == "event", ack
            # The socket is what it was: authenticated.
            assert (await raw.call('["fetch_csv",{"limit":1}]', ANSWER_S))["ok"] is True

    fuzzed(lab, "(unknown names)", st.tuples(names, args), lambda case: lab.run(one(*case)))


async def outcome_of(lab: Lab, frame: str) -> str:
    """What one raw event gets, then whether the same socket still serves its user."""
    try:
        async with RawSocket(lab.url, lab.other) as raw:
            try:
                async with asyncio.timeout(ANSWER_S):
                    ack = await raw.call(frame, ANSWER_S)
            except TimeoutError:
                return "no answer"
            except AssertionError as exc:  # RawSocket: an ack that is not one object
                return f"not one object: {exc}"
            if not isinstance(ack, dict) or ack.get("ok") is not False:
                return f"not an error envelope: {ack!r}"
            async with asyncio.timeout(ANSWER_S):
                after = await raw.call('["fetch_csv",{"limit":1}]', ANSWER_S)
            if after.get("ok") is not True:
                return f"{ack['error']['code']}, then fetch_csv answered {after}"
            return str(ack["error"]["code"])
    except Dropped:
        return "closed"


def test_reserved_event_names_are_unknown_events(lab: Lab) -> None:
    """A client emitting the name of a lifecycle handler must not run it (`disconnect` would
    drop a live socket from the registry, `connect` would make it a fresh guest), and a name
    that is a list or an object is as unknown as any other."""
    log_start = len(lab.server.log())
    frames = [f'["{name}"{args}]' for name in ("connect", "disconnect", "*") for args in ("", ",{}", ',"x"')]
    frames += ["[{}]", "[[]]", '[{"a":1},{}]', "[[1],{}]"]
    COUNTS["(reserved names)"] += len(frames)

    async def all_of() -> list[str]:
        return list(await asyncio.gather(*(outcome_of(lab, frame) for frame in frames)))

    outcomes = dict(zip(frames, lab.run(all_of()), strict=True))
    wrong = [f"{frame} -> {got}" for frame, got in outcomes.items() if got != "invalid_input"]
    assert not wrong, "\n".join(["", *wrong])
    assert not tracebacks(lab.server.log()[log_start:]), errors_in(lab.server.log()[log_start:])


def test_a_packet_nested_past_the_json_decoders_limit_gets_an_answer_or_a_close(lab: Lab) -> None:
    """Thousands of levels fit in a packet; the decoder's recursion limit must end in an answer
    or in the close a malformed packet gets, never in silence and a traceback."""
    log_start = len(lab.server.log())
    frames = ['["ping",' + "[" * depth + "]" * depth + "]" for depth in (1_000, 3_000, 30_000)] + [
        '["fetch_csv",{"a":' + '{"k":' * 3_000 + "0" + "}" * 3_001 + "]"
    ]
    COUNTS["(deep packets)"] += len(frames)

    async def all_of() -> list[str]:
        return list(await asyncio.gather(*(outcome_of(lab, frame) for frame in frames)))

    outcomes = lab.run(all_of())
    wrong = [
        f"{frame[:24]}... ({len(frame)} chars) -> {got}"
        for frame, got in zip(frames, outcomes, strict=True)
        if got not in ("invalid_input", "closed")
    ]
    assert not wrong, "\n".join(["", *wrong])
    assert not tracebacks(lab.server.log()[log_start:]), errors_in(lab.server.log()[log_start:])


# ---- REST -----------------------------------------------------------------------------------

JSON_TYPES = ["application/json", "application/json; charset=utf-8"]
OTHER_TYPES = [
    None,  # no Content-Type at all
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/jsonx",
    "json",
]


@dataclass(frozen=True)
class Http:
    method: str
    target: str  # path and query, percent-encoded as sent
    expect: frozenset[str]
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str | None = None

    def __repr__(self) -> str:  # a falsifying example stays readable with 70 KB bodies
        body = None if self.body is None else self.body[:200] + (b"..." if len(self.body) > 200 else b"")
        headers = {k: v[:40] + ("..." if len(v) > 40 else "") for k, v in self.headers.items()}
        return (
            f"Http({self.method} {self.target[:300]!r} {headers} content_type={self.content_type!r} "
            f"body={body!r} expect={sorted(self.expect)})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints an example
        printer.text(repr(self))


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bodies no JSON encoder writes, none of them a valid credentials object."""
    return st.one_of(
        st.integers(SOCKET_INT_CHARS + 1, 6_000).map(
            lambda n: b'{"username":' + b"1" * n + b',"password":"x"}'  # past 4300 digits Python refuses
        ),
        st.integers(1, 40_000).map(lambda n: b"[" * n + b"]" * n),  # past 32768 levels: over 64 KB
        st.integers(1, 5_000).map(lambda n: b'{"k":' * n + b"0" + b"}" * n),
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"",
                b"\xef\xbb\xbf{}",
                b"\xff\xfe{}",
                b'{"username":"a","password":"b"} x',
                b'{"username":"a","password":"b"',
                b"NaN",
                b'{"username":1e999,"password":"p"}',
                b'{"username":"abc","password":"\\ud800"}',
                b'{"username":"abc","password":"\\udfff\\ud800x"}',
                b'{"username":"abc","password":"pw","username":5}',
            ]
        ),
        st.just(70_000).map(lambda n: b'{"username":"' + b"a" * n + b'","password":"p"}'),  # over 64 KB
    )


@st.composite
def credential_requests(draw: st.DrawFn, path: str, lab: Lab) -> Http:
    invalid_only = path != "/api/register"
    model = models(lab.columns)["register"]
    content_type = draw(st.sampled_from(JSON_TYPES + OTHER_TYPES))
    is_json = content_type in JSON_TYPES
    kind = draw(st.sampled_from(["object", "object", "object", "non_object", "raw"]))
    valid = False
    if kind == "object":
        # A body of the right shape under another content type is refused all the same.
        payload, valid = draw(objects(model, broken=invalid_only and is_json))
        body = dumps(payload, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "non_object":
        body = json.dumps(draw(anything(binary=False)), allow_nan=True).encode()
    else:
        body = draw(raw_bodies())
    expect = INVALID
    if valid and is_json:
        assert not invalid_only
        expect = frozenset({"username_taken"}) if received(payload)["username"] in lab.users else OK
    return Http("POST", path, expect, body=body, content_type=content_type)


def quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="", errors="surrogatepass")


# A query value's verdict: taken, refused, or either (text Python's int() reads, such as " 5").
VALID, REFUSED, EITHER = "valid", "refused", "either"
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def int_texts(lo: int, hi: int) -> st.SearchStrategy[tuple[str, str]]:
    no_digits = st.text(st.characters(codec=None, exclude_categories=["Nd"]), max_size=10)
    return st.one_of(
        st.integers(lo, hi).map(lambda n: (str(n), VALID)),
        st.one_of(st.integers(-(10**400), lo - 1), st.integers(hi + 1, 10**400)).map(lambda n: (str(n), REFUSED)),
        st.sampled_from(["1" * 5_000, "1.5", "1e3", "0x10", "1 000", "--1", "NaN", "inf", "5%"]).map(
            lambda t: (t, REFUSED)
        ),
        no_digits.map(lambda t: (t, REFUSED)),
        st.tuples(st.integers(lo, hi), st.sampled_from([" {} ", "+{}", "{}\n", "0{}", "{}_0"])).map(
            lambda p: (p[1].format(p[0]), EITHER)
        ),
        st.integers(lo, hi).map(lambda n: (str(n).translate(ARABIC_DIGITS), EITHER)),
    )


@st.composite
def queries(draw: st.DrawFn, params: Mapping[str, tuple[int, int]], formats: bool) -> tuple[str, frozenset[str]]:
    """A query string and the outcomes it allows."""
    known = [*params, *(["format"] if formats else [])]
    parts: list[str] = []
    verdicts: list[str] = []  # of unknown keys, and of pieces with no key
    values: dict[str, list[str]] = {}  # the verdicts of each known key's values, in order
    for _ in range(draw(st.integers(0, 4))):
        shape = draw(st.sampled_from(["pair"] * 6 + ["bare", "no_key", "empty"]))
        if shape == "empty":  # `&&`
            parts.append("")
            continue
        if shape == "no_key":  # `=5`: the key is ""
            parts.append("=" + quoted(draw(SMALL_TEXT)))
            verdicts.append(REFUSED)
            continue
        key = draw(st.one_of(st.sampled_from(known), SMALL_TEXT.filter(lambda k: k not in known)))
        if shape == "bare" and key:  # `offset`: the value is ""
            parts.append(quoted(key))
            (values.setdefault(key, []) if key in known else verdicts).append(REFUSED)
            continue
        if key in params:
            value, judged_as = draw(int_texts(*params[key]))
        elif key == "format":
            value, judged_as = draw(
                st.one_of(
                    st.sampled_from(["csv", "json"]).map(lambda t: (t, VALID)),
                    st.one_of(st.sampled_from(["CSV", " csv", "csv\n", "xml", ""]), SMALL_TEXT)
                    .filter(lambda t: t not in ("csv", "json"))
                    .map(lambda t: (t, REFUSED)),
                )
            )
        else:
            value, judged_as = draw(SMALL_TEXT), REFUSED  # an unknown key
        parts.append(quoted(key) + "=" + quoted(value))
        (values.setdefault(key, []) if key in known else verdicts).append(judged_as)
    for judged in values.values():
        # A repeated key: the contract does not say whether the values before the last count.
        single = len(judged) == 1 or judged[-1] == REFUSED or all(v == VALID for v in judged)
        verdicts.append(judged[-1] if single else EITHER)
    # Past 8190 bytes the request line is the HTTP parser's (test_an_oversize_request_line_...).
    assume(sum(len(part) + 1 for part in parts) < 8000)
    query = "&".join(parts)
    if REFUSED in verdicts:
        return query, frozenset({"invalid_input"})
    if EITHER in verdicts:
        return query, frozenset({"ok", "invalid_input"})
    return query, OK


def forged_tokens(lab: Lab) -> list[str]:
    now = int(time.time())
    claims = {"sub": lab.fuzzer, "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex}
    forged = jwt.encode(claims, "not-the-servers-key-but-32-bytes-long", algorithm="HS256")

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    unsigned = b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."
    head, body, signature = lab.token.split(".")
    middle = len(signature) // 2
    flipped = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    return [forged, unsigned, f"{head}.{body}.{flipped}", f"{head}.{body}", lab.revoked, "x.y.z", ""]


def bad_authorizations(lab: Lab) -> st.SearchStrategy[str | None]:
    """`Authorization` headers that carry no valid token (never the fuzzer's own, spelled right)."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
    return st.one_of(
        st.sampled_from([None, "", "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", lab.token, "Token " + lab.token]),
        st.sampled_from(forged_tokens(lab)).map(lambda t: "Bearer " + t),
        printable.map(lambda t: "Bearer " + t),
        printable,
    )


def authorizations(lab: Lab) -> st.SearchStrategy[tuple[str | None, bool]]:
    """An `Authorization` header and whether it is good (three times in four)."""
    good = st.just((f"Bearer {lab.token}", True))
    bad = bad_authorizations(lab).map(lambda h: (h, False))
    return st.integers(0, 3).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def table_requests(draw: st.DrawFn, path: str, lab: Lab) -> Http:
    if path == "/api/fetch_csv":
        params = {"offset": (0, MAX_SAFE_INTEGER), "limit": (1, 10000), "since": (0, MAX_SAFE_INTEGER)}
    else:
        params = {"offset": (0, MAX_SAFE_INTEGER), "limit": (1, MAX_SAFE_INTEGER)}
    query, expect = draw(queries(params, formats=path == "/api/fetch_csv"))
    header, good = draw(authorizations(lab))
    headers = {} if header is None else {"Authorization": header}
    accept = draw(st.sampled_from([None, "text/csv", "application/json", "*/*", "text/csv;q=0", "text/*"]))
    if accept is not None:
        headers["Accept"] = accept
    return Http("GET", path + ("?" + query if query else ""), expect if good else UNAUTHORIZED, headers)


@st.composite
def unauthorized_posts(draw: st.DrawFn, path: str, lab: Lab) -> Http:
    """Logout without a valid token; refresh with anything: both are 401 whatever the body."""
    if path == "/api/logout":
        header = draw(bad_authorizations(lab))
    else:
        header = draw(st.one_of(st.just(f"Bearer {lab.token}"), bad_authorizations(lab)))
    body = draw(st.one_of(st.none(), raw_bodies(), anything(binary=False).map(lambda v: json.dumps(v).encode())))
    content_type = draw(st.sampled_from(JSON_TYPES + OTHER_TYPES))
    headers = {} if header is None else {"Authorization": header}
    return Http("POST", path, UNAUTHORIZED, headers, body, content_type)


async def send_http(lab: Lab, request: Http) -> None:
    headers = dict(request.headers)
    skip = []
    if request.content_type is None:
        skip.append("Content-Type")
    else:
        headers["Content-Type"] = request.content_type
    try:
        async with lab.http.request(
            request.method,
            URL(lab.url + request.target, encoded=True),
            headers=headers,
            data=request.body,
            skip_auto_headers=skip,
            timeout=aiohttp.ClientTimeout(total=ANSWER_S),
        ) as resp:
            status, content_type, body = resp.status, resp.content_type, await resp.read()
    except aiohttp.ClientConnectionError:
        # The server may answer 413 and close before taking the rest of an oversize body.
        assert request.body is not None, request
        assert len(request.body) > MAX_PAYLOAD, request
        OUTCOMES[f"{request.method} {request.target.split('?')[0]}", "closed"] += 1
        return
    if status < 400:
        outcome = "ok"
        ok_answer(request, status, content_type, body)
    else:
        assert content_type == "application/json", (request, status, body[:300])
        envelope = json.loads(body)
        outcome = check_envelope(envelope)
        ERROR_ENVELOPE.validate_python(envelope)
        assert HTTP_STATUS[outcome] == status, (request, status, envelope)
    assert outcome in request.expect, (request, status, body[:300])
    OUTCOMES[f"{request.method} {request.target.split('?')[0]}", outcome] += 1
    if outcome == "ok" and request.target == "/api/register":
        lab.users.add(json.loads(body)["username"])


def ok_answer(request: Http, status: int, content_type: str, body: bytes) -> None:
    path = request.target.split("?")[0]
    if path == "/api/register":
        assert status == 201, (request, status)
        REGISTER_RESULT.validate_python(json.loads(body))
    elif path == "/api/fetch_csv":
        assert status == 200, (request, status)
        if content_type == "text/csv":
            assert body.decode("utf-8").startswith("id,"), body[:100]
        else:
            assert content_type == "application/json", content_type
            FETCH_RESULT.validate_python(json.loads(body))
    elif path == "/record/":
        assert status == 200, (request, status)
        RECORDS.validate_python(json.loads(body))
    else:
        raise AssertionError(f"{request} must not succeed: {status} {body[:300]!r}")


@pytest.mark.parametrize("path", ["/api/register", "/api/login", "/auth/login"])
def test_credential_routes_answer_every_body_with_the_documented_envelope(lab: Lab, path: str) -> None:
    fuzzed(lab, f"POST {path}", credential_requests(path, lab), lambda request: lab.run(send_http(lab, request)))


@pytest.mark.parametrize("path", ["/api/fetch_csv", "/record/"])
def test_table_routes_answer_every_query_with_the_documented_envelope(lab: Lab, path: str) -> None:
    fuzzed(lab, f"GET {path}", table_requests(path, lab), lambda request: lab.run(send_http(lab, request)))


@pytest.mark.parametrize("path", ["/api/logout", "/auth/refresh"])
def test_logout_without_a_token_and_refresh_are_unauthorized(lab: Lab, path: str) -> None:
    fuzzed(lab, f"POST {path}", unauthorized_posts(path, lab), lambda request: lab.run(send_http(lab, request)))


def test_an_oversize_request_line_or_header_gets_the_envelope(lab: Lab) -> None:
    """Past 8190 bytes a request line or header is refused by aiohttp's parser before any route
    or middleware runs; the answer must still be the documented envelope, and the log must not
    get a traceback for each such request."""
    log_start = len(lab.server.log())
    long_digits = "1" * 9_000
    requests = [
        Http("GET", "/api/fetch_csv?offset=" + long_digits, INVALID, bearer(lab.token)),
        Http("GET", "/record/?limit=" + long_digits, INVALID, bearer(lab.token)),
        Http("POST", "/api/login", INVALID, {"X-Filler": "a" * 9_000}, b"{}", "application/json"),
    ]
    COUNTS["(oversize request lines)"] += len(requests)

    async def one(request: Http) -> str:
        headers = {**request.headers, **({"Content-Type": request.content_type} if request.content_type else {})}
        async with lab.http.request(
            request.method, URL(lab.url + request.target, encoded=True), headers=headers, data=request.body
        ) as resp:
            body = await resp.read()
            if resp.content_type != "application/json":
                return f"{resp.status} {resp.content_type} {body[:80]!r}"
            code = check_envelope(json.loads(body))
            return code if HTTP_STATUS[code] == resp.status and code in request.expect else f"{resp.status} {code}"

    async def all_of() -> list[str]:
        return list(await asyncio.gather(*(one(request) for request in requests)))

    outcomes = lab.run(all_of())
    wrong = [
        f"{r.method} {r.target[:30]}... -> {got}"
        for r, got in zip(requests, outcomes, strict=True)
        if got not in INVALID
    ]
    assert not wrong, "\n".join(["", *wrong])
    assert not tracebacks(lab.server.log()[log_start:]), errors_in(lab.server.log()[log_start:])


# ---- the end --------------------------------------------------------------------------------


def test_the_server_still_serves_and_logged_no_traceback(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\nfuzz examples per event: " + ", ".join(f"{name}={n}" for name, n in COUNTS.items()))
        for name in COUNTS:
            seen = sorted((outcome, n) for (of, outcome), n in OUTCOMES.items() if of == name)
            if seen:
                print(f"  {name}: " + ", ".join(f"{outcome} {n}" for outcome, n in seen))

    async def serving() -> None:
        resp = await lab.http.get(f"{lab.url}/healthz")
        assert resp.status == 200
        resp.release()
        async with RawSocket(lab.url, None) as raw:
            assert (await raw.call('["ping",{}]'))["ok"] is True

    lab.run(serving())
    assert not tracebacks(lab.server.log()), errors_in(lab.server.log())
