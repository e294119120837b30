"""Payload shapes of every client->server event and REST body, one model per event.

`extra="forbid"` turns unknown fields into `invalid_input`; strict mode keeps `"5"` out of
integer fields and `true` out of numbers, so a payload is taken exactly as documented.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage.errors import InvalidInput

MAX_ROW_ID = 2**53 - 1  # the largest integer a JavaScript client can represent exactly
OHLC_INTERVALS: dict[str, int] = {
    "1s": 1,
    "5s": 5,
    "15s": 15,
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
}
OhlcInterval = Literal["1s", "5s", "15s", "1m", "5m", "15m", "1h"]
RowId = Field(ge=1, le=MAX_ROW_ID)


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Empty(Payload):
    pass


class Credentials(Payload):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@+-]+$")
    password: str = Field(min_length=1, max_length=1024)


class FetchCsv(Payload):
    offset: int = Field(0, ge=0)
    limit: int = Field(1000, ge=1, le=10000)
    since: int | None = Field(None, ge=0)


class AddCsv(Payload):
    values: dict[str, Any]


class UpdateCsv(Payload):
    id: int = RowId
    values: dict[str, Any] = Field(min_length=1)
    version: int | None = Field(None, ge=0)


class DeleteCsv(Payload):
    id: int = RowId
    version: int | None = Field(None, ge=0)


class RowRef(Payload):
    id: int = RowId


class RestoreBackup(Payload):
    name: str | None = Field(None, min_length=1, max_length=255)


class Numbers(Payload):
    limit: int = Field(100, ge=1, le=10000)


class Subscription(Payload):
    stream: Literal["random_number", "ohlc"]
    interval: OhlcInterval | None = None
    history: int = Field(100, ge=0, le=1000)


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
