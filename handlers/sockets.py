"""The connected sockets: who each one is (guest or a user's session), its rate limiter, the
rooms it is in. Logging a socket in joins it to the broadcasts; demoting it (logout, a token
revoked or expired) takes it back out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import socketio

from handlers.ratelimit import TokenBucket
from storage.table_service import TableService
from storage.users import Session

AUTHENTICATED = "authenticated"  # every table broadcast and lock_status goes here
RANDOM_ROOM = "stream:random_number"
LEGACY_OHLC_ROOM = "ohlc-data"


def ohlc_room(interval: str) -> str:
    return f"ohlc:{interval}"


@dataclass
class SocketState:
    sid: str
    bucket: TokenBucket | None
    address: str | None = None  # the peer, for the login throttle
    session: Session | None = None
    rooms: set[str] = field(default_factory=set)


class SocketRegistry:
    def __init__(self, sio: socketio.AsyncServer, tables: TableService, rate_limit: float, rate_burst: float) -> None:
        self._sio = sio
        self._tables = tables  # told who is present: a user's locks outlive their last socket briefly
        self._rate_limit = rate_limit
        self._rate_burst = rate_burst
        self._sockets: dict[str, SocketState] = {}

    def get(self, sid: str) -> SocketState | None:
        return self._sockets.get(sid)

    def sids(self) -> list[str]:
        return list(self._sockets)

    def counts(self) -> Counter[tuple[str, str]]:
        """Connected sockets by (transport, "guest" or "authenticated")."""
        counts: Counter[tuple[str, str]] = Counter()
        for sid, state in list(self._sockets.items()):
            try:
                transport = self._sio.transport(sid)
            except KeyError:  # gone between the listing and the lookup
                continue
            counts[transport, "authenticated" if state.session is not None else "guest"] += 1
        return counts

    def add(self, sid: str, address: str | None) -> SocketState:
        bucket = TokenBucket(self._rate_limit, self._rate_burst) if self._rate_limit > 0 else None
        state = self._sockets[sid] = SocketState(sid=sid, bucket=bucket, address=address)
        return state

    def remove(self, sid: str) -> None:
        state = self._sockets.pop(sid, None)
        if state is not None and state.session is not None:
            self._tables.user_disconnected(state.session.username)

    async def authenticate(self, state: SocketState, session: Session) -> None:
        if state.session is not None:
            await self.demote(state)
        state.session = session
        self._tables.user_connected(session.username)
        for room in (AUTHENTICATED, RANDOM_ROOM):
            await self.join(state, room)

    async def demote(self, state: SocketState) -> None:
        """Back to guest: no broadcasts, no streams, and the user's presence drops by one."""
        if state.session is None:
            return
        self._tables.user_disconnected(state.session.username)
        state.session = None
        for room in list(state.rooms):
            await self._sio.leave_room(state.sid, room)
        state.rooms.clear()

    async def join(self, state: SocketState, room: str) -> None:
        await self._sio.enter_room(state.sid, room)
        state.rooms.add(room)

    async def leave(self, state: SocketState, room: str) -> None:
        await self._sio.leave_room(state.sid, room)
        state.rooms.discard(room)

    async def revoked(self, jti: str) -> None:
        """A token was revoked: its sockets become guests at once."""
        for state in list(self._sockets.values()):
            if state.session is not None and state.session.jti == jti:
                await self.demote(state)

    async def expire_sessions(self) -> None:
        for state in list(self._sockets.values()):
            if state.session is not None and state.session.expired():
                await self.demote(state)
