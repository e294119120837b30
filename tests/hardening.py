"""Shared pieces of the value, fuzz and stateful tests: example counts, the value rules as an
oracle written apart from the server's code, value strategies, the CSV the server must write,
a raw Socket.IO connection for payloads no client library would send, and the envelope check.

`TABLECAST_LONG_TESTS=1` raises every example count (for a local run, not CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from hypothesis import strategies as st

from protocol.errors import HTTP_STATUS

LONG = os.environ.get("TABLECAST_LONG_TESTS", "").strip().lower() in ("1", "true", "yes", "on")


def examples(default: int, long: int) -> int:
    return long if LONG else default


# ---- the value rules, as the contract states them ---------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# python-engineio refuses (drops the connection on) a JSON integer of over 100 characters.
SOCKET_INT_CHARS = 100


@dataclass(frozen=True)
class Verdict:
    code: str  # "ok" or the error code
    cell: Any = None  # the stored cell when ok


def verdict(kind: str, value: Any, max_cell_chars: int) -> Verdict:
    """What the server must make of `value` sent for a column of `kind`."""
    if value is None:
        return Verdict("ok", None)
    if kind == "text":
        if not isinstance(value, str):
            return Verdict("invalid_input")
        if len(value) > max_cell_chars:
            return Verdict("payload_too_large")
        if any(_unsafe_char(c) for c in value):
            return Verdict("invalid_input")
        return Verdict("ok", value or None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Verdict("invalid_input")
    if kind == "integer":
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return Verdict("invalid_input")
        number = int(value)
        return Verdict("ok", number) if INT64_MIN <= number <= INT64_MAX else Verdict("invalid_input")
    try:
        real = float(value)
    except OverflowError:
        return Verdict("invalid_input")
    return Verdict("ok", real) if math.isfinite(real) else Verdict("invalid_input")


def _unsafe_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category == "Cs" or (category == "Cc" and char not in "\t\n\r")


def received(value: Any) -> Any:
    """`value` as the server decodes it from the JSON a client sends (an escaped surrogate
    pair becomes the one character it encodes)."""
    return json.loads(json.dumps(value))


def canonical(data: Any) -> str:
    """JSON text that tells 1 from 1.0 and 0.0 from -0.0: equal text, byte-for-byte equal values."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=True)


# ---- values to send ---------------------------------------------------------------------

_EDGE_INTS = [
    0,
    -1,
    INT64_MAX,
    INT64_MIN,
    INT64_MAX + 1,
    INT64_MIN - 1,
    2**64,
    -(2**64),
    2**53 + 1,
    10**99,
    -(10**98),
]
_EDGE_FLOATS = [
    -0.0,
    0.0,
    3.0,
    1e19,
    -9.223372036854775808e18,
    9.223372036854775807e18,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    0.1 + 0.2,
    1e16,
    123456789.123456789,
    math.inf,
    -math.inf,
    math.nan,
]
_EDGE_TEXT = [
    "",
    " ",
    " pad ",
    "=1+1",
    "-5",
    "+x",
    "@a",
    "\tx",
    "\rx",
    "'q",
    '"',
    'say "hi"',
    "a,b",
    "line\nbreak",
    "\r\n",
    "\r",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "x\ud800y",
    "\udfff",
    "\ud83d\ude00",  # a valid pair, as a JSON escape would carry it: one character
    "\ufeff",
    "\u2028",
    "é",
    "😀",
    "NaN",
    "1e5",
    "007",
    "5",
]
# Any code point, lone surrogates and control characters included.
_ANY_CHAR = st.characters(codec=None, exclude_categories=())


