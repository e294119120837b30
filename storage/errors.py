"""Domain errors. Storage and services raise these; one adapter per transport turns them
into the `{ok: false, error: {code, message, ...details}}` envelope."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class DomainError(Exception):
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def envelope(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "message": self.message, **self.details}}


class Unauthorized(DomainError):
    code = "unauthorized"


class InvalidInput(DomainError):
    code = "invalid_input"

    def __init__(self, message: str, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)


class NotFound(DomainError):
    code = "not_found"


class UsernameTaken(DomainError):
    code = "username_taken"


class Locked(DomainError):
    code = "locked"

    def __init__(self, message: str, *, owner: str, expires_at: int | None) -> None:
        super().__init__(message, owner=owner, expires_at=expires_at)


class Cooldown(DomainError):
    code = "cooldown"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class LockRequired(DomainError):
    code = "lock_required"


class NotOwner(DomainError):
    code = "not_owner"


class Conflict(DomainError):
    code = "conflict"

    def __init__(self, message: str, *, row: dict[str, Any]) -> None:
        super().__init__(message, row=row)


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class RateLimited(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)


class Unavailable(DomainError):
    code = "unavailable"


class Internal(DomainError):
    code = "internal"


def storage_failures_unavailable(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A database that fails (disk full, I/O error, locked) is `unavailable`, not a bug.
    Constraint violations are decided by the caller, so they pass through."""

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise Unavailable(f"storage failed ({exc}); nothing was changed") from exc

    return guarded
