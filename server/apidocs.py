"""API documents generated from the pydantic models that validate payloads and describe
results: `GET /openapi.json` (OpenAPI 3.1, the REST routes), `GET /asyncapi.json`
(AsyncAPI 3.0, the Socket.IO events and broadcasts) and `GET /docs` (a page that renders both).

The documents are built once, when the app is created. The REST route list comes from
`server.rest.routes` and the event list from `handlers.events.event_table()`; a route or an
event without a documentation entry stops the build, so neither can be left undocumented.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handlers.events import event_table
from server.context import SETTINGS
from server.errors import HTTP_STATUS
from server.rest import routes as rest_routes
from storage.models import Credentials, FetchCsv, Payload
from storage.schemas import (
    BROADCASTS,
    EVENT_RESULTS,
    PAYLOAD_FIELDS,
    ConnectAuth,
    ConnectError,
    EmptyResult,
    ErrorEnvelope,
    FetchResult,
    HealthResult,
    LoginResult,
    RegisterResult,
)

OPENAPI_PATH = "/openapi.json"
ASYNCAPI_PATH = "/asyncapi.json"
DOCS_PATH = "/docs"
OPENAPI_REF = "#/components/schemas/{model}"
ASYNCAPI_REF = "#/components/schemas/{model}"
SOCKET_PATH = "/socket.io/"
CHANNEL = "socketio"
TITLE = "Tablecast"
DESCRIPTION = (
    "A realtime, lock-aware CSV table server. Every answer is `{ok: true, ...result}` or "
    "`{ok: false, error: {code, message, ...details}}`; REST answers carry a matching HTTP status."
)


def _version() -> str:
    try:
        return metadata.version("tablecast")
    except metadata.PackageNotFoundError:
        return "1.0.0"


# ---- schemas ------------------------------------------------------------------------------


def component_schemas(models: Iterable[type[BaseModel]], ref_template: str) -> dict[str, Any]:
    """JSON Schemas of `models` and everything they use, keyed by model name, with `$ref`s
    built from `ref_template`; payload models get their field descriptions."""
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema([(model, "validation") for model in unique], ref_template=ref_template)
    defs: dict[str, Any] = top.get("$defs", {})
    for model in unique:
        if model.__name__ not in defs:
            raise RuntimeError(f"schema name clash: {model.__qualname__} is not under its own name")
    for model, notes in PAYLOAD_FIELDS.items():
        schema = defs.get(model.__name__)
        if schema is None:
            continue
        properties = schema.get("properties", {})
        for name, note in notes.items():
            if name not in properties:
                raise RuntimeError(f"{model.__name__} has no field {name!r} to describe")
            properties[name]["description"] = note
    return defs


def _ref(model: type[BaseModel], template: str) -> dict[str, str]:
    return {"$ref": template.format(model=model.__name__)}


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A payload field as a query parameter's schema: present or absent, never null."""
    schema = {k: v for k, v in prop.items() if k not in ("title", "description")}
    options = schema.pop("anyOf", None)
    if options is not None:
        kept = [option for option in options if option.get("type") != "null"]
        if len(kept) == 1:
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    return schema


# ---- OpenAPI --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteDoc:
    tag: str
    summary: str
    description: str
    status: int
    result: type[BaseModel]
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
        RegisterResult,
        ("invalid_input", "username_taken", "payload_too_large", "unavailable", "internal"),
        body=Credentials,
    ),
    ("POST", "/api/login"): RouteDoc(
        "auth",
        "Log in",
        "Get a bearer token. While AUTO_REGISTER is on, an unknown username is registered on first login; "
        "after that its password must match.",
        200,
        LoginResult,
        ("invalid_input", "unauthorized", "payload_too_large", "unavailable", "internal"),
        body=Credentials,
    ),
    ("POST", "/api/logout"): RouteDoc(
        "auth",
        "Log out",
        "Revoke the bearer token for good; every socket that used it becomes a guest at once.",
        200,
        EmptyResult,
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
        FetchResult,
        ("invalid_input", "unauthorized", "unavailable", "internal"),
        bearer=True,
        query=FetchCsv,
        csv=True,
    ),
    ("GET", "/healthz"): RouteDoc(
        "health", "Health check", "200 once the table is loaded.", 200, HealthResult, ("internal",)
    ),
}


