"""Logging in and out, for REST and Socket.IO alike: one place issues, verifies and revokes
tokens, throttles failed logins, and demotes a revoked token's sockets wherever the logout
came from."""

from __future__ import annotations

from handlers.sockets import SocketRegistry
from protocol.errors import Unauthorized
from protocol.results import LoginResult, RegisterResult
from storage.login_throttle import LoginThrottle
from storage.users import AuthService, Session


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return None


class SessionService:
    def __init__(self, auth: AuthService, sockets: SocketRegistry, throttle: LoginThrottle) -> None:
        self._auth = auth
        self._sockets = sockets
        self._throttle = throttle

    async def register(self, username: str, password: str) -> RegisterResult:
        return await self._auth.register(username, password)

    async def login(self, username: str, password: str, address: str | None) -> tuple[LoginResult, Session]:
        """`address` is the client's (the peer of the connection: a proxy's, behind one). Past
        the throttle's limit the answer is `rate_limited`, whatever the password."""
        attempt = self._throttle.begin(username, address)
        try:
            result = await self._auth.login(username, password)
        except Unauthorized:
            raise  # a failed login: it keeps counting
        except BaseException:
            self._throttle.release(attempt)
            raise
        self._throttle.release(attempt)
        return result

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
