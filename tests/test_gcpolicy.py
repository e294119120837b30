"""The garbage-collection policy of a running app: start-up objects frozen, no automatic
full collections, everything restored at shutdown."""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web

from server import gcpolicy


async def test_start_up_objects_are_frozen_and_full_collections_scheduled() -> None:
    before = gc.get_threshold()
    app = web.Application()
    app.cleanup_ctx.append(gcpolicy.gc_ctx)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert gc.get_freeze_count() > 0
        young0, young1, full = gc.get_threshold()
        assert (young0, young1) == before[:2]  # the young generations are collected as before
        assert full > 10**6  # the oldest only on the schedule
        assert any(t.get_name() == "gc-full" for t in asyncio.all_tasks())
    finally:
        await runner.cleanup()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
