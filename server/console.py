"""The built-in browser console: `/` serves the page, `/static/` its scripts, styles and
vendored libraries. Everything is in `server/static/`; nothing is fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Pages change with the server; make the browser revalidate instead of guessing.
NO_CACHE = {"Cache-Control": "no-cache"}


def setup_console(app: web.Application) -> None:
    """Register `GET /` (the console page) and `/static/` (its files)."""
    index = STATIC_DIR / "index.html"

    async def console_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers=NO_CACHE)

    app.router.add_get("/", console_page, name="console")
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    app.on_response_prepare.append(_static_headers)


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")


def same_origin_or(origins: Iterable[str]) -> Callable[[str | None, dict[str, Any]], bool]:
    """An Engine.IO `cors_allowed_origins` check: the server's own origin (the console page)
    is always allowed; any other origin must be one of `origins`."""
    allowed = frozenset(origins)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if not origin:
            return False
        if origin in allowed:
            return True
        host = environ.get("HTTP_HOST")
        scheme = environ.get("wsgi.url_scheme", "http")
        return bool(host) and origin == f"{scheme}://{host}"

    return check
