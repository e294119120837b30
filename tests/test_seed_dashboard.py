"""The seed dashboards' own clients, unmodified, against the real server.

- The BlackRose dashboard's exact calls, replayed by the npm socket.io-client under node
  (tests/node/seed_dashboard.mjs): `/auth/login`, `/auth/refresh` on a 401, `/record/`, and
  `ohlc-stream` with its `{message}` payload and no ack over polling and websocket at once,
  until a closed 1m candle arrives as `ohlc-data`. That wait takes up to a minute, so the replay
  starts with this module's first test, in a thread of its own, and the last test collects it:
  the tests between run meanwhile.
- The compatibility routes with requests shaped like curl's (a JSON body, a bearer header, no
  cookies): `/auth/login` is `/api/login`, `/record/` is the JSON pages as flat records (one
  snapshot, even under writes), `/auth/refresh` is a clear 401.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Client, ServerProcess, login, node_with, unique_user
from tests.test_node_clients import NODE_DIR, run_node

Connect = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., ServerProcess]
CLOSE_WAIT_S = 75
PASSWORD = "seed-dashboard-pw"
BAR_KEYS = {"time", "open", "high", "low", "close"}


class Replay:
    """The node replay, run to its end in a thread (with its own event loop) beside the tests."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(variables,), name="seed-replay", daemon=True)
        self._thread.start()

    def _run(self, variables: dict[str, str]) -> None:
        try:
            node = node_with("socket.io-client", NODE_DIR / "node_modules")
            self.result = asyncio.run(run_node(node, "seed_dashboard.mjs", variables, timeout=CLOSE_WAIT_S + 45))
        except BaseException as exc:  # pytest's skip and fail too: the last test raises them
            self.error = exc

    def join(self) -> None:
        self._thread.join(CLOSE_WAIT_S + 60)  # run_node's own timeout ends it before this

    async def outcome(self) -> dict[str, Any]:
        await asyncio.to_thread(self.join)
        assert not self._thread.is_alive(), "the node replay did not end"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("seed") / "data", {"RANDOM_INTERVAL_S": "0.2"}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def replay(seed_server: ServerProcess) -> Iterator[Replay]:
    username = unique_user("blackrose")
    variables = {
        "TABLECAST_URL": seed_server.url,
        "TABLECAST_USER": username,
        "TABLECAST_PASSWORD": PASSWORD,
        "TABLECAST_CLOSE_WAIT_MS": str(CLOSE_WAIT_S * 1000),
    }
    started = Replay(variables)
    yield started
    started.join()  # never leave node running past the server


pytestmark = pytest.mark.usefixtures("replay")


