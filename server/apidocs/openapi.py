"""The OpenAPI 3.1 document of the REST routes. Every route `server.rest` registers has an
entry here (and only those): the build stops otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from protocol.errors import HTTP_STATUS, ErrorEnvelope
from protocol.payloads import Credentials, FetchCsv, Payload, RecordQuery
from protocol.results import EmptyResult, FetchResult, HealthResult, LoginResult, Records, RegisterResult
from server.apidocs.schemas import Named, component_schemas, named, query_schema, ref
from server.rest import routes as rest_routes

OPENAPI_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"
DOCS_PATH = "/docs"
REF = "#/components/schemas/{model}"
TITLE = "Tablecast"
DESCRIPTION = (
    "A realtime, lock-aware CSV table server. Every answer is `{ok: true, ...result}` or "
    "`{ok: false, error: {code, message, ...details}}`; REST answers carry a matching HTTP status."
)
_FETCH_RESULT = named(FetchResult, "FetchResult")
_COMPAT = (
    "Compatibility route for the dashboards written for the backends Tablecast replaces, so they work "
    "unmodified; new clients use the `/api/` routes and Socket.IO. "
)
_LOGIN = (
    "Get a bearer token. While AUTO_REGISTER is on, an unknown username is registered on first login; "
    "after that its password must match."
)


@dataclass(frozen=True)
class RouteDoc:
    tag: str
    summary: str
    description: str
    status: int | None  # None: the route never succeeds
    result: Named | None
    result_doc: str
    errors: tuple[str, ...]
    body: type[Payload] | None = None
    bearer: bool = False
    query: type[Payload] | None = None
    csv: bool = False


REST: dict[tuple[str, str], RouteDoc] = {
    ("POST", "/api/register"): RouteDoc(
        "auth",
        "Create an account",
        "Register a username with a password.",
        201,
        named(RegisterResult),
        "Success.",
        ("invalid_input", "username_taken", "payload_too_large", "unavailable", "internal"),
        body=Credentials,
    ),
    ("POST", "/api/login"): RouteDoc(
        "auth",
        "Log in",
        _LOGIN,
        200,
        named(LoginResult),
        "Success.",
        ("invalid_input", "unauthorized", "payload_too_large", "unavailable", "internal"),
        body=Credentials,
    ),
    ("POST", "/api/logout"): RouteDoc(
        "auth",
        "Log out",
        "Revoke the bearer token for good; every socket that used it becomes a guest at once.",
        200,
        named(EmptyResult),
        "Success with nothing more to say.",
        ("unauthorized", "unavailable", "internal"),
        bearer=True,
    ),
    ("GET", "/api/fetch_csv"): RouteDoc(
        "table",
        "Fetch the table",
        "A JSON page of the table (the same result as the `fetch_csv` event), or with `?format=csv` or "
        "`Accept: text/csv` the whole table as a CSV download, in which a text cell starting with `=`, `+`, `-`, "
        "`@`, tab or CR is prefixed with `'`.",
        200,
        _FETCH_RESULT,
        "A page, or (with `since`) the changes since then.",
        ("invalid_input", "unauthorized", "unavailable", "internal"),
        bearer=True,
        query=FetchCsv,
        csv=True,
    ),
    ("POST", "/auth/login"): RouteDoc(
        "compat",
        "Log in (seed-dashboard route)",
        _COMPAT
        + "The same as `POST /api/login`: the same body, the same answer (there is no `refresh_token`). "
        + _LOGIN,
        200,
        named(LoginResult),
        "Success.",
        ("invalid_input", "unauthorized", "payload_too_large", "unavailable", "internal"),
        body=Credentials,
    ),
    ("POST", "/auth/refresh"): RouteDoc(
        "compat",
        "Refresh a token (seed-dashboard route; not supported)",
        _COMPAT + "Tablecast issues no refresh tokens, so this always answers 401 `unauthorized`: a dashboard "
        "that tries to refresh logs out and asks for a new login.",
        None,
        None,
        "",
        ("unauthorized", "internal"),
    ),
    ("GET", "/record/"): RouteDoc(
        "compat",
        "The table as flat records (seed-dashboard route)",
        _COMPAT + "Every row, ordered by id (or the `offset`/`limit` slice of them), as a JSON array of flat "
        "records `{id, <column>: value, ...}` with the values of the JSON pages of `/api/fetch_csv`. The array "
        "is one consistent snapshot, streamed. Unlike the `/api/` routes a success is the bare array, not an "
        "`{ok: true}` object; errors are the usual envelope.",
        200,
        named(Records, "Records"),
        "The rows as flat records.",
        ("invalid_input", "unauthorized", "unavailable", "internal"),
        bearer=True,
        query=RecordQuery,
    ),
    ("GET", "/healthz"): RouteDoc(
        "health",
        "Health check",
        "200 once the table is loaded.",
        200,
        named(HealthResult),
        "The table is loaded and the server is serving.",
        ("internal",),
    ),
}
_TAGS = [
    {"name": "auth", "description": "Accounts and bearer tokens."},
    {"name": "table", "description": "The table over REST."},
    {"name": "health", "description": "Liveness."},
    {
        "name": "compat",
        "description": "Compatibility routes for the seed dashboards (written for the backends Tablecast "
        "replaces): `POST /auth/login`, `GET /record/`, `POST /auth/refresh`.",
    },
    {"name": "documents", "description": "These API documents."},
]
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "JWT",
    "description": "`Authorization: Bearer <access_token>` from login.",
}
_FORMAT_PARAMETER = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "`csv` streams the whole table as CSV (as does `Accept: text/csv`); `json` a page.",
    "schema": {"type": "string", "enum": ["json", "csv"]},
}


def rest_route_keys() -> set[tuple[str, str]]:
    """(method, path) of every REST route `server.rest` registers."""
    return {(route.method.upper(), route.path) for route in rest_routes if isinstance(route, web.RouteDef)}


def _check_routes() -> None:
    registered = rest_route_keys()
    missing = registered - REST.keys()
    if missing:
        raise RuntimeError(f"REST routes without documentation: {sorted(missing)}")
    stale = REST.keys() - registered
    if stale:
        raise RuntimeError(f"documented REST routes that are not registered: {sorted(stale)}")


def _error_response(codes: list[str]) -> dict[str, Any]:
    restricted = {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}
    return {
        "description": "Error: " + ", ".join(f"`{code}`" for code in codes) + ".",
        "content": {"application/json": {"schema": {"allOf": [ref("ErrorEnvelope", REF), restricted]}}},
    }


def _responses(doc: RouteDoc) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if doc.status is not None and doc.result is not None:
        ok_content: dict[str, Any] = {"application/json": {"schema": ref(doc.result[0], REF)}}
        if doc.csv:
            ok_content["text/csv"] = {"schema": {"type": "string", "description": "The whole table, header first."}}
        responses[str(doc.status)] = {"description": doc.result_doc, "content": ok_content}
    by_status: dict[int, list[str]] = {}
    for code in doc.errors:
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    for status in sorted(by_status):
        responses[str(status)] = _error_response(by_status[status])
    return responses


def _parameters(doc: RouteDoc, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    if doc.query is not None:
        for name, prop in schemas[doc.query.__name__]["properties"].items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": prop.get("description", ""),
                    "schema": query_schema(prop),
                }
            )
    if doc.csv:
        parameters.append(_FORMAT_PARAMETER)
    return parameters


def _operation(path: str, doc: RouteDoc, schemas: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": path.strip("/").replace("/", "_"),
        "summary": doc.summary,
        "description": doc.description,
        "tags": [doc.tag],
        "responses": _responses(doc),
    }
    if parameters := _parameters(doc, schemas):
        operation["parameters"] = parameters
    if doc.body is not None:
        body = {"application/json": {"schema": ref(doc.body.__name__, REF)}}
        operation["requestBody"] = {"required": True, "content": body}
    operation["security"] = [{"bearer": []}] if doc.bearer else []
    return operation


def _document_route(
    operation_id: str, summary: str, content_type: str, schema: dict[str, Any], answer: str | None = None
) -> dict[str, Any]:
    ok = {"description": answer or summary, "content": {content_type: {"schema": schema}}}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["documents"],
            "security": [],
            "responses": {"200": ok},
        }
    }


def _document_routes() -> dict[str, Any]:
    return {
        OPENAPI_PATH: _document_route("openapi_json", "This OpenAPI document", "application/json", {"type": "object"}),
        ASYNCAPI_PATH: _document_route(
            "asyncapi_json", "The AsyncAPI document", "application/json", {"type": "object"}
        ),
        DOCS_PATH: _document_route(
            "docs", "Both documents rendered as a page", "text/html", {"type": "string"}, "HTML page"
        ),
    }


def build_openapi(version: str) -> dict[str, Any]:
    _check_routes()
    types: list[Named] = [named(ErrorEnvelope)]
    for doc in REST.values():
        if doc.result is not None:
            types.append(doc.result)
        types += [named(m) for m in (doc.body, doc.query) if m is not None]
    schemas = component_schemas(types, REF)
    paths: dict[str, Any] = {}
    for (method, path), doc in sorted(REST.items(), key=lambda item: (item[0][1], item[0][0])):
        paths.setdefault(path, {})[method.lower()] = _operation(path, doc, schemas)
    paths.update(_document_routes())
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": version, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": _TAGS,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": _BEARER}},
    }
