"""Which host the server is, judged from ALLOWED_HOSTS and never from a request alone.

A page on another site can make a browser send requests here under that site's own name
(DNS rebinding: `evil.example` resolving to this server), with `Host: evil.example` and
`Origin: http://evil.example`. Refusing every request whose `Host` is not an allowed host
stops that, and the Socket.IO origin check counts an origin as the server's own only when
its host is an allowed one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from protocol.errors import InvalidInput

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OriginCheck = Callable[[str | None, dict[str, Any]], bool]


def host_name(authority: str) -> str | None:
    """The host of a `Host` header value (`name`, `name:port`, `[v6]:port`), lowercased and
    without brackets; None when it is not of that form."""
    value = authority.strip().lower()
    if not value or any(c in value for c in "@/\\ "):
        return None
    if value.startswith("["):
        name, closed, rest = value[1:].partition("]")
        if not closed:
            return None
    elif value.count(":") > 1:  # a bare IPv6 address: no port can be told apart
        return value
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isdigit()):
        return None
    return name or None


def allowed_hosts_middleware(hosts: Collection[str]) -> Middleware:
    """Refuse (400, naming ALLOWED_HOSTS) a request whose `Host` is not an allowed host: every
    route, the Socket.IO handshake and its websocket included."""
    allowed = frozenset(hosts)

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = request.headers.get("Host", "")
        if host_name(raw) not in allowed:
            raise InvalidInput(
                f"Host {raw[:100]!r} is not one this server answers to; add it to ALLOWED_HOSTS", field="Host"
            )
        return await handler(request)

    return check_host


def same_origin_or(origins: Iterable[str], hosts: Collection[str]) -> OriginCheck:
    """An Engine.IO `cors_allowed_origins` check: any origin of `origins`, or the server's own
    origin (the console page): `http(s)://<allowed host>[:port]`, the very host and port the
    request was sent to."""
    listed = frozenset(origins)
    allowed = frozenset(hosts)

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        if not origin:
            return False
        if origin in listed:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        # Either scheme: behind a TLS proxy the page is https while this server sees http.
        if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.username:
            return False
        own = str(environ.get("HTTP_HOST", "")).lower()
        return host_name(parts.netloc) in allowed and host_name(own) in allowed and parts.netloc.lower() == own

    return check
