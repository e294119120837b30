"""When Python's cyclic garbage collector may stop the event loop.

A full collection walks every tracked object: about 200,000 with 1,000 sockets connected,
~0.2 s with the loop stopped, started whenever the oldest generation has grown by a quarter
(a burst of connections does that, and such collections found nothing to free). So:

- what is alive once the server has started (modules, the loaded table) is frozen out of
  every collection; that also keeps collections from touching, and copying, the pages the
  forked CSV exports share with the server;
- the young generations are collected as usual: cheap, and where almost all garbage dies;
- the oldest generation is collected on a schedule instead, every `FULL_COLLECTION_S`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

log = logging.getLogger("tablecast.gc")

FULL_COLLECTION_S = 300.0
_NEVER = 1 << 30  # gen1 collections before an automatic full one: never


async def gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """Freeze what start-up made, then run full collections on a schedule (a cleanup_ctx
    placed after the contexts that load the table)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(thresholds[0], thresholds[1], _NEVER)
    task = asyncio.create_task(_collect_every(FULL_COLLECTION_S), name="gc-full")
    log.info("gc tuned", extra={"frozen": gc.get_freeze_count(), "full_every_s": FULL_COLLECTION_S})
    try:
        yield
    finally:
        task.cancel()
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _collect_every(period_s: float) -> None:
    while True:
        await asyncio.sleep(period_s)
        started = time.perf_counter()
        found = gc.collect()
        log.info("gc full collection", extra={"collected": found, "ms": round((time.perf_counter() - started) * 1000)})
