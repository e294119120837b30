"""Errors on the wire. Each code and its HTTP status are defined once, on its class; the
services raise these, and one adapter per transport turns them into the envelope
`{ok: false, error: {code, message, ...details}}` (details sit beside `code`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, NotRequired, cast

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from protocol.results import Row


class DomainError(Exception):
    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def envelope(self) -> ErrorEnvelope:
        body = cast(ErrorBody, {"code": self.code, "message": self.message, **self.details})
        return {"ok": False, "error": body}


class Unauthorized(DomainError):
    """No, bad, expired or revoked token; wrong password; a guest calling a member event."""

    code = "unauthorized"
    status = 401


class InvalidInput(DomainError):
    """Wrong type, missing or unknown field, out of range, unknown event, bad query."""

    code = "invalid_input"
    status = 400

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)


class NotFound(DomainError):
    """No row or backup of that id or name (also an unknown route)."""

    code = "not_found"
    status = 404


class UsernameTaken(DomainError):
    """Register with an existing username."""

    code = "username_taken"
    status = 409


class Locked(DomainError):
    """Someone else holds the row's lock (or any lock, for a restore)."""

    code = "locked"
    status = 409

    def __init__(self, message: str, *, owner: str, expires_at: int | None) -> None:
        super().__init__(message, owner=owner, expires_at=expires_at)


class Cooldown(DomainError):
    """The row was just edited; try again after `retry_after` seconds."""

    code = "cooldown"
    status = 409

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class LockRequired(DomainError):
    """Update or delete without holding the row's lock."""

    code = "lock_required"
    status = 409


class NotOwner(DomainError):
    """Unlock of another user's lock."""

    code = "not_owner"
    status = 403


class Forbidden(DomainError):
    """The user may not run this event: `restore_backup` by a user not in ADMIN_USERS."""

    code = "forbidden"
    status = 403


class Conflict(DomainError):
    """`version` given and stale; `row` is the row as it is now."""

    code = "conflict"
    status = 409

    def __init__(self, message: str, *, row: Row) -> None:
        super().__init__(message, row=row)


class PayloadTooLarge(DomainError):
    """A text cell over MAX_CELL_CHARS, a body over MAX_PAYLOAD_BYTES."""

    code = "payload_too_large"
    status = 413


class RateLimited(DomainError):
    """Over RATE_LIMIT events a second on one socket, or over LOGIN_RATE_LIMIT failed logins a
    minute for the username or the client address."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class Unavailable(DomainError):
    """The disk or database failed; nothing was changed."""

    code = "unavailable"
    status = 503


class Internal(DomainError):
    """A bug; it is logged, nothing was changed."""

    code = "internal"
    status = 500


# Every error the server sends, in the order the documents list them.
ERRORS: tuple[type[DomainError], ...] = (
    Unauthorized,
    InvalidInput,
    NotFound,
    UsernameTaken,
    Locked,
    Cooldown,
    LockRequired,
    NotOwner,
    Forbidden,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
)
HTTP_STATUS: dict[str, int] = {error.code: error.status for error in ERRORS}


def _details(description: str) -> Any:
    return Field(description=description)


@with_config(ConfigDict(extra="allow"))
class ErrorBody(TypedDict):
    """What went wrong. Details sit beside `code`; which ones depend on the code."""

    code: Annotated[
        str, Field(description="Machine-readable error code.", json_schema_extra={"enum": list(HTTP_STATUS)})
    ]
    message: Annotated[str, Field(description="Human-readable explanation.")]
    field: NotRequired[
        Annotated[
            str,
            _details(
                "invalid_input, payload_too_large: the offending field as a dotted path "
                "(`values.pnl`, `limit`, `payload`)."
            ),
        ]
    ]
    owner: NotRequired[Annotated[str, _details("locked, not_owner: the username holding the lock.")]]
    expires_at: NotRequired[Annotated[int | None, _details("locked: when the holder's lock expires (epoch ms).")]]
    retry_after: NotRequired[Annotated[float, _details("cooldown, rate_limited: seconds to wait before retrying.")]]
    row: NotRequired[Annotated[Row, _details("conflict: the row as it is now.")]]
    id: NotRequired[Annotated[int, _details("not_found, lock_required: the row id.")]]
    name: NotRequired[Annotated[str | None, _details("not_found: the backup name asked for (null: the newest).")]]


@with_config(ConfigDict(extra="forbid"))
class ErrorEnvelope(TypedDict):
    """Every failed ack and every REST error answer."""

    ok: Annotated[Literal[False], Field(description="Always false on failure.")]
    error: ErrorBody
