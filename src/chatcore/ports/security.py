"""Credentials and tokens: password hashing, access tokens, one-time email tokens, sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str, password: str) -> bool: ...
    def needs_rehash(self, password_hash: str) -> bool: ...


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    session_id: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


class TokenIssuer(Protocol):
    def issue(self, *, user_id: str, session_id: str, now: datetime) -> tuple[str, AccessClaims]: ...
    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        """Raises Unauthenticated for any token that is not a valid, current access token."""
        ...


class OneTimeToken(msgspec.Struct, kw_only=True):
    """A code-and-link pair mailed for login, verification or reset; only hashes are kept."""

    attempt_id: str
    purpose: str
    email: str
    user_id: str | None
    code_hash: str
    link_hash: str
    expires_at: datetime
    failed_attempts: int = 0
    consumed: bool = False


class OneTimeTokenStore(Protocol):
    async def put(self, token: OneTimeToken) -> None:
        """Store a new token; earlier unconsumed tokens of the same email and purpose are voided."""
        ...

    async def consume_code(
        self, attempt_id: str, code_hash: str, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        """Atomically consume the attempt's token if the code matches; else count a failure."""
        ...

    async def consume_link(self, link_hash: str, *, now: datetime) -> OneTimeToken | None: ...


class AuthSession(msgspec.Struct, kw_only=True):
    """One login: a refresh-token family. The refresh token rotates; the session id stays."""

    id: str
    user_id: str
    refresh_hash: str
    created_at: datetime
    last_used_at: datetime
    revoked_at: datetime | None = None


class SessionStore(Protocol):
    async def add(self, session: AuthSession) -> None: ...
    async def get(self, session_id: str) -> AuthSession | None: ...
    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        """Compare-and-set the refresh hash; False when `old_hash` is no longer current (a replay)."""
        ...

    async def revoke(self, session_id: str, *, now: datetime) -> None: ...
    async def revoke_all(self, user_id: str, *, now: datetime, keep: str | None = None) -> None: ...
    async def list_active(self, user_id: str) -> list[AuthSession]: ...
