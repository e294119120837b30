"""The built-in browser console: `/` serves the page, `/static/` its scripts, styles and
vendored libraries. Everything is in `server/static/`; nothing is fetched from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CHARTS = STATIC_DIR / "vendor" / "lightweight-charts.standalone.production.js"

# Pages change with the server; make the browser revalidate instead of guessing.
NO_CACHE = {"Cache-Control": "no-cache"}
# On every answer: no guessing of types, no URLs handed to other sites, no framing.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# lightweight-charts adds one inline <style> (its attribution logo's); the CSP allows exactly
# that text by its hash, so no other inline style or script can run.
_CHART_STYLE = re.compile(rb'\.innerText="(a#tv-attr-logo\{[^"]*)"')


def console_csp() -> str:
    """The console page's Content-Security-Policy: its own scripts, styles and socket only."""
    found = _CHART_STYLE.search(CHARTS.read_bytes())
    if found is None:
        raise RuntimeError(f"{CHARTS.name}: the chart's inline style is not where it was; update console_csp")
    digest = base64.b64encode(hashlib.sha256(found.group(1)).digest()).decode()
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            f"style-src 'self' 'sha256-{digest}'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def setup_console(app: web.Application) -> None:
    """Register `GET /` (the console page) and `/static/` (its files)."""
    index = STATIC_DIR / "index.html"
    headers = {**NO_CACHE, "Content-Security-Policy": console_csp()}

    async def console_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index, headers=headers)

    app.router.add_get("/", console_page, name="console")
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    app.on_response_prepare.append(_headers)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")
