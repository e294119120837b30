"""What the server answers: the ok result of every event and REST route, and the pieces they
are made of. They are typed dicts: the services build them as plain dicts (no cost on the hot
path), the type checker holds every service to its documented shape, and the API documents
are generated from these same definitions.

A key marked `NotRequired` is left out of the object when it does not apply (never null).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from protocol.values import MAX_ROW_ID, ColumnType, EpochMs, OhlcInterval, Value

_STRICT = ConfigDict(extra="forbid")


def _d(description: str) -> Any:
    return Field(description=description)


# ---- the table ----------------------------------------------------------------------------


@with_config(_STRICT)
class Column(TypedDict):
    name: Annotated[str, _d("Column name from the CSV header; the first column is `id`.")]
    type: Annotated[ColumnType, _d("Inferred when the CSV was first loaded.")]


@with_config(_STRICT)
class Row(TypedDict):
    id: Annotated[int, Field(ge=1, le=MAX_ROW_ID, description="Stable row id; never reused.")]
    version: Annotated[int, Field(ge=0, description="The table `seq` of the row's last change.")]
    values: Annotated[dict[str, Value], _d("Every column except `id`; null is an empty cell.")]


@with_config(_STRICT)
class PageLock(TypedDict):
    id: Annotated[int, _d("Row id.")]
    state: Annotated[Literal["locked", "cooldown"], _d("Held, or cooling down after an edit.")]
    owner: Annotated[str, _d("Lock holder, or the user whose edit started the cooldown.")]
    expires_at: Annotated[EpochMs, _d("When the lock or cooldown ends (epoch ms).")]


@with_config(_STRICT)
class LockInfo(TypedDict):
    id: Annotated[int, _d("Row id.")]
    owner: Annotated[str, _d("The caller's username.")]
    expires_at: Annotated[EpochMs, _d("When the lock expires unless renewed (epoch ms).")]


@with_config(_STRICT)
class CsvUpdate(TypedDict):
    """One table change (broadcast `csv_update`, and an entry of `changes`)."""

    op: Annotated[Literal["add", "update", "delete", "reset"], _d("`reset` follows a restore: refetch.")]
    seq: Annotated[int, _d("The table `seq` this change produced.")]
    by: Annotated[str, _d("Username that made the change.")]
    ts: Annotated[EpochMs, _d("When the change was made (epoch ms).")]
    row: NotRequired[Annotated[Row, _d("add, update: the whole new row.")]]
    before: NotRequired[
        Annotated[
            dict[str, Value],
            _d("update: old values of the columns the update named; delete: the whole old row's values."),
        ]
    ]
    id: NotRequired[Annotated[int, _d("delete: the deleted row's id.")]]


@with_config(_STRICT)
class Ohlc(TypedDict):
    """One candle (broadcast `ohlc`, and an entry of `candles`)."""

    interval: Annotated[OhlcInterval, _d("Candle width.")]
    time: Annotated[int, _d("The candle's open time in epoch seconds.")]
    open: float
    high: float
    low: float
    close: float
    ticks: Annotated[int, Field(ge=0, description="Numbers drawn in this candle so far.")]
    closed: Annotated[bool, _d("True once the candle is complete.")]


_CELL: Any = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}  # a Value


@with_config(ConfigDict(extra="allow", json_schema_extra={"additionalProperties": _CELL}))
class Record(TypedDict):
    """A row as a flat record, the seed dashboards' shape: `id` and every other column by name,
    with the values a row's `values` holds (no `version`)."""

    id: Annotated[int, Field(ge=1, le=MAX_ROW_ID, description="Row id.")]


Records = Annotated[
    list[Record],
    Field(title="Records", description="Rows ordered by id, as flat records (`GET /record/`, no envelope)."),
]


# ---- ok results ---------------------------------------------------------------------------

_OK = Annotated[Literal[True], _d("Always true on success.")]


