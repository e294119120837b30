"""Documentation models: every ok result, the error envelope, the broadcasts and the connect
handshake, described with pydantic so the API documents are generated from code.

Nothing here validates traffic at run time; payloads are validated by `storage.models`.
`EVENT_RESULTS` names the ok result of every client->server event and `BROADCASTS` the
payload of every server->client event; the document builder refuses to build when an event
the handlers register has no entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from storage.models import (
    MAX_ROW_ID,
    AddCsv,
    Credentials,
    DeleteCsv,
    FetchCsv,
    Numbers,
    OhlcInterval,
    Payload,
    RestoreBackup,
    RowRef,
    Subscription,
    UpdateCsv,
)

ErrorCode = Literal[
    "unauthorized",
    "invalid_input",
    "not_found",
    "username_taken",
    "locked",
    "cooldown",
    "lock_required",
    "not_owner",
    "conflict",
    "payload_too_large",
    "rate_limited",
    "unavailable",
    "internal",
]
ColumnType = Literal["integer", "number", "text"]
LockReason = Literal[
    "acquired", "renewed", "released", "expired", "disconnected", "deleted", "cooldown_over", "restored"
]
# A cell on the wire: a string, a number or null (an empty cell).
Value = str | int | float | None
EpochMs = int


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def absent(description: str) -> Any:
    """A key that is left out of the object when it does not apply (never sent as null)."""
    return Field(None, description=description, json_schema_extra=_no_default)


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ok(Doc):
    ok: Literal[True] = Field(description="Always true on success.")


# ---- errors -----------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """What went wrong. Details sit beside `code`; which ones depend on the code."""

    model_config = ConfigDict(extra="allow")

    code: ErrorCode = Field(description="Machine-readable error code.")
    message: str = Field(description="Human-readable explanation.")
    field: str | SkipJsonSchema[None] = absent(
        "invalid_input, payload_too_large: the offending field as a dotted path (`values.pnl`, `limit`, `payload`)."
    )
    owner: str | SkipJsonSchema[None] = absent("locked, not_owner: the username holding the lock.")
    expires_at: EpochMs | None = absent("locked: when the holder's lock expires (epoch ms).")
    retry_after: float | SkipJsonSchema[None] = absent("cooldown, rate_limited: seconds to wait before retrying.")
    row: Row | SkipJsonSchema[None] = absent("conflict: the row as it is now.")
    id: int | SkipJsonSchema[None] = absent("not_found, lock_required: the row id.")
    name: str | None = absent("not_found: the backup name asked for (null: the newest).")


class ErrorEnvelope(Doc):
    """Every failed ack and every REST error answer."""

    ok: Literal[False] = Field(description="Always false on failure.")
    error: ErrorBody


# ---- the table ----------------------------------------------------------------------------


class Column(Doc):
    name: str = Field(description="Column name from the CSV header; the first column is `id`.")
    type: ColumnType = Field(description="Inferred when the CSV was first loaded.")


class Row(Doc):
    id: int = Field(ge=1, le=MAX_ROW_ID, description="Stable row id; never reused.")
    version: int = Field(ge=0, description="The table `seq` of the row's last change.")
    values: dict[str, Value] = Field(description="Every column except `id`; null is an empty cell.")


class PageLock(Doc):
    id: int = Field(description="Row id.")
    state: Literal["locked", "cooldown"] = Field(description="Held, or cooling down after an edit.")
    owner: str = Field(description="Lock holder, or the user whose edit started the cooldown.")
    expires_at: EpochMs = Field(description="When the lock or cooldown ends (epoch ms).")


class LockInfo(Doc):
    id: int = Field(description="Row id.")
    owner: str = Field(description="The caller's username.")
    expires_at: EpochMs = Field(description="When the lock expires unless renewed (epoch ms).")


class CsvUpdate(Doc):
    """One table change (broadcast `csv_update`, and an entry of `changes`)."""

    op: Literal["add", "update", "delete", "reset"] = Field(description="`reset` follows a restore: refetch.")
    seq: int = Field(description="The table `seq` this change produced.")
    by: str = Field(description="Username that made the change.")
    ts: EpochMs = Field(description="When the change was made (epoch ms).")
    row: Row | SkipJsonSchema[None] = absent("add, update: the whole new row.")
    before: dict[str, Value] | SkipJsonSchema[None] = absent(
        "update: old values of the columns the update named; delete: the whole old row's values."
    )
    id: int | SkipJsonSchema[None] = absent("delete: the deleted row's id.")


class FetchPage(Ok):
    """A page of the table."""

    columns: list[Column] = Field(description="Every column, `id` first.")
    rows: list[Row] = Field(description="Rows ordered by id, from `offset`, at most `limit`.")
    total: int = Field(ge=0, description="Rows in the table.")
    seq: int = Field(ge=0, description="The table `seq` this page reflects.")
    locks: list[PageLock] = Field(description="Every held lock and cooling row.")
    reset: Literal[True] | SkipJsonSchema[None] = absent(
        "Present when `since` was asked but the missed changes are no longer all held: start over from this page."
    )


class Changes(Ok):
    """What happened after `since`, when the server still holds every change."""

    changes: list[CsvUpdate] = Field(description="Changes after `since`, in seq order.")
    seq: int = Field(ge=0, description="The table `seq` after the last change.")


class FetchResult(RootModel[FetchPage | Changes]):
    """A page, or (with `since`) the changes since then."""


# ---- results of the other events --------------------------------------------------------


class RegisterResult(Ok):
    username: str = Field(description="The new account's username.")


class LoginResult(Ok):
    access_token: str = Field(description="JWT (HS256) to send as a bearer token or as the socket's `auth.token`.")
    token_type: Literal["bearer"] = Field(description="Always `bearer`.")
    expires_at: EpochMs = Field(description="When the token expires (epoch ms).")
    username: str = Field(description="The logged-in user.")


class EmptyResult(Ok):
    """Success with nothing more to say."""


class PingResult(Ok):
    ts: EpochMs = Field(description="Server time (epoch ms).")


class RowResult(Ok):
    row: Row = Field(description="The row as stored.")


class DeleteResult(Ok):
    id: int = Field(description="The deleted row's id.")


class LockResult(Ok):
    lock: LockInfo


class Backup(Doc):
    name: str = Field(description="File name in `backups/`; pass it to `restore_backup`.")
    created_at: EpochMs = Field(description="When the backup was taken (epoch ms).")
    rows: int = Field(ge=0, description="Rows in the backup.")
    bytes: int = Field(ge=0, description="File size.")


class BackupsResult(Ok):
    backups: list[Backup] = Field(description="Newest first.")


class RestoreResult(Ok):
    seq: int = Field(description="The table `seq` of the restore; every row takes it as its version.")
    total: int = Field(ge=0, description="Rows in the restored table.")


class NumberPoint(Doc):
    value: float = Field(ge=0, le=100, description="The random walk's value.")
    ts: EpochMs = Field(description="When it was drawn (epoch ms).")


class NumbersResult(Ok):
    numbers: list[NumberPoint] = Field(description="The last `limit` numbers, oldest first.")


class Ohlc(Doc):
    """One candle (broadcast `ohlc`, and an entry of `candles`)."""

    interval: OhlcInterval = Field(description="Candle width.")
    time: int = Field(description="The candle's open time in epoch seconds.")
    open: float
    high: float
    low: float
    close: float
    ticks: int = Field(ge=0, description="Numbers drawn in this candle so far.")
    closed: bool = Field(description="True once the candle is complete.")


class SubscribeResult(Ok):
    candles: list[Ohlc] | SkipJsonSchema[None] = absent(
        "OHLC subscribe only: the last `history` closed candles, oldest first."
    )


class CandlesResult(Ok):
    candles: list[Ohlc] = Field(description="The last 100 closed 1m candles, oldest first.")


# ---- broadcasts ---------------------------------------------------------------------------


class LockStatus(Doc):
    id: int = Field(description="Row id.")
    state: Literal["locked", "cooldown", "unlocked"]
    owner: str | None = Field(description="Holder, or the user whose lock ended.")
    expires_at: EpochMs | None = Field(description="When the lock or cooldown ends (epoch ms); null when unlocked.")
    reason: LockReason = Field(description="Why the state changed.")


class RandomNumber(Doc):
    value: float = Field(ge=0, le=100, description="The next value of the random walk (two decimals).")
    ts: EpochMs = Field(description="When it was drawn (epoch ms).")
    seq: int = Field(description="Counts draws; separate from the table's seq.")


class OhlcData(Doc):
    """A closed 1m candle for the seed frontend (TradingView lightweight-charts bar)."""

    time: int = Field(description="The candle's open time in epoch seconds.")
    open: float
    high: float
    low: float
    close: float


# ---- connecting ---------------------------------------------------------------------------


class ConnectAuth(Doc):
    """The Socket.IO handshake `auth` object."""

    token: str | SkipJsonSchema[None] = absent("Access token from login. Without a token the socket is a guest.")


class ConnectErrorData(Doc):
    code: Literal["unauthorized"]
    message: str = Field(description="Why the token was refused (invalid, expired, revoked...).")


class ConnectError(Doc):
    """The `connect_error` data when a token is refused (socket.io-client: `err.data`)."""

    code: Literal["unauthorized"]
    message: str = Field(description="Why the token was refused.")
    data: ConnectErrorData


class HealthResult(Ok):
    """The table is loaded and the server is serving."""


# ---- the tables the document builder reads ----------------------------------------------


@dataclass(frozen=True)
class EventDoc:
    result: type[BaseModel]
    summary: str


EVENT_RESULTS: Mapping[str, EventDoc] = MappingProxyType(
    {
        "register": EventDoc(RegisterResult, "Create an account. Same as POST /api/register."),
        "login": EventDoc(
            LoginResult,
            "Log in (an unknown username is registered first while AUTO_REGISTER is on); authenticates this socket.",
        ),
        "logout": EventDoc(EmptyResult, "Revoke this socket's token; the socket becomes a guest."),
        "ping": EventDoc(PingResult, "Server time."),
        "fetch_csv": EventDoc(
            FetchResult,
            "A page of the table, or with `since` the changes after that seq (a fresh page with `reset` when "
            "they are no longer all held).",
        ),
        "add_csv": EventDoc(RowResult, "Append a row; columns left out are null. Needs no lock."),
        "update_csv": EventDoc(
            RowResult, "Change some cells of a row the caller has locked; `version` guards against stale edits."
        ),
        "delete_csv": EventDoc(DeleteResult, "Delete a row the caller has locked; ends the lock."),
        "lock_row": EventDoc(LockResult, "Lock a row for LOCK_TTL_S, or renew the caller's own lock."),
        "unlock_row": EventDoc(EmptyResult, "Release the caller's lock; starts a cooldown if the row was edited."),
        "list_backups": EventDoc(BackupsResult, "Backups of the CSV, newest first."),
        "restore_backup": EventDoc(
            RestoreResult, "Replace the table with a backup (default the newest); refused while others hold locks."
        ),
        "numbers": EventDoc(NumbersResult, "Stored random numbers, oldest first."),
        "subscribe": EventDoc(SubscribeResult, "Start receiving `random_number`, or `ohlc` candles of an interval."),
        "unsubscribe": EventDoc(EmptyResult, "Stop receiving a stream."),
        "ohlc-stream": EventDoc(
            CandlesResult, "Seed-frontend compatibility: subscribe to 1m candles and `ohlc-data` bars."
        ),
    }
)


@dataclass(frozen=True)
class BroadcastDoc:
    payload: type[BaseModel]
    summary: str


BROADCASTS: Mapping[str, BroadcastDoc] = MappingProxyType(
    {
        "csv_update": BroadcastDoc(CsvUpdate, "A table change, to every authenticated socket, in seq order."),
        "lock_status": BroadcastDoc(LockStatus, "A row's lock state changed; to every authenticated socket."),
        "random_number": BroadcastDoc(
            RandomNumber, "Each draw of the random walk, to authenticated sockets that have not unsubscribed."
        ),
        "ohlc": BroadcastDoc(
            Ohlc, "The open candle on every tick, and each candle once more when it closes, to its subscribers."
        ),
        "ohlc-data": BroadcastDoc(OhlcData, "Each closed 1m candle, to sockets that sent `ohlc-stream`."),
    }
)

# Field descriptions for the request payload models, added to their generated schemas.
PAYLOAD_FIELDS: Mapping[type[Payload], Mapping[str, str]] = MappingProxyType(
    {
        Credentials: {"username": "Letters, digits and `_.@+-`.", "password": "Any text; stored as a slow hash."},
        FetchCsv: {
            "offset": "Rows to skip (rows are ordered by id).",
            "limit": "Rows to return.",
            "since": "A seq the client has seen: answer with the changes after it when they are still held.",
        },
        AddCsv: {"values": "Cells by column name (not `id`); columns left out are null."},
        UpdateCsv: {
            "id": "Row id.",
            "values": "Cells to change, by column name; at least one.",
            "version": "The row version the client last saw; a different current version is `conflict`.",
        },
        DeleteCsv: {"id": "Row id.", "version": "The row version the client last saw."},
        RowRef: {"id": "Row id."},
        RestoreBackup: {"name": "Backup name from `list_backups`; default the newest."},
        Numbers: {"limit": "How many of the latest numbers."},
        Subscription: {
            "stream": "`random_number`, or `ohlc` with an `interval`.",
            "interval": "OHLC only: candle width.",
            "history": "OHLC subscribe only: closed candles to return in the ack.",
        },
    }
)

ErrorBody.model_rebuild()
