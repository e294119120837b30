"""Users and sessions: argon2id password hashes, HS256 JWTs with a revocable `jti`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from protocol.errors import Unauthorized, UsernameTaken
from protocol.results import LoginResult, RegisterResult
from storage.db import Database, storage_failures_unavailable

_ALGORITHM = "HS256"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    jti TEXT PRIMARY KEY, username TEXT NOT NULL, issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
"""
SECRET_FILE = "secret.key"


def load_or_create_secret(data_dir: Path, configured: str | None) -> bytes:
    """SECRET_KEY if set, else a 32-byte key generated once into DATA_DIR, readable only by us."""
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip().encode()
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key.encode()


@dataclass(frozen=True)
class Session:
    username: str
    jti: str
    expires_at: int  # epoch ms

    def expired(self) -> bool:
        return self.expires_at <= time.time() * 1000


@dataclass(frozen=True)
class AuthConfig:
    token_ttl_s: int = 86400
    auto_register: bool = True


class AuthService:
    def __init__(self, db: Database, secret: bytes, config: AuthConfig) -> None:
        self._db = db
        self._secret = secret
        self._config = config
        # OWASP's argon2id floor: 19 MiB, 2 passes, 1 lane (~20 ms here, off the event loop).
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self._dummy_hash = self._hasher.hash(secrets.token_hex(8))

    async def init(self) -> None:
        await self._db.script(_SCHEMA)

    @storage_failures_unavailable
    async def register(self, username: str, password: str) -> RegisterResult:
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        try:
            await self._db.write(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
                (username, password_hash, int(time.time() * 1000)),
            )
        except sqlite3.IntegrityError:
            raise UsernameTaken(f"username {username!r} is taken") from None
        return {"ok": True, "username": username}

    @storage_failures_unavailable
    async def login(self, username: str, password: str) -> tuple[LoginResult, Session]:
        stored = await self._password_hash(username)
        if stored is None and self._config.auto_register:
            # Registered concurrently: then the password is checked below like any login.
            with contextlib.suppress(UsernameTaken):
                await self.register(username, password)
            stored = await self._password_hash(username)
        if not await asyncio.to_thread(self._verify, stored, password):
            raise Unauthorized("wrong username or password")
        return await self._issue(username)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            # Unknown users cost the same hash check, so timing does not reveal who exists.
            self._hasher.verify(stored or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    async def _password_hash(self, username: str) -> str | None:
        row = await self._db.row("SELECT password_hash FROM users WHERE username = ?", (username,))
        return None if row is None else str(row[0])

    async def _issue(self, username: str) -> tuple[LoginResult, Session]:
        issued = int(time.time())
        expires = issued + self._config.token_ttl_s
        jti = uuid.uuid4().hex
        token = jwt.encode(
            {"sub": username, "iat": issued, "exp": expires, "jti": jti}, self._secret, algorithm=_ALGORITHM
        )
        await self._db.write(
            "INSERT INTO sessions (jti, username, issued_at, expires_at) VALUES (?, ?, ?, ?)",
            (jti, username, issued * 1000, expires * 1000),
        )
        session = Session(username=username, jti=jti, expires_at=expires * 1000)
        body: LoginResult = {
            "ok": True,
            "access_token": token,
            "token_type": "bearer",
            "expires_at": session.expires_at,
            "username": username,
        }
        return body, session

    @storage_failures_unavailable
    async def verify(self, token: str) -> Session:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "iat", "jti", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid token") from None
        jti, sub = claims.get("jti"), claims.get("sub")
        if not isinstance(jti, str) or not isinstance(sub, str):
            raise Unauthorized("invalid token")
        row = await self._db.row("SELECT username, expires_at, revoked FROM sessions WHERE jti = ?", (jti,))
        if row is None or row[0] != sub:
            raise Unauthorized("unknown session")
        if row[2]:
            raise Unauthorized("token revoked")
        return Session(username=sub, jti=jti, expires_at=int(row[1]))

    @storage_failures_unavailable
    async def logout(self, jti: str) -> None:
        await self._db.write("UPDATE sessions SET revoked = 1 WHERE jti = ?", (jti,))

    @storage_failures_unavailable
    async def prune_sessions(self) -> None:
        """Expired sessions can no longer be used; a revoked one is kept until it expires."""
        await self._db.write("DELETE FROM sessions WHERE expires_at < ?", (int(time.time() * 1000),))
