"""Test harness: the real server as a subprocess on an ephemeral port, real clients.

- `ServerProcess` starts `python run.py` with settings as environment variables and a
  private DATA_DIR; `kill()` sends SIGKILL, `stop()` SIGTERM, `start()` again on the same dir.
- `server` is one shared server per test module (short timers); `make_server` gives a test
  its own, with any settings.
- `login()` gets a token over REST; `connect()` gives a python-socketio AsyncClient that
  records every broadcast it receives (`client.events`, `await client.wait_for(...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

ROOT = Path(__file__).resolve().parents[1]
BROADCASTS = ("csv_update", "lock_status", "random_number", "ohlc", "ohlc-data")
FAST_SETTINGS = {
    "RANDOM_INTERVAL_S": "0.2",
    "LOCK_SWEEP_S": "0.2",
    "CSV_FLUSH_S": "0.2",
    "RATE_LIMIT": "0",
    "LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        # Settings come from self.settings only; coverage's own variables let it measure the server.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.isupper() or k in ("PATH", "HOME", "LANG", "TMPDIR") or k.startswith("COVERAGE_")
        }
        env.update(self.settings)
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "DATA_DIR": str(self.data_dir)})
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, exactly like a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code


def node_with(package: str, modules: Path) -> str:
    """The node executable, once `modules` (a node_modules folder) holds `package`. Skipped
    when missing on a developer's machine, an error in CI."""
    executable = shutil.which("node")
    problem = None
    if executable is None:
        problem = "node is not on PATH"
    elif not (modules / package / "package.json").is_file():
        problem = f"{modules} lacks {package}; run `npm ci --prefix {modules.parent.relative_to(ROOT)}`"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set, so this is an error)")
        pytest.skip(problem)
    assert executable is not None
    return executable


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(settings: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / f"data{len(started)}", settings).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


def unique_user(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


async def login(url: str, username: str | None = None, password: str = "secret-pw") -> str:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{url}/api/login", json={"username": username or unique_user(), "password": password})
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["access_token"])


class Client(socketio.AsyncClient):  # type: ignore[misc]
    """An AsyncClient that records broadcasts and acks with a timeout."""

    def __init__(self) -> None:
        super().__init__(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._arrived = asyncio.Event()
        for name in BROADCASTS:
            self.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def record(data: Any) -> None:
            self.events.append((name, data))
            self._arrived.set()

        return record

    async def ask(self, event: str, data: Any = None, timeout: float = 10) -> dict[str, Any]:
        args = () if data is None else (data,)
        result = await self.call(event, *args, timeout=timeout) if args else await self.call(event, timeout=timeout)
        assert isinstance(result, dict), result
        return result

    async def drop(self) -> None:
        """Close at once, without waiting for a pending long-poll to come back."""
        reader = self.eio.read_loop_task
        await self.eio.disconnect(abort=True)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    def of(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    async def wait_for(self, name: str, predicate: Callable[[Any], bool] = lambda d: True, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for event, data in self.events:
                if event == name and predicate(data):
                    return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} event matching in {timeout}s; got {self.events[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def make(url: str, token: str | None = None, transports: list[str] | None = None, **kw: Any) -> Client:
        client = Client()
        clients.append(client)  # before connecting: a refused client still needs closing
        await client.connect(
            url,
            auth={"token": token} if token else None,
            transports=transports or ["websocket"],
            wait_timeout=10,
            **kw,
        )
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()
        # A socket the server dropped leaves the Engine.IO client's HTTP session open.
        http = getattr(client.eio, "http", None)
        if http is not None and not http.closed:
            await http.close()


@pytest.fixture
async def user_client(
    server: ServerProcess, connect: Callable[..., Awaitable[Client]]
) -> Callable[..., Awaitable[tuple[str, Client]]]:
    """`name, client = await user_client()` - a fresh user logged in on the shared server."""

    async def make(name: str | None = None) -> tuple[str, Client]:
        username = name or unique_user()
        token = await login(server.url, username)
        return username, await connect(server.url, token)

    return make
