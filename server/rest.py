"""REST: login/register/logout, the table as JSON pages or a CSV download, and health; and the
seed dashboards' routes (`/auth/login`, `/record/`, `/auth/refresh`), which call the same
services as the `/api/` routes and keep no rule of their own."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from protocol.errors import InvalidInput, Unauthorized
from protocol.payloads import Credentials, FetchCsv, RecordQuery, parse
from server.context import SERVICES
from storage.csv.stream import ByteStream
from storage.users import Session

routes = web.RouteTableDef()


async def _json_body(request: web.Request) -> Any:
    # A cross-site form or `fetch` without a preflight can only send text/plain, form or
    # multipart bodies; requiring JSON keeps other sites from logging in or registering.
    if request.content_type != "application/json":
        raise InvalidInput("send the body as Content-Type: application/json", field="Content-Type")
    try:
        return await request.json()
    # ValueError: also a number over Python's 4300-digit limit; RecursionError: nesting too deep.
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("the body must be a JSON object", field="body") from None


async def _session(request: web.Request) -> Session:
    return await request.app[SERVICES].sessions.verify_header(request.headers.get("Authorization", ""))


def _ok(result: Mapping[str, Any], status: int = 200) -> web.Response:
    """An ok result of `protocol.results` as the answer."""
    return web.json_response(result, status=status)


@routes.post("/api/register")
async def register(request: web.Request) -> web.Response:
    p = parse(Credentials, await _json_body(request))
    return _ok(await request.app[SERVICES].sessions.register(p.username, p.password), status=201)


@routes.post("/auth/login")  # the seed dashboards' path for the same login
@routes.post("/api/login")
async def login(request: web.Request) -> web.Response:
    p = parse(Credentials, await _json_body(request))
    body, _ = await request.app[SERVICES].sessions.login(p.username, p.password, request.remote)
    return _ok(body)


@routes.post("/api/logout")
async def logout(request: web.Request) -> web.Response:
    await request.app[SERVICES].sessions.logout(await _session(request))
    return _ok({"ok": True})


def _integers(request: web.Request, names: Collection[str], skip: Collection[str] = ()) -> dict[str, int]:
    """The query's integer parameters; anything but `names` (and `skip`) is `invalid_input`."""
    numbers: dict[str, int] = {}
    for key, value in request.query.items():
        if key in skip:
            continue
        if key not in names:
            raise InvalidInput(f"unknown query parameter {key!r}", field=key)
        try:
            numbers[key] = int(value)
        except ValueError:
            raise InvalidInput(f"{key} must be an integer", field=key) from None
    return numbers


def _query(request: web.Request) -> tuple[dict[str, int], bool]:
    wants_csv = "text/csv" in request.headers.get("Accept", "")
    for value in request.query.getall("format", ()):
        if value not in ("csv", "json"):
            raise InvalidInput("format is csv or json", field="format")
        wants_csv = value == "csv"
    return _integers(request, ("offset", "limit", "since"), skip=("format",)), wants_csv


async def _relay(request: web.Request, stream: ByteStream, headers: Mapping[str, str]) -> web.StreamResponse:
    """Send `stream` as the answer, and close it."""
    try:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        # A failure past this point cuts the transfer short: the client never sees the
        # chunked body end, so a truncated answer cannot pass for a whole one.
        async for chunk in stream.chunks():
            await response.write(chunk)
        await response.write_eof()
    finally:
        await stream.close()
    return response


@routes.get("/api/fetch_csv")
async def fetch_csv(request: web.Request) -> web.StreamResponse:
    await _session(request)
    tables = request.app[SERVICES].tables
    numbers, wants_csv = _query(request)
    p = parse(FetchCsv, numbers)
    if not wants_csv:
        return _ok(await tables.fetch(p.offset, p.limit, p.since))
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="backend_table.csv"',
    }
    return await _relay(request, await tables.export(), headers)


@routes.get("/record/")
async def records(request: web.Request) -> web.StreamResponse:
    """The seed dashboards' table fetch: every row (or `offset`/`limit`'s slice) as a JSON array
    of flat records, streamed from one snapshot."""
    await _session(request)
    p = parse(RecordQuery, _integers(request, ("offset", "limit")))
    stream = await request.app[SERVICES].tables.records(p.offset, p.limit)
    return await _relay(request, stream, {"Content-Type": "application/json; charset=utf-8"})


@routes.post("/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    # No refresh tokens are issued: a clear 401 makes the seed dashboard log out and log in again.
    raise Unauthorized("refresh tokens are not issued; log in again with POST /auth/login")


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _ok({"ok": True})
