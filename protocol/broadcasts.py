"""What the server pushes without being asked (beside `csv_update` and `ohlc`, which are in
`protocol.results` because fetch and subscribe answers hold them too), and the Socket.IO
handshake."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from protocol.values import EpochMs

_STRICT = ConfigDict(extra="forbid")
LockState = Literal["locked", "cooldown", "unlocked"]
LockReason = Literal[
    "acquired", "renewed", "released", "expired", "disconnected", "deleted", "cooldown_over", "restored"
]


def _d(description: str) -> Any:
    return Field(description=description)


@with_config(_STRICT)
class LockStatus(TypedDict):
    id: Annotated[int, _d("Row id.")]
    state: LockState
    owner: Annotated[str | None, _d("Holder, or the user whose lock ended.")]
    expires_at: Annotated[EpochMs | None, _d("When the lock or cooldown ends (epoch ms); null when unlocked.")]
    reason: Annotated[LockReason, _d("Why the state changed.")]


@with_config(_STRICT)
class RandomNumber(TypedDict):
    value: Annotated[float, Field(ge=0, le=100, description="The next value of the random walk (two decimals).")]
    ts: Annotated[EpochMs, _d("When it was drawn (epoch ms).")]
    seq: Annotated[int, _d("Counts draws; separate from the table's seq.")]


@with_config(_STRICT)
class OhlcData(TypedDict):
    """A closed 1m candle for the seed frontend (TradingView lightweight-charts bar)."""

    time: Annotated[int, _d("The candle's open time in epoch seconds.")]
    open: float
    high: float
    low: float
    close: float


@with_config(_STRICT)
class ConnectAuth(TypedDict):
    """The Socket.IO handshake `auth` object."""

    token: NotRequired[Annotated[str, _d("Access token from login. Without a token the socket is a guest.")]]


@with_config(_STRICT)
class ConnectErrorData(TypedDict):
    code: Literal["unauthorized"]
    message: Annotated[str, _d("Why the token was refused (invalid, expired, revoked...).")]


@with_config(_STRICT)
class ConnectError(TypedDict):
    """The `connect_error` data when a token is refused (socket.io-client: `err.data`)."""

    code: Literal["unauthorized"]
    message: Annotated[str, _d("Why the token was refused.")]
    data: ConnectErrorData
