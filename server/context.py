"""Typed application state keys: the composition root fills them, routes read them."""

from __future__ import annotations

from dataclasses import dataclass

import socketio
from aiohttp import web

from handlers.events import SocketHandlers
from handlers.sessions import SessionService
from handlers.sockets import SocketRegistry
from server.broadcast import Broadcaster
from server.metrics import Metrics
from server.settings import Settings
from storage.numbers import StreamService
from storage.table_service import TableService
from storage.users import AuthService


@dataclass(frozen=True)
class Services:
    auth: AuthService
    sessions: SessionService
    tables: TableService
    streams: StreamService
    sockets: SocketRegistry
    handlers: SocketHandlers


SETTINGS = web.AppKey("settings", Settings)
SIO = web.AppKey("sio", socketio.AsyncServer)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
BROADCASTER = web.AppKey("broadcaster", Broadcaster)
