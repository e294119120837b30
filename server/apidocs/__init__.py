"""API documents generated from the wire contract (`protocol`): `GET /openapi.json`
(OpenAPI 3.1, the REST routes), `GET /asyncapi.json` (AsyncAPI 3.0, the Socket.IO events and
broadcasts) and `GET /docs` (a page, `server/static/docs.html`, that renders both).

Both documents are built once, when the app is created; a REST route without a
documentation entry stops the build."""

from __future__ import annotations

import json
from importlib import metadata

from aiohttp import web

from server.apidocs.asyncapi import build_asyncapi
from server.apidocs.openapi import ASYNCAPI_PATH, DOCS_PATH, OPENAPI_PATH, build_openapi, rest_route_keys
from server.console import STATIC_DIR
from server.context import SETTINGS

__all__ = ["ASYNCAPI_PATH", "DOCS_PATH", "OPENAPI_PATH", "build_asyncapi", "build_openapi", "rest_route_keys"]

# The page's script and styles are inline: it stays one self-contained file.
_DOCS_CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


def _version() -> str:
    try:
        return metadata.version("tablecast")
    except metadata.PackageNotFoundError:
        return "1.0.0"


def setup_apidocs(app: web.Application) -> None:
    """Build both documents now and serve them, with the page that renders them."""
    settings = app[SETTINGS]
    version = _version()
    openapi = json.dumps(build_openapi(version), separators=(",", ":")).encode()
    asyncapi = json.dumps(build_asyncapi(f"{settings.host}:{settings.port}", version), separators=(",", ":")).encode()
    page = (STATIC_DIR / "docs.html").read_bytes()

    def serve(body: bytes, content_type: str, extra: dict[str, str] | None = None) -> web.Response:
        headers = {"Cache-Control": "no-cache", **(extra or {})}
        return web.Response(body=body, content_type=content_type, headers=headers)

    async def openapi_json(request: web.Request) -> web.Response:
        return serve(openapi, "application/json")

    async def asyncapi_json(request: web.Request) -> web.Response:
        return serve(asyncapi, "application/json")

    async def docs_page(request: web.Request) -> web.Response:
        return serve(page, "text/html", {"Content-Security-Policy": _DOCS_CSP})

    app.router.add_get(OPENAPI_PATH, openapi_json, name="openapi")
    app.router.add_get(ASYNCAPI_PATH, asyncapi_json, name="asyncapi")
    app.router.add_get(DOCS_PATH, docs_page, name="apidocs")