@with_config(_STRICT)
class FetchPage(TypedDict):
    """A page of the table."""

    ok: _OK
    columns: Annotated[list[Column], _d("Every column, `id` first.")]
    rows: Annotated[list[Row], _d("Rows ordered by id, from `offset`, at most `limit`.")]
    total: Annotated[int, Field(ge=0, description="Rows in the table.")]
    seq: Annotated[int, Field(ge=0, description="The table `seq` this page reflects.")]
    locks: Annotated[list[PageLock], _d("Every held lock and cooling row.")]
    reset: NotRequired[
        Annotated[
            Literal[True],
            _d(
                "Present when `since` was asked but the missed changes are no longer all held: "
                "start over from this page."
            ),
        ]
    ]


@with_config(_STRICT)
class Changes(TypedDict):
    """What happened after `since`, when the server still holds every change."""

    ok: _OK
    changes: Annotated[list[CsvUpdate], _d("Changes after `since`, in seq order.")]
    seq: Annotated[int, Field(ge=0, description="The table `seq` after the last change.")]


FetchResult = Annotated[
    FetchPage | Changes,
    Field(title="FetchResult", description="A page, or (with `since`) the changes since then."),
]


@with_config(_STRICT)
class EmptyResult(TypedDict):
    """Success with nothing more to say."""

    ok: _OK


@with_config(_STRICT)
class HealthResult(TypedDict):
    """The table is loaded and the server is serving."""

    ok: _OK


@with_config(_STRICT)
class RegisterResult(TypedDict):
    ok: _OK
    username: Annotated[str, _d("The new account's username.")]


@with_config(_STRICT)
class LoginResult(TypedDict):
    ok: _OK
    access_token: Annotated[str, _d("JWT (HS256) to send as a bearer token or as the socket's `auth.token`.")]
    token_type: Annotated[Literal["bearer"], _d("Always `bearer`.")]
    expires_at: Annotated[EpochMs, _d("When the token expires (epoch ms).")]
    username: Annotated[str, _d("The logged-in user.")]


@with_config(_STRICT)
class PingResult(TypedDict):
    ok: _OK
    ts: Annotated[EpochMs, _d("Server time (epoch ms).")]


@with_config(_STRICT)
class RowResult(TypedDict):
    ok: _OK
    row: Annotated[Row, _d("The row as stored.")]


@with_config(_STRICT)
class DeleteResult(TypedDict):
    ok: _OK
    id: Annotated[int, _d("The deleted row's id.")]


@with_config(_STRICT)
class LockResult(TypedDict):
    ok: _OK
    lock: LockInfo


@with_config(_STRICT)
class Backup(TypedDict):
    name: Annotated[str, _d("File name in `backups/`; pass it to `restore_backup`.")]
    created_at: Annotated[EpochMs, _d("When the backup was taken (epoch ms).")]
    rows: Annotated[int, Field(ge=0, description="Rows in the backup.")]
    bytes: Annotated[int, Field(ge=0, description="File size.")]


@with_config(_STRICT)
class BackupsResult(TypedDict):
    ok: _OK
    backups: Annotated[list[Backup], _d("Newest first.")]


@with_config(_STRICT)
class RestoreResult(TypedDict):
    ok: _OK
    seq: Annotated[int, _d("The table `seq` of the restore; every row takes it as its version.")]
    total: Annotated[int, Field(ge=0, description="Rows in the restored table.")]


@with_config(_STRICT)
class NumberPoint(TypedDict):
    value: Annotated[float, Field(ge=0, le=100, description="The random walk's value.")]
    ts: Annotated[EpochMs, _d("When it was drawn (epoch ms).")]


@with_config(_STRICT)
class NumbersResult(TypedDict):
    ok: _OK
    numbers: Annotated[list[NumberPoint], _d("The last `limit` numbers, oldest first.")]


@with_config(_STRICT)
class SubscribeResult(TypedDict):
    ok: _OK
    candles: NotRequired[
        Annotated[list[Ohlc], _d("OHLC subscribe only: the last `history` closed candles, oldest first.")]
    ]


@with_config(_STRICT)
class CandlesResult(TypedDict):
    ok: _OK
    candles: Annotated[list[Ohlc], _d("The last 100 closed 1m candles, oldest first.")]
