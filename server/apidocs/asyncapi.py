"""The AsyncAPI 3.0 document of Socket.IO: connecting, every client->server event with its
payload and its ack, every broadcast. Built from `protocol.events`, the same table the
handlers serve."""

from __future__ import annotations

from typing import Any

from protocol.broadcasts import ConnectAuth, ConnectError
from protocol.errors import ErrorEnvelope
from protocol.events import BROADCASTS, EVENTS, BroadcastSpec, EventSpec
from server.apidocs.openapi import DESCRIPTION, TITLE
from server.apidocs.schemas import Named, component_schemas, named, ref

REF = "#/components/schemas/{model}"
SOCKET_PATH = "/socket.io/"
CHANNEL = "socketio"
_CHANNEL_REF = {"$ref": f"#/channels/{CHANNEL}"}
_CONNECT_DESCRIPTION = (
    "The token is taken from `auth: {token}`, else the `Authorization: Bearer <token>` header, else the "
    "`?token=` query. A valid token makes an authenticated socket that receives the broadcasts; no "
    "token makes a guest, who may only emit `register`, `login` and `ping` (anything else is acked "
    "`unauthorized`). A bad, expired or revoked token refuses the connection with `connect_error`."
)


def _message(name: str, title: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "title": title, "summary": summary, "contentType": "application/json", "payload": payload}


def _message_ref(key: str) -> dict[str, str]:
    return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}


def _types() -> list[Named]:
    types = [named(ErrorEnvelope), named(ConnectAuth), named(ConnectError)]
    for spec in EVENTS.values():
        types += [named(spec.payload), named(spec.result, spec.result_name)]
    types += [named(spec.payload) for spec in BROADCASTS.values()]
    return types


def _connect() -> tuple[dict[str, Any], dict[str, Any]]:
    """The handshake's messages and operation."""
    messages = {
        "connect": _message(
            "connect",
            "Connect",
            "The Socket.IO handshake; `auth: {token}` authenticates the socket.",
            ref("ConnectAuth", REF),
        ),
        "connect_error": _message(
            "connect_error",
            "Connection refused",
            "A bad, expired or revoked token: the connection is refused with this data.",
            ref("ConnectError", REF),
        ),
    }
    operation = {
        "action": "receive",
        "channel": _CHANNEL_REF,
        "title": "Connect",
        "summary": "Open a socket, as a member (with a token) or a guest (without).",
        "description": _CONNECT_DESCRIPTION,
        "messages": [_message_ref("connect")],
        "reply": {"channel": _CHANNEL_REF, "messages": [_message_ref("connect_error")]},
    }
    return messages, operation


def _event(name: str, spec: EventSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """One client->server event: its message and its ack's, and the operation."""
    ack = f"{name}.ack"
    who = "Guests may emit it." if spec.guest else "Members only: a guest socket is acked `unauthorized`."
    how = f"Client emits `{name}` with an ack callback."
    if spec.ack_optional:
        how = (
            f"Client emits `{name}` with or without an ack callback (without one it gets no answer), and any "
            "object as its payload: unlike every other event, fields it does not know are ignored, not refused."
        )
    messages = {
        name: _message(name, name, spec.summary, ref(spec.payload.__name__, REF)),
        ack: _message(
            ack,
            f"{name} ack",
            "The acknowledgement: the ok result or the error envelope."
            + (" Sent only when the client asked for one." if spec.ack_optional else ""),
            {"oneOf": [ref(spec.result_name, REF), ref("ErrorEnvelope", REF)]},
        ),
    }
    operation = {
        "action": "receive",
        "channel": _CHANNEL_REF,
        "title": name,
        "summary": spec.summary,
        "description": f"{how} {who}",
        "tags": [{"name": "guest" if spec.guest else "member"}],
        "x-guest": spec.guest,
        "x-ack-optional": spec.ack_optional,
        "messages": [_message_ref(name)],
        "reply": {"channel": _CHANNEL_REF, "messages": [_message_ref(ack)]},
    }
    return messages, operation


def _broadcast(name: str, spec: BroadcastSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    message = _message(name, name, spec.summary, ref(spec.payload.__name__, REF))
    operation = {
        "action": "send",
        "channel": _CHANNEL_REF,
        "title": name,
        "summary": spec.summary,
        "tags": [{"name": "broadcast"}],
        "messages": [_message_ref(name)],
    }
    return {name: message}, operation


def _messages_and_operations() -> tuple[dict[str, Any], dict[str, Any]]:
    messages, connect = _connect()
    operations: dict[str, Any] = {"connect": connect}
    for name, event in EVENTS.items():
        more, operations[name] = _event(name, event)
        messages.update(more)
    for name, broadcast in BROADCASTS.items():
        more, operations[f"on_{name}"] = _broadcast(name, broadcast)
        messages.update(more)
    return messages, operations


def _server(host: str) -> dict[str, Any]:
    return {
        "host": host,
        "protocol": "ws",
        "pathname": SOCKET_PATH,
        "description": "Socket.IO server (path `/socket.io/`, namespace `/`).",
        "security": [
            {"$ref": "#/components/securitySchemes/bearerHeader"},
            {"$ref": "#/components/securitySchemes/tokenQuery"},
        ],
    }


def _channel(messages: dict[str, Any]) -> dict[str, Any]:
    authorization = {
        "type": "string",
        "pattern": "^[Bb]earer .+",
        "description": "`Bearer <token>`; used when `auth.token` is absent.",
    }
    token = {"type": "string", "description": "The token; used when neither `auth.token` nor the header is sent."}
    return {
        "address": SOCKET_PATH,
        "title": "Socket.IO default namespace",
        "description": "Every event and broadcast travels on the one Socket.IO connection.",
        "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
        "bindings": {
            "ws": {
                "bindingVersion": "0.1.0",
                "method": "GET",
                "headers": {"type": "object", "properties": {"Authorization": authorization}},
                "query": {"type": "object", "properties": {"token": token}},
            }
        },
    }


_SECURITY_SCHEMES = {
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
}


def build_asyncapi(host: str, version: str) -> dict[str, Any]:
    messages, operations = _messages_and_operations()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": TITLE,
            "version": version,
            "description": DESCRIPTION
            + " Speak Socket.IO (protocol 5, Engine.IO 4) on the default namespace `/`; websocket and "
            "long-polling transports both work. Every client->server event takes an ack, except that "
            "`ohlc-stream` (seed-dashboard compatibility) may be sent without one.",
        },
        "defaultContentType": "application/json",
        "servers": {"tablecast": _server(host)},
        "channels": {CHANNEL: _channel(messages)},
        "operations": operations,
        "components": {
            "schemas": component_schemas(_types(), REF),
            "messages": messages,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
