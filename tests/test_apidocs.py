"""The generated API documents against the running server.

- /openapi.json is a valid OpenAPI 3.1 document (openapi-spec-validator) that names every REST
  route, and schemathesis finds the live answers conform to it (statuses, content types,
  bodies) with no 5xx, using a real bearer token.
- /asyncapi.json is a valid AsyncAPI 3.0 document (the npm @asyncapi/parser, under node) that
  names every event the handlers register and every broadcast, and real acks, broadcasts and
  connect_error data validate against its schemas.
- /docs is a self-contained HTML page that loads both documents.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import schemathesis
import socketio
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from schemathesis.core.result import Ok

from protocol import errors as domain_errors
from protocol.errors import ERRORS, HTTP_STATUS
from protocol.events import BROADCASTS, EVENTS
from protocol.values import BACKUP_NAME_PATTERN
from server.apidocs import ASYNCAPI_PATH, DOCS_PATH, OPENAPI_PATH, rest_route_keys
from tests.conftest import BROADCASTS as RECORDED_BROADCASTS
from tests.conftest import Client, ServerProcess, login, node_with, unique_user

NODE_DIR = Path(__file__).resolve().parent / "node"
DOC_URI = "urn:tablecast:asyncapi"
OPENAPI_URI = "urn:tablecast:openapi"
MAX_EXAMPLES = 25
CHECKS = (
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
)


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(url)
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert isinstance(body, dict)
        return body


# ---- OpenAPI ----------------------------------------------------------------------------------


async def test_openapi_is_valid_and_lists_every_route(server: ServerProcess) -> None:
    doc = await get_json(server.url + OPENAPI_PATH)
    validate_openapi(doc)
    assert doc["openapi"].startswith("3.1")

    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    registered = rest_route_keys() | {("GET", OPENAPI_PATH), ("GET", ASYNCAPI_PATH), ("GET", DOCS_PATH)}
    assert registered <= documented, registered - documented
    assert documented <= registered, documented - registered
    assert {("POST", "/api/register"), ("POST", "/api/login"), ("POST", "/api/logout")} <= documented
    assert {("GET", "/api/fetch_csv"), ("GET", "/healthz")} <= documented

    # The seed dashboards' routes: documented, and marked as compatibility routes.
    compat = {("POST", "/auth/login"), ("GET", "/record/"), ("POST", "/auth/refresh")}
    assert compat <= documented
    assert "compat" in {tag["name"] for tag in doc["tags"]}
    for method, path in compat:
        operation = doc["paths"][path][method.lower()]
        assert operation["tags"] == ["compat"], path
        assert operation["description"].startswith("Compatibility route"), path
    seed_login, api_login = doc["paths"]["/auth/login"]["post"], doc["paths"]["/api/login"]["post"]
    assert seed_login["requestBody"] == api_login["requestBody"]
    assert seed_login["responses"] == api_login["responses"]
    record = doc["paths"]["/record/"]["get"]
    assert {p["name"] for p in record["parameters"]} == {"offset", "limit"}
    assert record["security"] == [{"bearer": []}]
    assert record["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Records"
    }
    records = doc["components"]["schemas"]["Records"]
    assert records["type"] == "array"
    assert records["items"] == {"$ref": "#/components/schemas/Record"}
    assert doc["components"]["schemas"]["Record"]["required"] == ["id"]
    assert set(doc["paths"]["/auth/refresh"]["post"]["responses"]) == {"401", "500"}

    fetch = doc["paths"]["/api/fetch_csv"]["get"]
    assert {p["name"] for p in fetch["parameters"]} == {"offset", "limit", "since", "format"}
    assert set(fetch["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert fetch["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/api/register"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Credentials"
    }
    # Each error status is the error envelope, limited to the codes that status carries.
    for path, item in doc["paths"].items():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/ErrorEnvelope"}, path
                codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                assert {HTTP_STATUS[code] for code in codes} == {int(status)}, (path, status, codes)


def test_error_codes_are_the_domain_errors() -> None:
    classes = [getattr(domain_errors, name) for name in dir(domain_errors)]
    errors = {c for c in classes if isinstance(c, type) and issubclass(c, domain_errors.DomainError)}
    assert set(ERRORS) == errors - {domain_errors.DomainError}
    assert len({c.code for c in ERRORS}) == len(ERRORS)
    assert {c.code: c.status for c in ERRORS} == HTTP_STATUS


def test_rest_answers_conform_to_openapi(server: ServerProcess) -> None:
    """Schemathesis, bounded: positive and negative cases for every operation, valid token."""
    schema = schemathesis.openapi.from_url(server.url + OPENAPI_PATH)
    token = _login_sync(server.url)
    registry: Registry[Any] = Registry().with_resource(OPENAPI_URI, DRAFT202012.create_resource(schema.raw_schema))
    started = time.monotonic()
    calls: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        raw = schema.raw_schema["paths"][operation.path][operation.method.lower()]
        modes = [schemathesis.GenerationMode.POSITIVE]
        if "parameters" in raw or "requestBody" in raw:  # something to get wrong
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz(server.url, operation, mode=mode, token=token, calls=calls, registry=registry)
    elapsed = time.monotonic() - started
    assert elapsed < 90, f"schemathesis took {elapsed:.0f} s"
    assert set(calls) >= {"POST /api/register", "POST /api/login", "POST /api/logout", "GET /api/fetch_csv"}
    assert set(calls) >= {"POST /auth/login", "GET /record/", "POST /auth/refresh"}
    assert {200, 400} <= calls["GET /record/"], calls
    assert calls["POST /auth/refresh"] == {401}, calls
    # The valid token got real pages, and bad input got the documented 400.
    assert {200, 400} <= calls["GET /api/fetch_csv"], calls
    assert calls["POST /api/register"] & {201, 409}, calls  # well-formed bodies got past validation
    assert 200 in calls["POST /api/logout"], calls


def _fuzz(
    url: str,
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    *,
    mode: schemathesis.GenerationMode,
    token: str,
    calls: dict[str, set[int]],
    registry: Registry[Any],
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    fresh_token = operation.path == "/api/logout"  # logging out revokes the token it used

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        bearer = _login_sync(url) if fresh_token else token
        response = case.call_and_validate(
            base_url=url, headers={"Authorization": f"Bearer {bearer}"}, checks=list(CHECKS), timeout=10
        )
        calls.setdefault(label, set()).add(response.status_code)
        # Strict JSON Schema on JSON bodies as well: no key the document does not name.
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            status = str(response.status_code)
            where = ("paths", operation.path, operation.method.lower(), "responses", status, "content")
            errors = schema_errors(registry, OPENAPI_URI, *where, "application/json", "schema", data=response.json())
            assert not errors, f"{label} {status}: {errors}\n{response.text[:1000]}"

    run()


def _login_sync(url: str) -> str:
    body = json.dumps({"username": unique_user("st"), "password": "pw"}).encode()
    request = urllib.request.Request(f"{url}/api/login", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


# ---- AsyncAPI -----------------------------------------------------------------------------------


async def test_asyncapi_lists_every_event_and_broadcast(server: ServerProcess) -> None:
    doc = await get_json(server.url + ASYNCAPI_PATH)
    assert doc["asyncapi"] == "3.0.0"
    operations, messages = doc["operations"], doc["components"]["messages"]
    channel = doc["channels"]["socketio"]
    assert channel["address"] == "/socket.io/"
    assert set(channel["messages"]) == set(messages)

    events = EVENTS
    received = {op["messages"][0]["$ref"].rsplit("/", 1)[1] for op in operations.values() if op["action"] == "receive"}
    assert received == {*events, "connect"}
    for name, event in events.items():
        operation = operations[name]
        assert operation["action"] == "receive"
        assert operation["x-guest"] is event.guest
        assert messages[name]["payload"] == {"$ref": f"#/components/schemas/{event.payload.__name__}"}
        assert event.payload.__name__ in doc["components"]["schemas"]
        ack = operation["reply"]["messages"][0]["$ref"].rsplit("/", 1)[1]
        assert messages[ack]["payload"] == {
            "oneOf": [
                {"$ref": f"#/components/schemas/{event.result_name}"},
                {"$ref": "#/components/schemas/ErrorEnvelope"},
            ]
        }
    assert {"register", "login", "ping"} == {name for name, event in events.items() if event.guest}
    assert {name for name, operation in operations.items() if operation.get("x-ack-optional")} == {"ohlc-stream"}

    # ohlc-stream takes any object (the seed dashboard's `{message}`), needs no ack; nothing else does.
    schemas = doc["components"]["schemas"]
    stream = schemas[events["ohlc-stream"].payload.__name__]
    assert stream["additionalProperties"] is True
    assert {"message": "Start streaming OHLC data"} in stream["examples"]
    assert "without an ack callback" in operations["ohlc-stream"]["description"]
    assert "ohlc-stream" in doc["info"]["description"]
    for name, event in events.items():
        if name != "ohlc-stream":
            assert schemas[event.payload.__name__].get("additionalProperties") is False, name
    # A backup name has one form; the document says which.
    name_schema = schemas["RestoreBackup"]["properties"]["name"]["anyOf"][0]
    assert name_schema["pattern"] == BACKUP_NAME_PATTERN

    sent = {op["messages"][0]["$ref"].rsplit("/", 1)[1] for op in operations.values() if op["action"] == "send"}
    assert sent == set(BROADCASTS) == set(RECORDED_BROADCASTS)

    connect = operations["connect"]
    assert messages["connect"]["payload"] == {"$ref": "#/components/schemas/ConnectAuth"}
    assert connect["reply"]["messages"] == [{"$ref": "#/channels/socketio/messages/connect_error"}]
    assert "auth: {token}" in connect["description"]
    assert "Authorization: Bearer" in connect["description"]
    assert "?token=" in connect["description"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerHeader"]["scheme"] == "bearer"
    assert schemes["tokenQuery"] == {**schemes["tokenQuery"], "in": "query", "name": "token"}
    assert set(channel["bindings"]["ws"]["query"]["properties"]) == {"token"}


@pytest.fixture
def node_parser() -> str:
    return node_with("@asyncapi/parser", NODE_DIR / "node_modules")


async def test_asyncapi_passes_the_official_parser(server: ServerProcess, node_parser: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        node_parser,
        str(NODE_DIR / "asyncapi_validate.mjs"),
        cwd=NODE_DIR,
        env={**os.environ, "TABLECAST_URL": server.url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstderr:\n{err}\nstdout:\n{out}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["version"] == "3.0.0"
    assert result["channels"] == ["/socket.io/"]
    operations = result["operations"]
    for name in EVENTS:
        assert operations[name] == {"action": "receive", "messages": [name], "reply": [f"{name}.ack"]}
    for name in BROADCASTS:
        assert operations[f"on_{name}"] == {"action": "send", "messages": [name], "reply": []}
    assert operations["connect"]["reply"] == ["connect_error"]


def schema_errors(registry: Registry[Any], uri: str, *path: str, data: Any) -> list[str]:
    """`data` against the schema at `path` inside the document registered as `uri`."""
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)
    validator = jsonschema.Draft202012Validator({"$ref": f"{uri}#/{pointer}"}, registry=registry)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


class Checker:
    """Validates live data against the AsyncAPI document's message payload schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
        self.seen: set[str] = set()

    def errors(self, message: str, data: Any) -> list[str]:
        return schema_errors(self.registry, DOC_URI, "components", "messages", message, "payload", data=data)

    def __call__(self, message: str, data: Any) -> Any:
        errors = self.errors(message, data)
        assert not errors, f"{message}: {errors}\n{json.dumps(data)[:2000]}"
        self.seen.add(message)
        return data