def socket_ints() -> st.SearchStrategy[int]:
    """Integers a Socket.IO packet can carry (python-engineio takes up to 100 characters)."""
    bound = 10**99
    return st.one_of(
        st.sampled_from(_EDGE_INTS),
        st.integers(-1000, 1000),
        st.integers(INT64_MIN - 2**10, INT64_MIN + 2**10),
        st.integers(INT64_MAX - 2**10, INT64_MAX + 2**10),
        st.integers(-(2**70), 2**70),
        st.integers(-(bound // 10) + 1, bound),
    )


def floats() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(_EDGE_FLOATS),
        st.floats(),
        st.floats(-1e6, 1e6).map(lambda x: round(x, 2)),
        st.integers(-(2**70), 2**70).map(float),
    )


def texts(max_cell_chars: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_EDGE_TEXT),
        st.text(_ANY_CHAR, max_size=20),
        st.text(st.characters(codec="utf-8"), max_size=40),
        st.sampled_from(["x" * max_cell_chars, "y" * (max_cell_chars + 1), "é" * max_cell_chars]),
    )


def cell_values(max_cell_chars: int) -> st.SearchStrategy[Any]:
    """Anything a client may send as a cell: of every column's type, and of none."""
    return st.one_of(
        socket_ints(),
        floats(),
        texts(max_cell_chars),
        st.none(),
        st.booleans(),
        st.lists(st.integers(0, 3), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
    )


# ---- the CSV the server writes ------------------------------------------------------------

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]], *, escape: bool = False) -> bytes:
    """What csv.writer (RFC 4180 line ends) writes for `rows`; with `escape`, a text cell that
    starts like a formula gets a leading `'`, as the download does."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            ["'" + v if escape and isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v for v in row]
        )
    return buffer.getvalue().encode()


def _escaped(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


# ---- answers and the log ------------------------------------------------------------------


def check_envelope(ack: Any) -> str:
    """The ack's outcome, "ok" or its code, after checking it is the documented envelope."""
    assert isinstance(ack, dict), ack
    if ack.get("ok") is True:
        return "ok"
    assert ack.get("ok") is False, ack
    assert set(ack) == {"ok", "error"}, ack
    error = ack["error"]
    assert isinstance(error, dict), ack
    assert isinstance(error.get("message"), str), ack
    code = error.get("code")
    assert code in HTTP_STATUS, ack
    assert code != "internal", ack
    if code == "invalid_input" and "field" in error:
        assert isinstance(error["field"], str), ack
    return str(code)


def tracebacks(log: str) -> list[str]:
    """The log lines that carry a traceback (JSON lines put it inside an `error` field)."""
    return [line for line in log.splitlines() if "Traceback" in line]


# ---- a raw Socket.IO connection -----------------------------------------------------------


class Dropped(Exception):
    """The server closed the connection."""


class RawSocket:
    """Socket.IO over one websocket, spoken by hand: each event's packet is whatever text the
    test gives, so a payload can be a 3,000-deep array or a 5,000-digit number that no JSON
    encoder of a client library would send."""

    def __init__(self, url: str, token: str | None) -> None:
        self._url = url
        self._token = token
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0

    async def __aenter__(self) -> RawSocket:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"{self._url}/socket.io/?EIO=4&transport=websocket")
        opened = await self._text()
        assert opened.startswith("0{"), opened
        auth = json.dumps({"token": self._token}) if self._token else ""
        await self._ws.send_str("40" + auth)
        connected = await self._text()
        assert connected.startswith("40"), connected
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    async def _text(self, timeout: float = 10) -> str:
        assert self._ws is not None
        while True:
            message = await asyncio.wait_for(self._ws.receive(), timeout)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                raise Dropped(str(message.data))
            if message.type == aiohttp.WSMsgType.ERROR:
                raise Dropped(str(message.data))
            text = str(message.data)
            if text == "2":  # Engine.IO ping
                await self._ws.send_str("3")
                continue
            return text

    async def call(self, args_json: str, timeout: float = 10) -> Any:
        """Emit an event whose argument array is `args_json` (`["name", payload...]`, raw
        JSON text) and return the ack's first argument."""
        assert self._ws is not None
        ack_id = self._next_id
        self._next_id += 1
        await self._ws.send_str(f"42{ack_id}{args_json}")
        prefix = f"43{ack_id}"
        while True:
            text = await self._text(timeout)
            if text.startswith(prefix):
                answer = json.loads(text[len(prefix) :])
                assert isinstance(answer, list), text
                assert len(answer) == 1, text
                return answer[0]
            if text.startswith("41"):
                raise Dropped(text)
            # broadcasts (42...) are not what we wait for
