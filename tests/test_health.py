from __future__ import annotations

import aiohttp

from tests.conftest import ServerProcess


async def test_healthz_answers_ok_once_loaded(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{server.url}/healthz")
        assert resp.status == 200
        assert await resp.json() == {"ok": True}


async def test_unknown_route_gets_the_error_envelope(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{server.url}/nope")
        assert resp.status == 404
        body = await resp.json()
        assert body["ok"] is False
        assert body["error"]["code"] == "not_found"
