"""The client examples in examples/ run against a live server, so they never rot."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from tests.conftest import ROOT, ServerProcess, node_with

EXAMPLES = ROOT / "examples"


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return int(proc.returncode or 0), out.decode(), err.decode()


def broadcasts(output: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for line in output.splitlines():
        if line.startswith("broadcast "):
            _, name, data = line.split(" ", 2)
            found.append((name, json.loads(data)))
    return found


async def test_python_example(server: ServerProcess) -> None:
    code, out, err = await run(sys.executable, str(EXAMPLES / "python_client.py"), "--url", server.url, "--row", "5")
    assert code == 0, err
    assert '"id": 5' in out
    seen = broadcasts(out)
    assert [d["reason"] for n, d in seen if n == "lock_status"] == ["acquired", "released"]
    updates = [d for n, d in seen if n == "csv_update"]
    assert len(updates) == 1
    assert updates[0]["row"]["values"]["pnl"] == 123.45


async def test_node_example(server: ServerProcess) -> None:
    node = node_with("socket.io-client", EXAMPLES / "node_modules")
    code, out, err = await run(node, str(EXAMPLES / "node_client.mjs"), server.url, "example_js", "6")
    assert code == 0, err
    seen = broadcasts(out)
    assert [d["reason"] for n, d in seen if n == "lock_status"] == ["acquired", "released"]
    updates = [d for n, d in seen if n == "csv_update"]
    assert len(updates) == 1
    assert updates[0]["row"]["id"] == 6
    assert updates[0]["row"]["values"]["pnl"] == 67.89