async def test_live_socket_traffic_matches_asyncapi(
    make_server: Callable[..., ServerProcess], connect: Callable[..., Awaitable[Client]]
) -> None:
    server = make_server({"EDIT_COOLDOWN_S": "1"})
    check = Checker(await get_json(server.url + ASYNCAPI_PATH))
    user_a, user_b = unique_user("doc_a"), unique_user("doc_b")
    a = await connect(server.url, await login(server.url, user_a))
    b = await connect(server.url, await login(server.url, user_b))
    guest = await connect(server.url)

    async def ask(client: Client, event: str, payload: Any = None, ok: bool | None = True) -> dict[str, Any]:
        ack: dict[str, Any] = check(f"{event}.ack", await client.ask(event, payload))
        if ok is not None:
            assert ack["ok"] is ok, (event, payload, ack)
        if payload is not None and not ack["ok"] and ack["error"]["code"] == "invalid_input":
            assert check.errors(event, payload), f"the document accepts {payload} but the server refused it"
        elif payload is not None:
            check(event, payload)
        return ack

    await ask(guest, "ping", {})
    assert (await ask(guest, "fetch_csv", {}, ok=False))["error"]["code"] == "unauthorized"
    await ask(guest, "register", {"username": unique_user("doc_g"), "password": "pw"})
    await ask(guest, "login", {"username": unique_user("doc_g"), "password": "pw"})
    await ask(guest, "logout", {})

    page = await ask(a, "fetch_csv", {"limit": 5})
    seq = page["seq"]
    added = (await ask(a, "add_csv", {"values": {"user": "docs", "pnl": 1.5}}))["row"]
    row_id = added["id"]
    await ask(a, "lock_row", {"id": row_id})
    locked = await ask(b, "lock_row", {"id": row_id}, ok=False)
    assert locked["error"]["code"] == "locked"
    assert (await ask(b, "unlock_row", {"id": row_id}, ok=False))["error"]["code"] == "not_owner"
    conflict = await ask(a, "update_csv", {"id": row_id, "values": {"pnl": 2}, "version": 0}, ok=False)
    assert conflict["error"]["code"] == "conflict"
    await ask(a, "update_csv", {"id": row_id, "values": {"pnl": 2.25}, "version": added["version"]})
    await ask(a, "unlock_row", {"id": row_id})
    assert (await ask(a, "lock_row", {"id": row_id}, ok=False))["error"]["code"] == "cooldown"
    assert (await ask(a, "update_csv", {"id": 1, "values": {"pnl": 1}}, ok=False))["error"]["code"] == "lock_required"
    assert (await ask(a, "fetch_csv", {"limit": 0}, ok=False))["error"]["code"] == "invalid_input"
    other = (await ask(a, "add_csv", {"values": {}}))["row"]["id"]
    await ask(a, "lock_row", {"id": other})
    await ask(a, "delete_csv", {"id": other})
    assert (await ask(a, "delete_csv", {"id": other}, ok=False))["error"]["code"] == "not_found"
    changes = await ask(a, "fetch_csv", {"since": seq})
    assert [c["op"] for c in changes["changes"]] == ["add", "update", "add", "delete"]
    assert "reset" in await ask(a, "fetch_csv", {"since": 10**9, "limit": 2})

    await ask(a, "list_backups", {})
    await ask(a, "numbers", {"limit": 5})
    await ask(a, "subscribe", {"stream": "ohlc", "interval": "1s", "history": 3})
    await ask(a, "subscribe", {"stream": "random_number"})
    await ask(a, "unsubscribe", {"stream": "ohlc", "interval": "1s"})
    await ask(a, "subscribe", {"stream": "ohlc", "interval": "1s"})
    await ask(b, "ohlc-stream")
    missing = {"name": "backend_table-20000101T000000.000Z-seq1-rows1.csv"}
    assert (await ask(a, "restore_backup", missing, ok=False))["error"]["code"] == "not_found"
    assert (await ask(a, "restore_backup", {"name": "../backend.db"}, ok=False))["error"]["field"] == "name"
    await ask(b, "ohlc-stream", {"message": "Start streaming OHLC data"})

    await a.wait_for("random_number")
    await a.wait_for("ohlc")
    await a.wait_for("lock_status", lambda d: d["reason"] == "cooldown_over", timeout=30)
    for client in (a, b):
        for name, data in client.events:
            check(name, data)
    assert {"csv_update", "lock_status", "random_number", "ohlc"} <= check.seen

    refused: list[Any] = []
    bad = socketio.AsyncClient(reconnection=False)
    bad.on("connect_error", refused.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect(server.url, auth={"token": "not-a-token"}, transports=["websocket"], wait_timeout=10)
    await bad.disconnect()
    assert refused
    assert check("connect_error", refused[0])["code"] == "unauthorized"
    check("connect", {"token": "t"})


# ---- the page -----------------------------------------------------------------------------------


async def test_docs_page_renders_both_documents(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(server.url + DOCS_PATH)
        html = await resp.text()
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert "/openapi.json" in html
    assert "/asyncapi.json" in html
    assert html.lstrip().lower().startswith("<!doctype html>")
    # Self-contained: no external scripts, styles or fonts.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html, re.IGNORECASE)
    assert "http://" not in html
    assert "https://" not in html