async def curl(
    method: str, url: str, *, token: str | None = None, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request as curl sends it: no cookies kept, a JSON body, a bearer header."""
    sent = {"Accept": "*/*", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        sent["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.request(method, url, data=data, headers=sent) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def curl_json(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    status, _, raw = await curl(method, url, **kw)
    return status, json.loads(raw)


def flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-page rows as the seed dashboard's flat records."""
    return [{"id": row["id"], **row["values"]} for row in rows]


def assert_error(status: int, body: Any, http: int, code: str, field: str | None = None) -> None:
    assert status == http, body
    assert body["ok"] is False, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    if field is not None:
        assert body["error"]["field"] == field, body


# ---- POST /auth/login --------------------------------------------------------------------


async def test_auth_login_is_api_login(seed_server: ServerProcess) -> None:
    name = unique_user("seed")
    credentials = {"username": name, "password": PASSWORD}
    seed_status, seed = await curl_json("POST", f"{seed_server.url}/auth/login", body=credentials)
    api_status, api = await curl_json("POST", f"{seed_server.url}/api/login", body=credentials)
    assert seed_status == api_status == 200, (seed, api)
    assert set(seed) == set(api) == {"ok", "access_token", "token_type", "expires_at", "username"}
    assert {k: seed[k] for k in ("ok", "token_type", "username")} == {
        k: api[k] for k in ("ok", "token_type", "username")
    }
    assert "refresh_token" not in seed
    # The token works everywhere an /api/login token does.
    status, page = await curl_json("GET", f"{seed_server.url}/api/fetch_csv?limit=1", token=seed["access_token"])
    assert status == 200, page

    wrong = {"username": name, "password": "not-the-password"}
    seed_status, seed = await curl_json("POST", f"{seed_server.url}/auth/login", body=wrong)
    api_status, api = await curl_json("POST", f"{seed_server.url}/api/login", body=wrong)
    assert_error(seed_status, seed, 401, "unauthorized")
    assert (seed_status, seed) == (api_status, api)


@pytest.mark.parametrize(
    "body",
    [{"username": "someone"}, {"username": "someone", "password": "pw", "remember": True}, {"username": 5}],
    ids=["missing password", "unknown field", "username not a string"],
)
async def test_auth_login_refuses_what_api_login_refuses(seed_server: ServerProcess, body: Any) -> None:
    seed = await curl_json("POST", f"{seed_server.url}/auth/login", body=body)
    api = await curl_json("POST", f"{seed_server.url}/api/login", body=body)
    assert seed == api
    assert_error(*seed, 400, "invalid_input")


# ---- POST /auth/refresh ------------------------------------------------------------------


async def test_auth_refresh_is_a_clear_unauthorized(seed_server: ServerProcess) -> None:
    token = await login(seed_server.url)
    attempts: list[dict[str, Any]] = [{}, {"body": {}}, {"body": {"refresh_token": "r"}}, {"token": token}]
    for kw in attempts:
        status, body = await curl_json("POST", f"{seed_server.url}/auth/refresh", **kw)
        assert_error(status, body, 401, "unauthorized")
        assert "log in again" in body["error"]["message"], body
    # Refusing a refresh revokes nothing.
    assert (await curl_json("GET", f"{seed_server.url}/record/?limit=1", token=token))[0] == 200


# ---- GET /record/ --------------------------------------------------------------------------


async def test_record_is_the_json_pages_as_flat_records(seed_server: ServerProcess) -> None:
    token = await login(seed_server.url)
    status, headers, raw = await curl("GET", f"{seed_server.url}/record/", token=token)
    assert status == 200, raw
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers.get("Transfer-Encoding") == "chunked"  # streamed, not built whole
    records = json.loads(raw)
    _, page = await curl_json("GET", f"{seed_server.url}/api/fetch_csv?limit=10000", token=token)
    assert page["total"] == len(records) >= 100
    assert records == flat(page["rows"])
    names = [c["name"] for c in page["columns"]]
    assert all(list(record) == names for record in records)  # id first, then every column in order


@pytest.mark.parametrize(
    ("query", "start", "stop"),
    [
        ("offset=0&limit=5", 0, 5),
        ("offset=7&limit=3", 7, 10),
        ("offset=95", 95, None),
        ("limit=1", 0, 1),
        ("offset=99&limit=50", 99, None),
        ("offset=100000", 100000, None),
        ("limit=10001", 0, None),
    ],
)
async def test_record_honours_offset_and_limit(
    seed_server: ServerProcess, query: str, start: int, stop: int | None
) -> None:
    token = await login(seed_server.url)
    _, whole = await curl_json("GET", f"{seed_server.url}/record/", token=token)
    status, part = await curl_json("GET", f"{seed_server.url}/record/?{query}", token=token)
    assert status == 200, part
    assert part == whole[start:stop]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("offset=-1", "offset"),
        ("limit=abc", "limit"),
        ("offset=1.5", "offset"),
        ("offset=", "offset"),
        ("limit=1e3", "limit"),
        ("limit=10&bogus=1", "bogus"),
        ("since=1", "since"),
        ("format=csv", "format"),
    ],
)
async def test_record_bad_query_is_invalid_input(seed_server: ServerProcess, query: str, field: str) -> None:
    status, body = await curl_json("GET", f"{seed_server.url}/record/?{query}", token=await login(seed_server.url))
    assert_error(status, body, 400, "invalid_input", field)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer "}],
    ids=["none", "garbage", "basic", "empty"],
)
async def test_record_needs_a_bearer_token(seed_server: ServerProcess, headers: dict[str, str]) -> None:
    status, body = await curl_json("GET", f"{seed_server.url}/record/", headers=headers)
    assert_error(status, body, 401, "unauthorized")


async def test_record_of_a_revoked_token_is_unauthorized(seed_server: ServerProcess) -> None:
    token = await login(seed_server.url)
    assert (await curl("POST", f"{seed_server.url}/api/logout", token=token))[0] == 200
    assert_error(*await curl_json("GET", f"{seed_server.url}/record/", token=token), 401, "unauthorized")


ROWS = 120_000  # more than one forked slice on a machine with two cores or more


