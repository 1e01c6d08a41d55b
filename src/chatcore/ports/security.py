"""Credentials and tokens: password hashing, access tokens, one-time email tokens, sessions.

Nothing secret is ever handed to a store: one-time codes arrive HMAC-ed, link and refresh tokens
SHA-256-hashed. The stores compare hashes; the use cases never keep a raw secret.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

import msgspec


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str, password: str) -> bool:
        """False for a wrong password and for a hash it cannot read; never raises for either."""
        ...

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the current ones."""
        ...


class AccessClaims(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    session_id: str
    token_id: str
    issued_at: datetime
    expires_at: datetime


class TokenIssuer(Protocol):
    def issue(self, *, user_id: str, session_id: str, now: datetime, ttl_s: int) -> tuple[str, AccessClaims]:
        """A signed access token valid from `now` for `ttl_s` seconds, and its claims."""
        ...

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        """Raises Unauthenticated for any token that is not a valid, current access token.

        Time claims are checked against `now` (the Clock port), never the machine's clock.
        """
        ...


class EmailPurpose(StrEnum):
    """What a mailed code or link is good for; a token of one purpose never serves another."""

    LOGIN = "login"
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose name, not a secret


class OneTimeToken(msgspec.Struct, kw_only=True):
    """A code-and-link pair mailed for login, verification or reset; only hashes are kept.

    `code_hash` is an HMAC of the 6-digit code keyed by the server (10^6 values would fall to a
    plain hash at once); `link_hash` a SHA-256 of the 256-bit link token.
    """

    attempt_id: str
    purpose: EmailPurpose
    email: str
    user_id: str
    code_hash: str
    link_hash: str
    created_at: datetime
    expires_at: datetime
    failed_attempts: int = 0
    consumed_at: datetime | None = None


class OneTimeTokenStore(Protocol):
    async def put(self, token: OneTimeToken) -> None:
        """Store a new token; earlier tokens of the same email and purpose are voided (deleted)."""
        ...

    async def consume_code(
        self, attempt_id: str, code_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        """Atomically consume the attempt's token when the code matches, else count a failure.

        None (and nothing consumed) when there is no live token of that attempt and purpose:
        unknown, consumed, voided, expired (`now >= expires_at`) or already `max_failures`
        wrong codes. Of any number of concurrent calls with the right code, exactly one wins.
        """
        ...

    async def consume_link(
        self, link_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        """Atomically consume the live token whose link hash this is; None as for `consume_code`."""
        ...

    async def purge(self, *, now: datetime) -> int:
        """Delete expired and consumed tokens; how many were deleted."""
        ...


class AuthSession(msgspec.Struct, kw_only=True):
    """One login: a refresh-token family. The refresh token rotates; the session id stays.

    `expires_at` is the absolute end of the family; the idle limit runs from `last_used_at`.
    `generation` counts rotations.
    """

    id: str
    user_id: str
    refresh_hash: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    method: str  # how the user authenticated: password, email_code, email_link
    generation: int = 0
    ip: str | None = None
    user_agent: str | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class RefreshMatch(msgspec.Struct, frozen=True, kw_only=True):
    """The session a refresh hash belongs to, and whether it is the current one.

    `current=False` means the hash was rotated away: presenting it again is a replay.
    """

    session: AuthSession
    current: bool


class SessionStore(Protocol):
    async def add(self, session: AuthSession) -> None: ...
    async def get(self, session_id: str) -> AuthSession | None: ...
    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        """The session whose current or superseded refresh hash this is; None for an unknown hash.

        Superseded hashes are kept until the session's `expires_at`, so that a replay is told
        apart from a made-up token however old it is.
        """
        ...

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        """Compare-and-set the refresh hash, if the session is not revoked.

        On success `old_hash` becomes superseded, `last_used_at = now` and `generation` grows by
        one. False when `old_hash` is no longer current (a replay or a lost race): nothing changes.
        """
        ...

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        """Revoke the family; False when it was already revoked or does not exist."""
        ...

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        """Revoke every live session of the user but `keep`; how many were revoked."""
        ...

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        """The user's sessions neither revoked nor past `expires_at`, oldest first."""
        ...


class FailureRecord(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    last_failure_at: datetime


class FailureCounter(Protocol):
    """Consecutive failed logins per key (a normalised email), for the growing login delay."""

    async def get(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord | None:
        """The key's failures, or None when there are none or the last is `forget_after_s` old."""
        ...

    async def add_failure(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord:
        """Count one more failure atomically (starting again from 1 when the last one is forgotten)."""
        ...

    async def clear(self, key: str) -> None: ...
