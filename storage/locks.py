"""Row locks and post-edit cooldowns behind a small interface.

`LockStore` is what the table service relies on; `InMemoryLockStore` serves one process
(a Redis-backed store can take its place for several). Expiry arithmetic uses the monotonic
clock; epoch milliseconds exist only for the wire. Every state change is reported to the
`on_event` sink, in the order it happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from protocol.broadcasts import LockReason, LockState, LockStatus
from protocol.errors import Cooldown, Locked, LockRequired, NotOwner
from protocol.results import LockInfo, PageLock


@dataclass(frozen=True)
class LockEvent:
    id: int
    state: LockState
    owner: str | None
    expires_at: int | None
    reason: LockReason

    def wire(self) -> LockStatus:
        return {
            "id": self.id,
            "state": self.state,
            "owner": self.owner,
            "expires_at": self.expires_at,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LockView:
    id: int
    owner: str
    expires_at: int

    def wire(self) -> LockInfo:
        return {"id": self.id, "owner": self.owner, "expires_at": self.expires_at}


EventSink = Callable[[LockEvent], None]


class LockStore(Protocol):
    async def acquire(self, row_id: int, user: str) -> LockView:
        """Lock or renew; raises `Locked` (another owner) or `Cooldown`."""
        ...

    async def require(self, row_id: int, user: str) -> None:
        """Raises `LockRequired` unless `user` holds the row (`Locked` if someone else does)."""
        ...

    async def release(self, row_id: int, user: str) -> None:
        """Owner-only unlock (`NotOwner`); releasing a free row does nothing."""
        ...

    async def mark_edited(self, row_id: int, user: str) -> None: ...

    async def end(self, row_id: int, reason: LockReason) -> None:
        """End the row's lock and cooldown without starting a cooldown (the row is gone)."""
        ...

    async def end_user(self, user: str, reason: LockReason) -> None: ...

    async def end_all(self, reason: LockReason) -> None: ...

    async def held_by_other(self, user: str) -> LockView | None: ...

    async def sweep(self) -> None:
        """End expired locks and finished cooldowns."""
        ...

    async def snapshot(self) -> list[PageLock]:
        """Every locked or cooling row: `{id, state, owner, expires_at}`."""
        ...


@dataclass
class _Held:
    owner: str
    deadline: float
    expires_at: int
    edited: bool = False


@dataclass(frozen=True)
class _Cooling:
    owner: str
    deadline: float
    until: int


class InMemoryLockStore:
    """Locks of one process. Methods never await inside, so each call is atomic."""

    def __init__(
        self,
        ttl_s: float,
        cooldown_s: float,
        sink: EventSink = lambda event: None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._wall_ms = wall_ms
        self._held: dict[int, _Held] = {}
        self._cooling: dict[int, _Cooling] = {}
        self._sink = sink

    def _emit(
        self, row_id: int, state: LockState, owner: str | None, expires_at: int | None, reason: LockReason
    ) -> None:
        self._sink(LockEvent(row_id, state, owner, expires_at, reason))

    def _active(self, row_id: int) -> _Held | None:
        """The row's live lock, ending it first if its time is up."""
        held = self._held.get(row_id)
        if held is not None and held.deadline <= self._clock():
            self._finish(row_id, held, "expired")
            return None
        return held

    def _finish(self, row_id: int, held: _Held, reason: LockReason, cooldown: bool = True) -> None:
        del self._held[row_id]
        if cooldown and held.edited and self._cooldown_s > 0:
            until = self._wall_ms() + int(self._cooldown_s * 1000)
            self._cooling[row_id] = _Cooling(held.owner, self._clock() + self._cooldown_s, until)
            self._emit(row_id, "cooldown", held.owner, until, reason)
        else:
            self._emit(row_id, "unlocked", held.owner, None, reason)

    async def acquire(self, row_id: int, user: str) -> LockView:
        now = self._clock()
        held = self._active(row_id)
        if held is not None and held.owner != user:
            raise Locked(f"row {row_id} is locked by {held.owner}", owner=held.owner, expires_at=held.expires_at)
        cooling = self._cooling.get(row_id)
        if cooling is not None:
            if cooling.deadline > now:
                retry = round(cooling.deadline - now, 3)
                raise Cooldown(f"row {row_id} was just edited; retry in {retry:.1f} s", retry_after=retry)
            del self._cooling[row_id]
        expires_at = self._wall_ms() + int(self._ttl_s * 1000)
        reason: LockReason
        if held is not None:
            held.deadline, held.expires_at = now + self._ttl_s, expires_at
            reason = "renewed"
        else:
            self._held[row_id] = _Held(user, now + self._ttl_s, expires_at)
            reason = "acquired"
        self._emit(row_id, "locked", user, expires_at, reason)
        return LockView(row_id, user, expires_at)

    async def require(self, row_id: int, user: str) -> None:
        held = self._active(row_id)
        if held is None:
            raise LockRequired(f"lock row {row_id} before changing it", id=row_id)
        if held.owner != user:
            raise Locked(f"row {row_id} is locked by {held.owner}", owner=held.owner, expires_at=held.expires_at)

    async def release(self, row_id: int, user: str) -> None:
        held = self._active(row_id)
        if held is None:
            return
        if held.owner != user:
            raise NotOwner(f"row {row_id} is locked by {held.owner}", owner=held.owner)
        self._finish(row_id, held, "released")

    async def mark_edited(self, row_id: int, user: str) -> None:
        held = self._held.get(row_id)
        if held is not None and held.owner == user:
            held.edited = True

    async def end(self, row_id: int, reason: LockReason) -> None:
        held = self._held.get(row_id)
        if held is not None:
            self._finish(row_id, held, reason, cooldown=False)
        elif self._cooling.pop(row_id, None) is not None:
            self._emit(row_id, "unlocked", None, None, reason)

    async def end_user(self, user: str, reason: LockReason) -> None:
        for row_id, held in list(self._held.items()):
            if held.owner == user:
                self._finish(row_id, held, reason)

    async def end_all(self, reason: LockReason) -> None:
        for row_id, held in list(self._held.items()):
            self._finish(row_id, held, reason, cooldown=False)
        for row_id, cooling in list(self._cooling.items()):
            del self._cooling[row_id]
            self._emit(row_id, "unlocked", cooling.owner, None, reason)

    async def held_by_other(self, user: str) -> LockView | None:
        now = self._clock()
        for row_id, held in self._held.items():
            if held.owner != user and held.deadline > now:
                return LockView(row_id, held.owner, held.expires_at)
        return None

    async def sweep(self) -> None:
        now = self._clock()
        for row_id, held in list(self._held.items()):
            if held.deadline <= now:
                self._finish(row_id, held, "expired")
        for row_id, cooling in list(self._cooling.items()):
            if cooling.deadline <= now:
                del self._cooling[row_id]
                self._emit(row_id, "unlocked", cooling.owner, None, "cooldown_over")

    async def snapshot(self) -> list[PageLock]:
        now = self._clock()
        locks: list[PageLock] = [
            {"id": row_id, "state": "locked", "owner": h.owner, "expires_at": h.expires_at}
            for row_id, h in self._held.items()
            if h.deadline > now
        ]
        locks += [
            {"id": row_id, "state": "cooldown", "owner": c.owner, "expires_at": c.until}
            for row_id, c in self._cooling.items()
            if c.deadline > now
        ]
        return sorted(locks, key=lambda lock: lock["id"])