def _error_response(codes: list[str]) -> dict[str, Any]:
    schema = {
        "allOf": [
            _ref(ErrorEnvelope, OPENAPI_REF),
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    return {
        "description": "Error: " + ", ".join(f"`{code}`" for code in codes) + ".",
        "content": {"application/json": {"schema": schema}},
    }


def _query_parameters(model: type[Payload], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    properties = schemas[model.__name__]["properties"]
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": prop.get("description", ""),
            "schema": _query_schema(prop),
        }
        for name, prop in properties.items()
    ]


def _operation(method: str, path: str, doc: RouteDoc, schemas: dict[str, Any]) -> dict[str, Any]:
    ok_content: dict[str, Any] = {"application/json": {"schema": _ref(doc.result, OPENAPI_REF)}}
    if doc.csv:
        ok_content["text/csv"] = {"schema": {"type": "string", "description": "The whole table, header first."}}
    responses: dict[str, Any] = {
        str(doc.status): {"description": doc.result.__doc__ or "Success.", "content": ok_content}
    }
    by_status: dict[int, list[str]] = {}
    for code in doc.errors:
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    for status in sorted(by_status):
        responses[str(status)] = _error_response(by_status[status])
    operation: dict[str, Any] = {
        "operationId": path.strip("/").replace("/", "_"),
        "summary": doc.summary,
        "description": doc.description,
        "tags": [doc.tag],
        "responses": responses,
    }
    parameters: list[dict[str, Any]] = []
    if doc.query is not None:
        parameters += _query_parameters(doc.query, schemas)
    if doc.csv:
        parameters.append(
            {
                "name": "format",
                "in": "query",
                "required": False,
                "description": "`csv` streams the whole table as CSV (as does `Accept: text/csv`); `json` a page.",
                "schema": {"type": "string", "enum": ["json", "csv"]},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(doc.body, OPENAPI_REF)}},
        }
    operation["security"] = [{"bearer": []}] if doc.bearer else []
    return operation


def _document_routes() -> dict[str, Any]:
    json_object = {"type": "object"}
    paths: dict[str, Any] = {}
    for path, summary in ((OPENAPI_PATH, "This OpenAPI document"), (ASYNCAPI_PATH, "The AsyncAPI document")):
        paths[path] = {
            "get": {
                "operationId": path.strip("/").replace(".", "_"),
                "summary": summary,
                "tags": ["documents"],
                "security": [],
                "responses": {
                    "200": {"description": summary, "content": {"application/json": {"schema": json_object}}}
                },
            }
        }
    paths[DOCS_PATH] = {
        "get": {
            "operationId": "docs",
            "summary": "Both documents rendered as a page",
            "tags": ["documents"],
            "security": [],
            "responses": {
                "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
            },
        }
    }
    return paths


def rest_route_keys() -> set[tuple[str, str]]:
    """(method, path) of every REST route `server.rest` registers."""
    keys: set[tuple[str, str]] = set()
    for route in rest_routes:
        if isinstance(route, web.RouteDef):
            keys.add((route.method.upper(), route.path))
    return keys


