"""The Engine.IO server of `FanoutServer`: a long-polling POST over the size limit is answered
413 (payload_too_large) before its body is read; python-engineio would refuse it by closing
the socket and leave the client waiting."""

from __future__ import annotations

from typing import Any

import engineio
from aiohttp import web


class FanoutEngine(engineio.AsyncServer):  # type: ignore[misc]
    async def handle_request(self, *args: Any, **kwargs: Any) -> Any:
        request = args[0] if args else None
        if isinstance(request, web.Request) and request.method == "POST":
            length = request.content_length
            if length is not None and length > self.max_http_buffer_size:
                raise web.HTTPRequestEntityTooLarge(max_size=self.max_http_buffer_size, actual_size=length)
        return await super().handle_request(*args, **kwargs)
