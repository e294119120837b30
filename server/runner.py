"""Serving the app: `serve` runs it until SIGINT/SIGTERM, like `web.run_app`, with one change.

aiohttp's HTTP parser refuses some requests before any route or middleware sees them (a
request line or header past 8190 bytes, a malformed header); its answer is a text/plain 400
and an error-level traceback in the log, once per such request. Here that answer is the
documented error envelope and the log gets one short line. aiohttp has no public hook for it:
the protocol class is created by `web.Server.__call__` and the server by the runner, so both
are subclassed (`check_support` is not needed: a missing hook fails the tests that pin it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from protocol.errors import InvalidInput
from server.errors import error_response

log = logging.getLogger("tablecast.http")

_REASON_CHARS = 120


class _Protocol(RequestHandler):
    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # The parser's message may quote the client's bytes: cut it, and log it as data.
        reason = str(exc.message)[:_REASON_CHARS]
        log.info("http request refused by the parser", extra={"remote": request.remote, "reason": reason})
        response = error_response(InvalidInput(f"malformed HTTP request: {reason}", field="request"))
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # runs the app's startup
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )


def serve(app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
    """Serve `app` on host:port until SIGINT or SIGTERM, then run its cleanup.

    Raises whatever the app's startup raises (a table that cannot load, a port in use)."""
    runner = _Runner(app, handle_signals=True, access_log=None, shutdown_timeout=shutdown_timeout)

    async def run() -> None:
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit in the loop
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(run())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        loop.run_until_complete(_settle(main))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _settle(main: asyncio.Task[Any]) -> None:
    # The cancelled task runs the runner's cleanup (the final checkpoint) before it ends.
    await asyncio.gather(main, return_exceptions=True)
