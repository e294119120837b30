"""Socket.IO adapters: authenticate the socket, check the rate, parse the payload, call a
service, and turn the result or the domain error into the ack envelope. Nothing else."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import socketio

from handlers.sessions import SessionService, bearer_token
from handlers.sockets import LEGACY_OHLC_ROOM, RANDOM_ROOM, SocketRegistry, SocketState, ohlc_room
from protocol.errors import DomainError, ErrorEnvelope, Internal, InvalidInput, RateLimited, Unauthorized
from protocol.events import EVENTS, EventSpec
from protocol.payloads import (
    AddCsv,
    Credentials,
    DeleteCsv,
    Empty,
    FetchCsv,
    Numbers,
    OhlcStream,
    RestoreBackup,
    RowRef,
    Subscription,
    UpdateCsv,
    parse,
)
from protocol.results import (
    BackupsResult,
    CandlesResult,
    DeleteResult,
    EmptyResult,
    FetchResult,
    LockResult,
    LoginResult,
    NumbersResult,
    PingResult,
    RegisterResult,
    RestoreResult,
    RowResult,
    SubscribeResult,
)
from storage.numbers import StreamService
from storage.table_service import TableService
from storage.users import Session

log = logging.getLogger("tablecast.socket")

Action = Callable[[SocketState, Any], Awaitable[Any]]  # an ok result of protocol.results
# Told of every handled event: (event name, "ok" or the error code, seconds to the ack).
# Events the server does not handle are reported under the name "unknown".
EventObserver = Callable[[str, str, float], None]
UNKNOWN_EVENT = "unknown"


def token_from(auth: Any, environ: dict[str, Any]) -> str | None:
    """`auth: {token}`, else `Authorization: Bearer`, else `?token=`."""
    if isinstance(auth, dict) and isinstance(auth.get("token"), str) and auth["token"]:
        return str(auth["token"])
    token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
    if token is not None:
        return token
    request = environ.get("aiohttp.request")
    if request is not None:
        token = request.query.get("token")
        if token:
            return str(token)
    return None


def peer_address(environ: dict[str, Any]) -> str | None:
    """The address the handshake came from: the peer of its connection."""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None)
    return remote if isinstance(remote, str) and remote else None


class SocketHandlers:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        sessions: SessionService,
        sockets: SocketRegistry,
        tables: TableService,
        streams: StreamService,
        *,
        on_event: EventObserver | None = None,
    ) -> None:
        self._sio = sio
        self._sessions = sessions
        self._sockets = sockets
        self._tables = tables
        self._streams = streams
        self._on_event = on_event

    def _actions(self) -> dict[str, Action]:
        """The method that serves each event of `protocol.events.EVENTS`."""
        return {
            "register": self._register,
            "login": self._login,
            "ping": self._ping,
            "logout": self._logout,
            "fetch_csv": self._fetch_csv,
            "add_csv": self._add_csv,
            "update_csv": self._update_csv,
            "delete_csv": self._delete_csv,
            "lock_row": self._lock_row,
            "unlock_row": self._unlock_row,
            "list_backups": self._list_backups,
            "restore_backup": self._restore_backup,
            "numbers": self._numbers,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "ohlc-stream": self._ohlc_stream,
        }

    def register(self) -> None:
        actions = self._actions()
        if actions.keys() != EVENTS.keys():
            raise RuntimeError(f"events and handlers differ: {sorted(actions.keys() ^ EVENTS.keys())}")
        self._sio.on("connect", self._connect)
        self._sio.on("disconnect", self._disconnect)
        for name, spec in EVENTS.items():
            self._sio.on(name, self._adapter(name, spec, actions[name]))
        self._sio.on("*", self._unknown)

    # ---- connection lifecycle --------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = token_from(auth, environ)
        session: Session | None = None
        if token is not None:
            try:
                session = await self._sessions.verify(token)
            except DomainError as exc:  # a bad token, or sessions that cannot be read
                log.info("connect refused", extra={"sid": sid, "reason": exc.message})
                refusal = socketio.exceptions.ConnectionRefusedError()
                # Top-level code/message for python clients; `data` for socket.io-client's err.data.
                details = {"code": exc.code, "message": exc.message}
                refusal.error_args = {**details, "data": details}
                raise refusal from None
        state = self._sockets.add(sid, peer_address(environ))
        if session is not None:
            await self._sockets.authenticate(state, session)
        log.info(
            "connect",
            extra={"sid": sid, "user": session.username if session else None, "transport": self._sio.transport(sid)},
        )

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        self._sockets.remove(sid)
        log.info("disconnect", extra={"sid": sid, "reason": str(reason) if reason else None})

    # ---- the adapter every event goes through ----------------------------------------

    def _adapter(self, name: str, spec: EventSpec, action: Action) -> Callable[..., Awaitable[Any]]:
        async def handle(sid: str, *args: Any) -> Any:
            started = time.perf_counter()
            state = self._sockets.get(sid)
            try:
                if state is None:
                    raise Unauthorized("socket is not connected")
                self._admit(state)
                if not spec.guest:
                    self._require_session(state)
                if len(args) > 1:
                    raise InvalidInput("send one payload object", field="payload")
                ack = await action(state, parse(spec.payload, args[0] if args else None))
            except DomainError as exc:
                ack = exc.envelope()
            except Exception:
                log.exception("event failed", extra={"sid": sid, "socket_event": name})
                ack = Internal("internal error; nothing was changed").envelope()
            self._log(name, spec, state, ack, started)
            self._observe(name, ack, started)
            return ack

        return handle

    async def _unknown(self, name: Any, sid: str, *args: Any) -> ErrorEnvelope:
        # `name` is whatever the client sent (the server routes lifecycle and non-string names
        # here too); a long one is cut so the answer stays short.
        started = time.perf_counter()
        shown = repr(name)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        ack = InvalidInput(f"unknown event {shown}", field="event").envelope()
        self._observe(UNKNOWN_EVENT, ack, started)
        return ack

    def _observe(self, name: str, ack: Mapping[str, Any], started: float) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, "ok" if ack.get("ok") is True else ack["error"]["code"], time.perf_counter() - started)
        except Exception:
            log.exception("event observer failed", extra={"socket_event": name})

    def _admit(self, state: SocketState) -> None:
        if state.bucket is None:
            return
        wait = state.bucket.take()
        if wait > 0:
            raise RateLimited("too many events", retry_after=math.ceil(wait * 1000) / 1000)

    def _require_session(self, state: SocketState) -> Session:
        session = state.session
        if session is None:
            raise Unauthorized("log in first")
        if session.expired():
            raise Unauthorized("token expired")
        return session

    def _log(
        self, name: str, spec: EventSpec, state: SocketState | None, ack: Mapping[str, Any], started: float
    ) -> None:
        ok = ack.get("ok") is True
        level = logging.DEBUG if ok and spec.quiet else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "socket_event",
                extra={
                    "sid": state.sid if state else None,
                    "user": state.session.username if state and state.session else None,
                    "socket_event": name,
                    "outcome": "ok" if ok else ack["error"]["code"],
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

    def _user(self, state: SocketState) -> str:
        return self._require_session(state).username

    # ---- events ----------------------------------------------------------------------

    async def _register(self, state: SocketState, p: Credentials) -> RegisterResult:
        return await self._sessions.register(p.username, p.password)

    async def _login(self, state: SocketState, p: Credentials) -> LoginResult:
        body, session = await self._sessions.login(p.username, p.password, state.address)
        await self._sockets.authenticate(state, session)
        return body

    async def _logout(self, state: SocketState, p: Empty) -> EmptyResult:
        await self._sessions.logout(self._require_session(state))
        return {"ok": True}

    async def _ping(self, state: SocketState, p: Empty) -> PingResult:
        return {"ok": True, "ts": int(time.time() * 1000)}

    async def _fetch_csv(self, state: SocketState, p: FetchCsv) -> FetchResult:
        return await self._tables.fetch(p.offset, p.limit, p.since)

    async def _add_csv(self, state: SocketState, p: AddCsv) -> RowResult:
        return await self._tables.add(self._user(state), p.values)

    async def _update_csv(self, state: SocketState, p: UpdateCsv) -> RowResult:
        return await self._tables.update(self._user(state), p.id, p.values, p.version)

    async def _delete_csv(self, state: SocketState, p: DeleteCsv) -> DeleteResult:
        return await self._tables.delete(self._user(state), p.id, p.version)

    async def _lock_row(self, state: SocketState, p: RowRef) -> LockResult:
        return await self._tables.lock(self._user(state), p.id)

    async def _unlock_row(self, state: SocketState, p: RowRef) -> EmptyResult:
        return await self._tables.unlock(self._user(state), p.id)

    async def _list_backups(self, state: SocketState, p: Empty) -> BackupsResult:
        return await self._tables.list_backups()

    async def _restore_backup(self, state: SocketState, p: RestoreBackup) -> RestoreResult:
        return await self._tables.restore(self._user(state), p.name)

    async def _numbers(self, state: SocketState, p: Numbers) -> NumbersResult:
        return {"ok": True, "numbers": await self._streams.numbers(p.limit)}

    def _stream_room(self, p: Subscription) -> str:
        if p.stream == "random_number":
            if p.interval is not None:
                raise InvalidInput("interval is only for the ohlc stream", field="interval")
            return RANDOM_ROOM
        if p.interval is None:
            raise InvalidInput("the ohlc stream needs an interval", field="interval")
        return ohlc_room(p.interval)

    async def _subscribe(self, state: SocketState, p: Subscription) -> SubscribeResult:
        room = self._stream_room(p)
        await self._sockets.join(state, room)
        if p.interval is None:
            return {"ok": True}
        return {"ok": True, "candles": await self._streams.history(p.interval, p.history)}

    async def _unsubscribe(self, state: SocketState, p: Subscription) -> EmptyResult:
        await self._sockets.leave(state, self._stream_room(p))
        if p.stream == "ohlc" and p.interval == "1m":
            await self._sockets.leave(state, LEGACY_OHLC_ROOM)
        return {"ok": True}

    async def _ohlc_stream(self, state: SocketState, p: OhlcStream) -> CandlesResult:
        await self._sockets.join(state, ohlc_room("1m"))
        await self._sockets.join(state, LEGACY_OHLC_ROOM)
        return {"ok": True, "candles": await self._streams.history("1m", 100)}
