"""The composition root: `create_app(settings)` builds everything; nothing lives at module level."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import aiohttp_cors
from aiohttp import web

from handlers.events import SocketHandlers
from handlers.sessions import SessionService
from handlers.sockets import SocketRegistry
from server import tasks
from server.apidocs import setup_apidocs
from server.broadcast import Broadcaster
from server.console import setup_console
from server.context import BROADCASTER, METRICS, SERVICES, SETTINGS, SIO, Services
from server.errors import error_middleware
from server.fanout import DirectManager, FanoutServer
from server.gcpolicy import gc_ctx
from server.hosts import allowed_hosts_middleware, same_origin_or
from server.metrics import Metrics
from server.rest import routes
from server.settings import Settings
from storage.db import Database
from storage.files import OWNER_ONLY_UMASK, owner_only
from storage.journal import Journal
from storage.locks import InMemoryLockStore
from storage.login_throttle import LoginThrottle
from storage.numbers import StreamService
from storage.table import TableConfig, TableStore
from storage.table_service import PresenceConfig, TableService
from storage.users import AuthConfig, AuthService, load_or_create_secret

log = logging.getLogger("tablecast.app")


def create_app(settings: Settings) -> web.Application:
    hosts = settings.hosts
    app = web.Application(
        middlewares=[error_middleware, allowed_hosts_middleware(hosts)], client_max_size=settings.max_payload_bytes
    )
    app[SETTINGS] = settings
    sio = FanoutServer(
        client_manager=DirectManager(max_queue_bytes=settings.max_send_queue_bytes),
        async_mode="aiohttp",
        cors_allowed_origins=same_origin_or(settings.cors_origins, hosts),
        max_http_buffer_size=settings.max_payload_bytes,
        logger=False,
        engineio_logger=False,
    )
    sio.attach(app)
    app[SIO] = sio
    app[METRICS] = metrics = Metrics()
    app.router.add_get("/metrics", metrics.handle)
    app.add_routes(routes)
    setup_apidocs(app)
    setup_console(app)
    cors = aiohttp_cors.setup(
        app,
        defaults={
            origin: aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
                allow_headers=("Authorization", "Content-Type"), expose_headers="*"
            )
            for origin in settings.cors_origins
        },
    )
    for route in list(app.router.routes()):
        if route.resource is not None and route.resource.canonical.startswith(
            ("/api/", "/auth/", "/record/", "/healthz")
        ):
            cors.add(route)
    app[BROADCASTER] = broadcaster = Broadcaster(sio, metrics)
    app.cleanup_ctx.append(broadcaster.ctx)  # first in, last out: it sends what closing commits
    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(background_ctx)
    app.cleanup_ctx.append(gc_ctx)  # last: freezes what the contexts before it built
    app.on_shutdown.append(disconnect_sockets)
    return app


async def disconnect_sockets(app: web.Application) -> None:
    """Close every socket first: aiohttp waits for open websocket handlers before cleanup."""
    sio = app[SIO]
    if SERVICES in app:
        sids = app[SERVICES].sockets.sids()
        await asyncio.gather(*(sio.disconnect(sid) for sid in sids), return_exceptions=True)
        log.info("sockets closed for shutdown", extra={"sockets": len(sids)})
    await sio.shutdown()


def _table(settings: Settings, metrics: Metrics, broadcaster: Broadcaster) -> TableService:
    store = TableStore(
        TableConfig(
            data_dir=settings.data_dir,
            history_keep=settings.history_keep,
            flush_s=settings.csv_flush_s,
            backup_interval_s=settings.backup_interval_s,
            backup_keep=settings.backup_keep,
            max_cell_chars=settings.max_cell_chars,
        ),
        Journal(settings.db_path),
        listeners=[broadcaster.table_changed],
        on_commit=metrics.journal_committed,
    )
    locks = InMemoryLockStore(
        ttl_s=settings.lock_ttl_s, cooldown_s=settings.edit_cooldown_s, sink=broadcaster.lock_changed
    )
    return TableService(store, locks, PresenceConfig(grace_s=settings.lock_grace_s), admins=settings.admin_users)


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, sio, metrics = app[SETTINGS], app[SIO], app[METRICS]
    # Whatever the server creates from here on is owner-only; the process has no other files.
    os.umask(OWNER_ONLY_UMASK)
    owner_only(settings.data_dir)
    tables = _table(settings, metrics, app[BROADCASTER])
    await tables.open()
    db = await Database.open(settings.db_path)
    try:
        auth = AuthService(
            db,
            load_or_create_secret(settings.data_dir, settings.secret_key),
            AuthConfig(token_ttl_s=settings.token_ttl_s, auto_register=settings.auto_register),
        )
        await auth.init()
        streams = StreamService(db, settings.random_retention_s)
        await streams.init()
        sockets = SocketRegistry(sio, tables, rate_limit=settings.rate_limit, rate_burst=settings.rate_burst)
        sessions = SessionService(auth, sockets, LoginThrottle(settings.login_rate_limit))
        handlers = SocketHandlers(sio, sessions, sockets, tables, streams, on_event=metrics.event_handled)
        handlers.register()
        metrics.watch(sockets, tables)
        app[SERVICES] = Services(auth, sessions, tables, streams, sockets, handlers)
        yield
    finally:
        await tables.close()
        await db.close()


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, sio, services, metrics = app[SETTINGS], app[SIO], app[SERVICES], app[METRICS]
    jobs = [
        asyncio.create_task(
            tasks.every(
                settings.lock_sweep_s, "lock-sweep", lambda: tasks.sweep_locks(services.tables, services.sockets)
            ),
            name="lock-sweep",
        ),
        asyncio.create_task(
            tasks.every(
                settings.random_interval_s, "random", lambda: tasks.draw_number(sio, services.streams, metrics)
            ),
            name="random",
        ),
        asyncio.create_task(
            tasks.every(
                min(tasks.MAINTENANCE_S, settings.random_retention_s / 2),
                "maintenance",
                lambda: tasks.maintenance(services.streams, services.auth),
            ),
            name="maintenance",
        ),
    ]
    url = f"http://{settings.host}:{settings.port}"
    stats = await services.tables.stats()
    log.info("ready", extra={"console": f"{url}/", "docs": f"{url}/docs", "rows": stats.rows})
    yield
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
