"""Log in, fetch a page, lock a row, edit it, unlock it, and print the broadcasts seen.

pip install "python-socketio[asyncio_client]" aiohttp
python examples/python_client.py [--url http://127.0.0.1:8000] [--user alice] [--row 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import aiohttp
import socketio


async def main(url: str, username: str, password: str, row_id: int) -> int:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/api/login", json={"username": username, "password": password})
        body = await resp.json()
    if not body.get("ok"):
        print("login failed:", body["error"]["message"], file=sys.stderr)
        return 1
    seen: list[tuple[str, Any]] = []
    sio = socketio.AsyncClient(reconnection=False)
    for name in ("csv_update", "lock_status"):
        sio.on(name, lambda data, name=name: seen.append((name, data)))
    await sio.connect(url, auth={"token": body["access_token"]}, transports=["websocket"])
    try:
        page = await sio.call("fetch_csv", {"offset": row_id - 1, "limit": 1})
        row = page["rows"][0]
        print("fetched", json.dumps(row))
        lock = await sio.call("lock_row", {"id": row["id"]})
        if not lock["ok"]:
            print("cannot lock:", lock["error"]["message"], file=sys.stderr)
            return 1
        print("locked until", lock["lock"]["expires_at"])
        column = next(c["name"] for c in page["columns"] if c["type"] == "number")
        edit = await sio.call("update_csv", {"id": row["id"], "values": {column: 123.45}, "version": row["version"]})
        if not edit["ok"]:
            print("edit refused:", edit["error"]["message"], file=sys.stderr)
            return 1
        print("saved", json.dumps(edit["row"]))
        await sio.call("unlock_row", {"id": row["id"]})
        await asyncio.sleep(0.5)  # let the broadcasts of our own changes arrive
    finally:
        await sio.disconnect()
    for name, data in seen:
        print("broadcast", name, json.dumps(data))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default="example_py")
    parser.add_argument("--password", default="example-password")
    parser.add_argument("--row", type=int, default=1)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, args.user, args.password, args.row)))
