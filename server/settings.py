"""Settings: each has a default, an environment variable of its UPPER_CASE name and a
`run.py` flag (`--lock-ttl-s` for `LOCK_TTL_S`). A flag wins over the environment. A bad
value stops the server at start with a message naming the setting."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    pass


def _help(text: str, minimum: float | None = None) -> dict[str, Any]:
    return {"help": text, "minimum": minimum}


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata=_help("address to listen on"))
    port: int = field(default=8000, metadata=_help("port to listen on", 0))
    data_dir: Path = field(default=Path("data"), metadata=_help("holds the CSV, backend.db, backups/"))
    secret_key: str | None = field(
        default=None, metadata=_help("JWT signing key (32+ characters); default: generated into DATA_DIR")
    )
    token_ttl_s: int = field(default=86400, metadata=_help("token lifetime, seconds", 1))
    auto_register: bool = field(default=True, metadata=_help("register unknown usernames on first login"))
    cors_origins: tuple[str, ...] = field(
        default=("http://localhost:3000", "https://blackrose-frontend.pages.dev"),
        metadata=_help("comma-separated browser origins allowed for REST and Socket.IO"),
    )
    lock_ttl_s: float = field(default=900.0, metadata=_help("row lock lifetime, seconds", 0.01))
    edit_cooldown_s: float = field(default=15.0, metadata=_help("cooldown after an edited lock ends, seconds", 0))
    lock_sweep_s: float = field(default=5.0, metadata=_help("how often expired locks are swept, seconds", 0.01))
    lock_grace_s: float = field(default=30.0, metadata=_help("locks outlive a user's last socket by this, seconds", 0))
    history_keep: int = field(default=10000, metadata=_help("changes kept for fetch_csv since", 1))
    random_interval_s: float = field(default=1.0, metadata=_help("random number period, seconds", 0.01))
    random_retention_s: float = field(default=7 * 86400.0, metadata=_help("how long numbers are stored, seconds", 1))
    backup_interval_s: float = field(default=60.0, metadata=_help("at most one automatic backup per this, seconds", 0))
    backup_keep: int = field(default=50, metadata=_help("backups kept", 1))
    max_payload_bytes: int = field(default=65536, metadata=_help("largest Socket.IO packet, bytes", 1024))
    max_cell_chars: int = field(default=10000, metadata=_help("longest text cell, characters", 1))
    rate_limit: float = field(default=50.0, metadata=_help("events per second per socket (bursts of 2x); 0 = off", 0))
    login_rate_limit: int = field(
        default=10,
        metadata=_help("failed logins a minute per username and per client address, REST and sockets; 0 = off", 0),
    )
    admin_users: tuple[str, ...] = field(
        default=(), metadata=_help("comma-separated usernames allowed to restore_backup; empty: every user")
    )
    allowed_hosts: tuple[str, ...] | None = field(
        default=None,
        metadata=_help(
            "comma-separated host names the server answers to (the Host header, port aside); "
            "default: localhost,127.0.0.1,::1 and HOST"
        ),
    )
    max_send_queue_bytes: int = field(
        default=1048576, metadata=_help("unsent outgoing data a socket may have before it is dropped, bytes", 1024)
    )
    csv_flush_s: float = field(
        default=1.0, metadata=_help("delay before the CSV is rewritten after changes, seconds", 0)
    )
    log_level: str = field(default="INFO", metadata=_help("DEBUG, INFO, WARNING or ERROR"))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "backend.db"

    @property
    def rate_burst(self) -> float:
        return 2 * self.rate_limit

    @property
    def hosts(self) -> frozenset[str]:
        """The host names requests may be addressed to, lowercased, IPv6 without brackets."""
        named = self.allowed_hosts if self.allowed_hosts is not None else (*DEFAULT_HOSTS, self.host)
        return frozenset(_host_entry(name) for name in named)

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        environ = environ if environ is not None else {}
        parser = build_parser()
        flags = vars(parser.parse_args(list(argv) if argv is not None else []))
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            env_name = f.name.upper()
            raw = flags.get(f.name)
            if raw is None:
                raw = environ.get(env_name)
            if raw is None:
                continue
            values[f.name] = _convert(env_name, raw, hints[f.name], f.metadata.get("minimum"))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise SettingsError("SECRET_KEY: must be at least 32 characters")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"LOG_LEVEL: {self.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
        if self.port > 65535:
            raise SettingsError("PORT: must be at most 65535")
        if not self.cors_origins:
            raise SettingsError("CORS_ORIGINS: name at least one origin (an empty list would allow none)")
        if self.allowed_hosts is not None:
            if not self.allowed_hosts:
                raise SettingsError("ALLOWED_HOSTS: name at least one host (an empty list would refuse every request)")
            for name in self.allowed_hosts:
                bare = _host_entry(name)
                # One colon is a port (an IPv6 address has at least two): the port is not matched.
                if any(c in bare for c in "/@[] ") or bare.count(":") == 1:
                    raise SettingsError(f"ALLOWED_HOSTS: {name!r}: name a host, without scheme, port or path")


DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _host_entry(name: str) -> str:
    """`[::1]` and `::1` are one host; names match whatever their case."""
    name = name.strip().lower()
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def _convert(name: str, raw: str, hint: Any, minimum: float | None) -> Any:
    text = raw.strip()
    target = _unwrap_optional(hint)
    try:
        value: Any
        if target is bool:
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError("expected 1/0, true/false, yes/no or on/off")
            value = lowered in _TRUE
        elif target is int:
            value = int(text)
        elif target is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("expected a finite number")
        elif target is Path:
            if not text:
                raise ValueError("expected a path")
            value = Path(text)
        elif target == tuple[str, ...]:
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            value = text
    except ValueError as exc:
        raise SettingsError(f"{name}: bad value {raw!r}: {exc}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}: {value} is below the minimum {minimum}")
    return value


def _unwrap_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType):
        args = [a for a in hint.__args__ if a is not type(None)]
        return args[0]
    return hint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Tablecast: a realtime, lock-aware CSV table server.",
        epilog="Every setting can also be given as an environment variable; a flag wins.",
    )
    for f in fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(default)
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (env {f.name.upper()}, default {default})",
        )
    return parser
