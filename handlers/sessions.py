"""Logging in and out, for REST and Socket.IO alike: one place issues, verifies and revokes
tokens, and a revoked token's sockets are demoted wherever the logout came from."""

from __future__ import annotations

from handlers.sockets import SocketRegistry
from protocol.errors import Unauthorized
from protocol.results import LoginResult, RegisterResult
from storage.users import AuthService, Session


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


class SessionService:
    def __init__(self, auth: AuthService, sockets: SocketRegistry) -> None:
        self._auth = auth
        self._sockets = sockets

    async def register(self, username: str, password: str) -> RegisterResult:
        return await self._auth.register(username, password)

    async def login(self, username: str, password: str) -> tuple[LoginResult, Session]:
        return await self._auth.login(username, password)

    async def verify(self, token: str) -> Session:
        return await self._auth.verify(token)

    async def verify_header(self, header: str) -> Session:
        """The session of an `Authorization: Bearer <token>` header."""
        token = bearer_token(header)
        if token is None:
            raise Unauthorized("send Authorization: Bearer <token>")
        return await self._auth.verify(token)

    async def logout(self, session: Session) -> None:
        """Revoke the token for good; every socket that used it becomes a guest at once."""
        await self._auth.logout(session.jti)
        await self._sockets.revoked(session.jti)
