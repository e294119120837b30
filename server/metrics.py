"""Prometheus metrics: one registry per app, fed by hooks from the layers below, served at `/metrics`.

Counters and histograms move as things happen (socket events, journal commits, broadcasts,
random draws). Gauges describing current state (sockets, locks, rows, seq) are read from the
services right before each scrape, so nothing on the hot path has to keep them up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from handlers.sockets import SocketRegistry
from storage.table_service import TableService

NAMESPACE = "/"
TRANSPORTS = ("websocket", "polling")
KINDS = ("guest", "authenticated")
LOCK_STATES = ("locked", "cooldown")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


def room_size(sio: Any, room: str) -> int:
    """Sockets in a room of the default namespace on this server, without copying it."""
    return len(sio.manager.rooms.get(NAMESPACE, {}).get(room, ()))


@dataclass(frozen=True)
class _Sources:
    sockets: SocketRegistry
    tables: TableService


class Metrics:
    """Every metric of one app, registered in the app's own `CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.sockets_connected = Gauge(
            "tablecast_sockets_connected",
            "Connected Socket.IO sockets by transport and kind.",
            ["transport", "kind"],
            registry=registry,
        )
        self.socket_events = Counter(
            "tablecast_socket_events",
            "Socket events handled, by event and outcome (ok or the error code).",
            ["event", "outcome"],
            registry=registry,
        )
        self.ack_duration = Histogram(
            "tablecast_socket_ack_duration_seconds",
            "Time from receiving a socket event to its ack, by event.",
            ["event"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_duration = Histogram(
            "tablecast_journal_commit_duration_seconds",
            "Duration of one journal group commit (one SQLite transaction).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_batch = Histogram(
            "tablecast_journal_commit_batch_size",
            "Table changes written by one journal group commit.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.broadcast_duration = Histogram(
            "tablecast_broadcast_duration_seconds",
            "Time to hand one broadcast to every recipient socket, by event.",
            ["event"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.broadcast_recipients = Counter(
            "tablecast_broadcast_recipients",
            "Sockets a broadcast was addressed to, summed over broadcasts, by event.",
            ["event"],
            registry=registry,
        )
        self.locks_held = Gauge(
            "tablecast_locks_held",
            "Rows currently locked or cooling down after an edit, by state.",
            ["state"],
            registry=registry,
        )
        self.table_rows = Gauge("tablecast_table_rows", "Rows in the table.", registry=registry)
        self.table_seq = Gauge("tablecast_table_seq", "The table seq: +1 on every table change.", registry=registry)
        self.random_ticks = Counter("tablecast_random_ticks", "Random numbers drawn.", registry=registry)
        self._event_counts: dict[tuple[str, str], Any] = {}
        self._acks: dict[str, Any] = {}
        self._broadcasts: dict[str, tuple[Any, Any]] = {}
        self._sources: _Sources | None = None
        for transport in TRANSPORTS:
            for kind in KINDS:
                self.sockets_connected.labels(transport, kind)
        for lock_state in LOCK_STATES:
            self.locks_held.labels(lock_state)

    def watch(self, sockets: SocketRegistry, tables: TableService) -> None:
        """Where the scrape-time gauges are read from, once the services exist."""
        self._sources = _Sources(sockets, tables)

    # ---- hooks on the hot paths: a dict lookup and an observe, nothing more -----------

    def event_handled(self, event: str, outcome: str, seconds: float) -> None:
        key = (event, outcome)
        count = self._event_counts.get(key)
        if count is None:
            count = self._event_counts[key] = self.socket_events.labels(event, outcome)
        count.inc()
        ack = self._acks.get(event)
        if ack is None:
            ack = self._acks[event] = self.ack_duration.labels(event)
        ack.observe(seconds)

    def journal_committed(self, batch_size: int, seconds: float) -> None:
        self.commit_duration.observe(seconds)
        self.commit_batch.observe(batch_size)

    def broadcast_sent(self, event: str, recipients: int, seconds: float) -> None:
        children = self._broadcasts.get(event)
        if children is None:
            children = self._broadcasts[event] = (
                self.broadcast_duration.labels(event),
                self.broadcast_recipients.labels(event),
            )
        children[0].observe(seconds)
        children[1].inc(recipients)

    def random_drawn(self) -> None:
        self.random_ticks.inc()

    # ---- scrape ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Set the state gauges from the services, right before they are exposed."""
        sources = self._sources
        if sources is None:
            return
        sockets = sources.sockets.counts()
        for transport in TRANSPORTS:
            for kind in KINDS:
                self.sockets_connected.labels(transport, kind).set(sockets[transport, kind])
        stats = await sources.tables.stats()
        self.locks_held.labels("locked").set(stats.locked)
        self.locks_held.labels("cooldown").set(stats.cooling)
        self.table_rows.set(stats.rows)
        self.table_seq.set(stats.seq)

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the Prometheus text format (OpenMetrics when the scraper asks for it)."""
        await self.refresh()
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})