def build_openapi() -> dict[str, Any]:
    registered = rest_route_keys()
    missing = registered - REST.keys()
    if missing:
        raise RuntimeError(f"REST routes without documentation: {sorted(missing)}")
    stale = REST.keys() - registered
    if stale:
        raise RuntimeError(f"documented REST routes that are not registered: {sorted(stale)}")
    models: list[type[BaseModel]] = [ErrorEnvelope]
    for doc in REST.values():
        models += [doc.result, *(m for m in (doc.body, doc.query) if m is not None)]
    schemas = component_schemas(models, OPENAPI_REF)
    paths: dict[str, Any] = {}
    for (method, path), doc in sorted(REST.items(), key=lambda item: (item[0][1], item[0][0])):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, doc, schemas)
    paths.update(_document_routes())
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": _version(), "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "auth", "description": "Accounts and bearer tokens."},
            {"name": "table", "description": "The table over REST."},
            {"name": "health", "description": "Liveness."},
            {"name": "documents", "description": "These API documents."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <access_token>` from login.",
                }
            },
        },
    }


# ---- AsyncAPI -------------------------------------------------------------------------------


def _message(name: str, title: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "title": title, "summary": summary, "contentType": "application/json", "payload": payload}


def build_asyncapi(host: str) -> dict[str, Any]:
    events = event_table()
    undocumented = sorted(set(events) - EVENT_RESULTS.keys())
    if undocumented:
        raise RuntimeError(f"Socket.IO events without a documented result: {undocumented}")
    stale = sorted(EVENT_RESULTS.keys() - set(events))
    if stale:
        raise RuntimeError(f"documented Socket.IO events that are not registered: {stale}")
    models: list[type[BaseModel]] = [ErrorEnvelope, ConnectAuth, ConnectError]
    for name, event in events.items():
        models += [event.model, EVENT_RESULTS[name].result]
    models += [b.payload for b in BROADCASTS.values()]
    schemas = component_schemas(models, ASYNCAPI_REF)
    error = _ref(ErrorEnvelope, ASYNCAPI_REF)

    messages: dict[str, Any] = {
        "connect": _message(
            "connect",
            "Connect",
            "The Socket.IO handshake; `auth: {token}` authenticates the socket.",
            _ref(ConnectAuth, ASYNCAPI_REF),
        ),
        "connect_error": _message(
            "connect_error",
            "Connection refused",
            "A bad, expired or revoked token: the connection is refused with this data.",
            _ref(ConnectError, ASYNCAPI_REF),
        ),
    }
    channel_ref = {"$ref": f"#/channels/{CHANNEL}"}

    def message_ref(key: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}

    operations: dict[str, Any] = {
        "connect": {
            "action": "receive",
            "channel": channel_ref,
            "title": "Connect",
            "summary": "Open a socket, as a member (with a token) or a guest (without).",
            "description": (
                "The token is taken from `auth: {token}`, else the `Authorization: Bearer <token>` header, else the "
                "`?token=` query. A valid token makes an authenticated socket that receives the broadcasts; no "
                "token makes a guest, who may only emit `register`, `login` and `ping` (anything else is acked "
                "`unauthorized`). A bad, expired or revoked token refuses the connection with `connect_error`."
            ),
            "messages": [message_ref("connect")],
            "reply": {"channel": channel_ref, "messages": [message_ref("connect_error")]},
        }
    }
    for name, event in events.items():
        doc = EVENT_RESULTS[name]
        ack_key = f"{name}.ack"
        payload_schema = _ref(event.model, ASYNCAPI_REF)
        who = "Guests may emit it." if event.guest else "Members only: a guest socket is acked `unauthorized`."
        messages[name] = _message(name, name, doc.summary, payload_schema)
        messages[ack_key] = _message(
            ack_key,
            f"{name} ack",
            "The acknowledgement: the ok result or the error envelope.",
            {"oneOf": [_ref(doc.result, ASYNCAPI_REF), error]},
        )
        operations[name] = {
            "action": "receive",
            "channel": channel_ref,
            "title": name,
            "summary": doc.summary,
            "description": f"Client emits `{name}` with an ack callback. {who}",
            "tags": [{"name": "guest" if event.guest else "member"}],
            "x-guest": event.guest,
            "messages": [message_ref(name)],
            "reply": {"channel": channel_ref, "messages": [message_ref(ack_key)]},
        }
    for name, broadcast in BROADCASTS.items():
        messages[name] = _message(name, name, broadcast.summary, _ref(broadcast.payload, ASYNCAPI_REF))
        operations[f"on_{name}"] = {
            "action": "send",
            "channel": channel_ref,
            "title": name,
            "summary": broadcast.summary,
            "tags": [{"name": "broadcast"}],
            "messages": [message_ref(name)],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": _version(),
            "description": DESCRIPTION
            + " Speak Socket.IO (protocol 5, Engine.IO 4) on the default namespace `/`; websocket and "
            "long-polling transports both work. Every client->server event takes an ack.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "tablecast": {
                "host": host,
                "protocol": "ws",
                "pathname": SOCKET_PATH,
                "description": "Socket.IO server (path `/socket.io/`, namespace `/`).",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearerHeader"},
                    {"$ref": "#/components/securitySchemes/tokenQuery"},
                ],
            }
        },
        "channels": {
            CHANNEL: {
                "address": SOCKET_PATH,
                "title": "Socket.IO default namespace",
                "description": "Every event and broadcast travels on the one Socket.IO connection.",
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
                "bindings": {
                    "ws": {
                        "bindingVersion": "0.1.0",
                        "method": "GET",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Authorization": {
                                    "type": "string",
                                    "pattern": "^[Bb]earer .+",
                                    "description": "`Bearer <token>`; used when `auth.token` is absent.",
                                }
                            },
                        },
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {
                                    "type": "string",
                                    "description": "The token; used when neither `auth.token` nor the header is sent.",
                                }
                            },
                        },
                    }
                },
            }
        },
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearerHeader": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The handshake request's `Authorization: Bearer <token>` header, used when "
                    "the Socket.IO `auth: {token}` (the `connect` message) has no token.",
                },
                "tokenQuery": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "The handshake's `?token=<token>` query parameter, used when neither "
                    "`auth.token` nor the header is sent.",
                },
            },
        },
    }


# ---- the routes -----------------------------------------------------------------------------


def setup_apidocs(app: web.Application) -> None:
    """Build both documents now and serve them, with the page that renders them."""
    settings = app[SETTINGS]
    openapi = json.dumps(build_openapi(), separators=(",", ":")).encode()
    asyncapi = json.dumps(build_asyncapi(f"{settings.host}:{settings.port}"), separators=(",", ":")).encode()

    def serve(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-cache"})

    async def openapi_json(request: web.Request) -> web.Response:
        return serve(openapi)

    async def asyncapi_json(request: web.Request) -> web.Response:
        return serve(asyncapi)

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(
            text=DOCS_HTML,
            content_type="text/html",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'",
            },
        )

    app.router.add_get(OPENAPI_PATH, openapi_json, name="openapi")
    app.router.add_get(ASYNCAPI_PATH, asyncapi_json, name="asyncapi")
    app.router.add_get(DOCS_PATH, docs_page, name="apidocs")


DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tablecast API</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2430; background: #fafbfc; }
header { background: #1d2430; color: #fff; padding: 14px 24px; }
header a { color: #9cc4ff; margin-right: 16px; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 24px 48px; }
h2 { border-bottom: 2px solid #d8dee6; padding-bottom: 4px; margin-top: 36px; }
section.item { background: #fff; border: 1px solid #d8dee6; border-radius: 6px; padding: 10px 16px; margin: 14px 0; }
.verb { display: inline-block; min-width: 52px; font-weight: 700; color: #fff; border-radius: 4px;
  padding: 1px 6px; margin-right: 8px; text-align: center; font-size: 13px; }
.GET { background: #2f7d32; } .POST { background: #1f5fae; } .recv { background: #7a3fb0; }
.send { background: #b35c00; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { text-align: left; border-bottom: 1px solid #e6eaef; padding: 4px 8px; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; color: #5b6675; }
.req { color: #b00020; font-weight: 600; }
.muted { color: #5b6675; }
.tag { font-size: 12px; background: #eef1f5; border-radius: 10px; padding: 1px 8px; margin-left: 6px; }
h4 { margin: 10px 0 2px; font-size: 14px; }
#error { color: #b00020; }
</style>
</head>
<body>
<header>
<strong>Tablecast API</strong>
&nbsp; <a href="/openapi.json">/openapi.json</a><a href="/asyncapi.json">/asyncapi.json</a>
<a href="#rest">REST</a><a href="#socket">Socket.IO</a><a href="#schemas">Schemas</a>
</header>
<main>
<p id="error"></p>
<div id="intro"></div>
<h2 id="rest">REST routes</h2><div id="routes">Loading&hellip;</div>
<h2 id="socket">Socket.IO</h2><div id="events">Loading&hellip;</div>
<h2 id="schemas">Schemas</h2><div id="models">Loading&hellip;</div>
</main>
<script>
"use strict";
function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}
function refName(ref) { return ref.split("/").pop(); }
function md(text) {
  return el("span", {}, String(text || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part)));
}
function errorCodes(s) {
  const code = (((s.properties || {}).error || {}).properties || {}).code;
  return code && code.enum ? " with error.code " + code.enum.join(" | ") : null;
}
function typeOf(s, anchor) {
  if (!s || Object.keys(s).length === 0) return "any";
  if (s.$ref) return el("a", { href: "#" + anchor + refName(s.$ref) }, refName(s.$ref));
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    if (s[key]) {
      const parts = [];
      s[key].forEach((option, i) => {
        if (i) parts.push(key === "allOf" ? " & " : " | ");
        const codes = key === "allOf" && !option.$ref ? errorCodes(option) : null;
        if (codes) { parts.pop(); parts.push(codes); } else parts.push(typeOf(option, anchor));
      });
      return el("span", {}, parts);
    }
  }
  if ("const" in s) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.type === "array") return el("span", {}, typeOf(s.items, anchor), "[]");
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
    return el("span", {}, "{ [name]: ", typeOf(s.additionalProperties, anchor), " }");
  }
  return Array.isArray(s.type) ? s.type.join(" | ") : s.type || "any";
}
function limits(s) {
  const out = [];
  const names = { minimum: ">=", maximum: "<=", exclusiveMinimum: ">", exclusiveMaximum: "<",
    minLength: "min length", maxLength: "max length", minProperties: "min keys", pattern: "pattern" };
  for (const [k, label] of Object.entries(names)) if (k in s) out.push(label + " " + s[k]);
  if ("default" in s) out.push("default " + JSON.stringify(s.default));
  return out.join(", ");
}
function fieldsTable(schema, anchor, components) {
  if (schema && schema.$ref) schema = components[refName(schema.$ref)] || schema;
  if (!schema || !schema.properties) return el("p", { class: "muted" }, "Type: ", typeOf(schema, anchor));
  if (Object.keys(schema.properties).length === 0) return el("p", { class: "muted" }, "No fields: send {} or nothing.");
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties).map(([name, prop]) => el("tr", {},
    el("td", { class: "mono" }, name),
    el("td", { class: "mono" }, typeOf(prop, anchor)),
    el("td", {}, required.has(name) ? el("span", { class: "req" }, "required") : "optional"),
    el("td", {}, md(prop.description), limits(prop) ? el("div", { class: "muted" }, limits(prop)) : null)));
  const extra = schema.additionalProperties === false ? "no other fields" : "other fields allowed";
  return el("div", {}, el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"),
    el("th", {}, ""), el("th", {}, "description")), rows), el("div", { class: "muted" }, extra));
}
function renderOpenApi(doc) {
  const schemas = doc.components.schemas;
  const out = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const item = el("section", { class: "item", id: "route-" + op.operationId },
        el("h3", {}, el("span", { class: "verb " + method.toUpperCase() }, method.toUpperCase()),
          el("code", {}, path), " ", op.summary || "",
          (op.security || []).length ? el("span", { class: "tag" }, "bearer token") : null),
        el("p", {}, md(op.description)));
      if (op.parameters) {
        item.append(el("h4", {}, "Query parameters"), fieldsTable({ additionalProperties: false,
          properties: Object.fromEntries(
            op.parameters.map((p) => [p.name, { ...p.schema, description: p.description }])),
          required: op.parameters.filter((p) => p.required).map((p) => p.name) }, "oa-", schemas));
      }
      if (op.requestBody) {
        for (const [type, media] of Object.entries(op.requestBody.content)) {
          item.append(el("h4", {}, "Body ", el("span", { class: "muted" }, type)),
            fieldsTable(media.schema, "oa-", schemas));
        }
      }
      const rows = Object.entries(op.responses).map(([status, r]) => el("tr", {},
        el("td", { class: "mono" }, status), el("td", {}, md(r.description)),
        el("td", {}, Object.entries(r.content || {}).map(([type, media]) =>
          el("div", {}, el("span", { class: "muted" }, type + ": "), typeOf(media.schema, "oa-"))))));
      item.append(el("h4", {}, "Responses"), el("table", {},
        el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")), rows));
      out.push(item);
    }
  }
  document.getElementById("routes").replaceChildren(...out);
  return schemas;
}
function renderAsyncApi(doc) {
  const schemas = doc.components.schemas;
  const messages = doc.components.messages;
  const message = (ref) => messages[refName(ref.$ref)];
  const server = Object.values(doc.servers)[0];
  const out = [el("p", {}, md(doc.info.description)), el("p", {}, "Server: ", el("code", {},
    server.protocol + "://" + server.host + (server.pathname || "")), " - ", md(server.description))];
  const schemes = doc.components.securitySchemes || {};
  out.push(el("ul", {}, Object.values(schemes).map((s) => el("li", {}, md(s.description)))));
  const groups = [["Connecting", (op) => op.title === "Connect"],
    ["Client to server events", (op) => op.action === "receive" && op.title !== "Connect"],
    ["Broadcasts (server to client)", (op) => op.action === "send"]];
  for (const [title, test] of groups) {
    out.push(el("h3", {}, title));
    for (const [id, op] of Object.entries(doc.operations)) {
      if (!test(op)) continue;
      const sent = op.messages.map(message);
      const item = el("section", { class: "item", id: "event-" + id },
        el("h3", {}, el("span", { class: "verb " + (op.action === "send" ? "send" : "recv") },
          op.action === "send" ? "EMIT" : "ON"), el("code", {}, sent[0].name), " ",
          (op.tags || []).map((t) => el("span", { class: "tag" }, t.name))),
        el("p", {}, md(op.summary)), op.description ? el("p", { class: "muted" }, md(op.description)) : null);
      for (const m of sent) item.append(el("h4", {}, "Payload"), fieldsTable(m.payload, "aa-", schemas));
      if (op.reply) {
        for (const m of op.reply.messages.map(message)) {
          item.append(el("h4", {}, m.title || m.name, ": ", typeOf(m.payload, "aa-")));
          for (const option of m.payload.oneOf || [m.payload]) {
            const isError = option.$ref && refName(option.$ref) === "ErrorEnvelope";
            if (!isError) item.append(fieldsTable(option, "aa-", schemas));
          }
        }
      }
      out.push(item);
    }
  }
  document.getElementById("events").replaceChildren(...out);
  return schemas;
}
function renderSchemas(groups) {
  const out = [];
  for (const [prefix, label, schemas] of groups) {
    out.push(el("h3", {}, label));
    for (const [name, schema] of Object.entries(schemas).sort()) {
      out.push(el("section", { class: "item", id: prefix + name }, el("h3", {}, el("code", {}, name)),
        schema.description ? el("p", {}, md(schema.description)) : null, fieldsTable(schema, prefix, schemas)));
    }
  }
  document.getElementById("models").replaceChildren(...out);
}
async function load(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}
Promise.all([load("/openapi.json"), load("/asyncapi.json")]).then(([openapi, asyncapi]) => {
  document.getElementById("intro").replaceChildren(el("p", {}, openapi.info.title + " " + openapi.info.version +
    ": ", md(openapi.info.description)));
  const rest = renderOpenApi(openapi);
  const socket = renderAsyncApi(asyncapi);
  renderSchemas([["oa-", "REST (OpenAPI)", rest], ["aa-", "Socket.IO (AsyncAPI)", socket]]);
}).catch((err) => { document.getElementById("error").textContent = "Could not load the documents: " + err; });
</script>
</body>
</html>
"""
