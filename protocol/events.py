"""Every client->server event and every broadcast, defined once: the handlers serve exactly
these events and the API documents describe exactly these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from protocol import broadcasts as b
from protocol import payloads as p
from protocol import results as r


@dataclass(frozen=True)
class EventSpec:
    payload: type[p.Payload]
    result: Any  # a typed dict from protocol.results, or a union of them
    result_name: str  # the result's name in the documents
    summary: str
    guest: bool = False  # guests may call it
    quiet: bool = False  # reads: logged at debug level only
    ack_optional: bool = False  # a client may emit it without an ack callback (it gets no answer then)


def _event(
    payload: type[p.Payload],
    result: Any,
    summary: str,
    *,
    name: str | None = None,
    guest: bool = False,
    quiet: bool = False,
    ack_optional: bool = False,
) -> EventSpec:
    return EventSpec(payload, result, name or result.__name__, summary, guest, quiet, ack_optional)


@dataclass(frozen=True)
class BroadcastSpec:
    payload: Any  # a typed dict
    summary: str


EVENTS: Mapping[str, EventSpec] = MappingProxyType(
    {
        "register": _event(
            p.Credentials, r.RegisterResult, "Create an account. Same as POST /api/register.", guest=True
        ),
        "login": _event(
            p.Credentials,
            r.LoginResult,
            "Log in (an unknown username is registered first while AUTO_REGISTER is on); authenticates this socket.",
            guest=True,
        ),
        "ping": _event(p.Empty, r.PingResult, "Server time.", guest=True, quiet=True),
        "logout": _event(p.Empty, r.EmptyResult, "Revoke this socket's token; the socket becomes a guest."),
        "fetch_csv": _event(
            p.FetchCsv,
            r.FetchResult,
            "A page of the table, or with `since` the changes after that seq (a fresh page with `reset` when "
            "they are no longer all held).",
            name="FetchResult",
            quiet=True,
        ),
        "add_csv": _event(p.AddCsv, r.RowResult, "Append a row; columns left out are null. Needs no lock."),
        "update_csv": _event(
            p.UpdateCsv,
            r.RowResult,
            "Change some cells of a row the caller has locked; `version` guards against stale edits.",
        ),
        "delete_csv": _event(p.DeleteCsv, r.DeleteResult, "Delete a row the caller has locked; ends the lock."),
        "lock_row": _event(p.RowRef, r.LockResult, "Lock a row for LOCK_TTL_S, or renew the caller's own lock."),
        "unlock_row": _event(
            p.RowRef, r.EmptyResult, "Release the caller's lock; starts a cooldown if the row was edited."
        ),
        "list_backups": _event(p.Empty, r.BackupsResult, "Backups of the CSV, newest first.", quiet=True),
        "restore_backup": _event(
            p.RestoreBackup,
            r.RestoreResult,
            "Replace the table with a backup (default the newest); refused while others hold locks, and "
            "`forbidden` for users not in ADMIN_USERS when that is set.",
        ),
        "numbers": _event(p.Numbers, r.NumbersResult, "Stored random numbers, oldest first.", quiet=True),
        "subscribe": _event(
            p.Subscription, r.SubscribeResult, "Start receiving `random_number`, or `ohlc` candles of an interval."
        ),
        "unsubscribe": _event(p.Subscription, r.EmptyResult, "Stop receiving a stream."),
        "ohlc-stream": _event(
            p.OhlcStream,
            r.CandlesResult,
            "Seed-frontend compatibility: subscribe to 1m candles and `ohlc-data` bars. Takes any object "
            "(the seed dashboard sends `{message}`) and needs no ack callback.",
            ack_optional=True,
        ),
    }
)

BROADCASTS: Mapping[str, BroadcastSpec] = MappingProxyType(
    {
        "csv_update": BroadcastSpec(r.CsvUpdate, "A table change, to every authenticated socket, in seq order."),
        "lock_status": BroadcastSpec(b.LockStatus, "A row's lock state changed; to every authenticated socket."),
        "random_number": BroadcastSpec(
            b.RandomNumber, "Each draw of the random walk, to authenticated sockets that have not unsubscribed."
        ),
        "ohlc": BroadcastSpec(
            r.Ohlc, "The open candle on every tick, and each candle once more when it closes, to its subscribers."
        ),
        "ohlc-data": BroadcastSpec(b.OhlcData, "Each closed 1m candle, to sockets that sent `ohlc-stream`."),
    }
)
