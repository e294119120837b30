"""Domain errors to HTTP: the same envelope as socket acks, with the status each error class defines."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from protocol.errors import DomainError, Internal, InvalidInput, NotFound, PayloadTooLarge, Unauthorized

log = logging.getLogger("tablecast.http")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: DomainError) -> web.Response:
    return web.json_response(error.envelope(), status=error.status)


def _from_http(exc: web.HTTPException) -> DomainError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 413:
        return PayloadTooLarge("request body too large")
    if exc.status == 401:
        return Unauthorized(exc.reason)
    if exc.status == 405:
        return InvalidInput(f"method not allowed: {exc.reason}", field="method")
    return InvalidInput(exc.reason)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:12]
    request["request_id"] = request_id
    try:
        response = await handler(request)
    except DomainError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http(exc))
    except Exception:
        log.exception("unhandled error", extra={"request_id": request_id, "path": request.path})
        response = error_response(Internal("internal error; nothing was changed"))
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    log.info(
        "http",
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "status": response.status,
        },
    )
    return response