def write_table(data_dir: Path, rows: int) -> None:
    data_dir.mkdir(parents=True)
    lines = ["id,user,n,score"] + [f"{i},u{i},0,{i}.5" for i in range(1, rows + 1)]
    (data_dir / "backend_table.csv").write_text("\n".join(lines) + "\n")


async def test_record_is_one_snapshot_while_rows_change(
    make_server: MakeServer, connect: Connect, tmp_path: Path
) -> None:
    """A writer sets the first row's `n` to k, then the last row's: any one moment has
    first >= last >= first - 1, while reading the rows at different moments could give
    last > first."""
    write_table(tmp_path / "big", ROWS)
    server = make_server(data_dir=tmp_path / "big")
    token = await login(server.url)
    writer = await connect(server.url, token)
    for row_id in (1, ROWS):
        assert (await writer.ask("lock_row", {"id": row_id}))["ok"] is True
    stop = asyncio.Event()

    async def write() -> int:
        k = 0
        while not stop.is_set():
            k += 1
            for row_id in (1, ROWS):
                ack = await writer.ask("update_csv", {"id": row_id, "values": {"n": k}})
                assert ack["ok"] is True, ack
        return k

    writing = asyncio.create_task(write())
    try:
        for _ in range(4):
            status, records = await curl_json("GET", f"{server.url}/record/", token=token)
            assert status == 200, records
            assert [r["id"] for r in records] == list(range(1, ROWS + 1))  # the slices join up
            first, last = records[0]["n"], records[-1]["n"]
            assert last <= first <= last + 1, (first, last)
            assert records[ROWS // 2] == {
                "id": ROWS // 2 + 1,
                "user": f"u{ROWS // 2 + 1}",
                "n": 0,
                "score": ROWS // 2 + 1.5,
            }
    finally:
        stop.set()
        writes = await writing
    assert writes > 4, "the writer hardly ran"
    _, records = await curl_json("GET", f"{server.url}/record/?offset={ROWS - 2}", token=token)
    _, page = await curl_json("GET", f"{server.url}/api/fetch_csv?offset={ROWS - 2}&limit=5", token=token)
    assert records == flat(page["rows"])
    assert records[-1]["n"] == writes


# ---- the replay ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/auth/login"), ("GET", "/record/"), ("POST", "/auth/refresh")])
async def test_the_dashboards_origin_may_call_the_seed_routes(
    seed_server: ServerProcess, method: str, path: str
) -> None:
    """The dashboard is served from its own origin (CORS_ORIGINS): its browser asks first."""
    origin = "http://localhost:3000"
    async with aiohttp.ClientSession() as http:
        resp = await http.options(
            seed_server.url + path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert resp.status == 200, await resp.text()
        assert resp.headers.get("Access-Control-Allow-Origin") == origin


async def test_seed_dashboard_replay(replay: Replay, seed_server: ServerProcess, connect: Connect) -> None:
    """Last in this module: it collects the replay the first test started."""
    result = await replay.outcome()

    assert result["login_keys"] == sorted(["ok", "access_token", "token_type", "expires_at", "username"])
    assert result["wrong_password"]["code"] == "unauthorized"
    assert result["refresh"]["status"] == 401
    assert result["refresh"]["error"]["code"] == "unauthorized"

    token = await login(seed_server.url)
    _, page = await curl_json("GET", f"{seed_server.url}/api/fetch_csv?limit=10000", token=token)
    assert result["records"] == flat(page["rows"])  # nothing in this module writes the table
    assert result["record_keys"] == [c["name"] for c in page["columns"]]
    assert result["pages"] == -(-page["total"] // 10)

    bars = {}
    for transport in ("polling", "websocket"):
        seen = result[transport]
        assert seen["transport"] == transport
        assert seen["live_interval"] == "1m"
        assert seen["chart_bars"] >= 1
        assert seen["close_wait_ms"] <= CLOSE_WAIT_S * 1000
        assert set(seen["bar"]) == BAR_KEYS
        bars[transport] = seen["bar"]

    # Each bar is the closed 1m candle the server rebuilds from its stored numbers.
    client = await connect(seed_server.url, token)
    history = await client.ask("subscribe", {"stream": "ohlc", "interval": "1m", "history": 5})
    assert history["ok"] is True, history
    rebuilt = {c["time"]: {k: c[k] for k in BAR_KEYS} for c in history["candles"]}
    for transport, bar in bars.items():
        assert rebuilt.get(bar["time"]) == bar, (transport, bar, rebuilt)
