"""What clients send: one payload model per client->server event and REST body.

`extra="forbid"` turns unknown fields into `invalid_input`; strict mode keeps `"5"` out of
integer fields and `true` out of numbers, so a payload is taken exactly as documented. Every
rule a payload can be judged by without looking at the table lives here, so it is checked
before any row, lock or backup is (bad input wins over `locked`, `not_found` and the like).
The one lenient model is `OhlcStream`: the seed dashboard's own payload must pass.

JSON numbers come in any size; every integer field has an upper bound (at most
`MAX_SAFE_INTEGER`, past which JavaScript clients cannot even hold the number), so a huge one
is `invalid_input` naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from protocol.errors import InvalidInput
from protocol.values import BACKUP_NAME_PATTERN, LONE_SURROGATE, MAX_ROW_ID, MAX_SAFE_INTEGER, OhlcInterval


def _row_id() -> Any:
    return Field(ge=1, le=MAX_ROW_ID, description="Row id.")


def _unicode(text: str) -> str:
    # A JSON escape can carry half a surrogate pair, which no UTF-8 encoder (a password
    # hash, a database) takes.
    if LONE_SURROGATE.search(text):
        raise ValueError("must be Unicode text (it holds a lone surrogate)")
    return text


UnicodeText = Annotated[str, AfterValidator(_unicode)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Empty(Payload):
    pass


class Credentials(Payload):
    username: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$", description="Letters, digits and `_.@+-`."
    )
    password: UnicodeText = Field(min_length=1, max_length=1024, description="Any text; stored as a slow hash.")


class FetchCsv(Payload):
    offset: int = Field(0, ge=0, le=MAX_SAFE_INTEGER, description="Rows to skip (rows are ordered by id).")
    limit: int = Field(1000, ge=1, le=10000, description="Rows to return.")
    since: int | None = Field(
        None,
        ge=0,
        le=MAX_SAFE_INTEGER,
        description="A seq the client has seen: answer with the changes after it when they are still held.",
    )


class AddCsv(Payload):
    values: dict[str, Any] = Field(description="Cells by column name (not `id`); columns left out are null.")


class UpdateCsv(Payload):
    id: int = _row_id()
    values: dict[str, Any] = Field(min_length=1, description="Cells to change, by column name; at least one.")
    version: int | None = Field(
        None,
        ge=0,
        le=MAX_SAFE_INTEGER,
        description="The row version the client last saw; a different current version is `conflict`.",
    )


class DeleteCsv(Payload):
    id: int = _row_id()
    version: int | None = Field(None, ge=0, le=MAX_SAFE_INTEGER, description="The row version the client last saw.")


class RowRef(Payload):
    id: int = _row_id()


class RestoreBackup(Payload):
    name: str | None = Field(
        None,
        max_length=255,
        pattern=BACKUP_NAME_PATTERN,
        description="Backup name from `list_backups`; default the newest. A name not of that form "
        "(a path, another file) is `invalid_input`.",
    )


class Numbers(Payload):
    limit: int = Field(100, ge=1, le=10000, description="How many of the latest numbers.")


class Subscription(Payload):
    stream: Literal["random_number", "ohlc"] = Field(description="`random_number`, or `ohlc` with an `interval`.")
    interval: OhlcInterval | None = Field(None, description="OHLC only: candle width.")
    history: int = Field(100, ge=0, le=1000, description="OHLC subscribe only: closed candles to return in the ack.")


class RecordQuery(Payload):
    offset: int = Field(0, ge=0, le=MAX_SAFE_INTEGER, description="Rows to skip (rows are ordered by id).")
    limit: int | None = Field(
        None, ge=1, le=MAX_SAFE_INTEGER, description="Rows to return; default every row from `offset`."
    )


class OhlcStream(Payload):
    """Any object. The seed dashboard emits `ohlc-stream` with
    `{message: "Start streaming OHLC data"}` and no ack callback, and must get its candles."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{}, {"message": "Start streaming OHLC data"}]},
    )
    message: Any = Field(None, description="Ignored, as is every other field; the seed dashboard sends a greeting.")


M = TypeVar("M", bound=Payload)


def parse(model: type[M], data: Any) -> M:
    """Validate `data` against `model`; the first problem becomes `invalid_input`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput("payload must be a JSON object", field="payload")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "payload"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from None
