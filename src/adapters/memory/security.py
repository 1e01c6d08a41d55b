"""In-memory one-time-token store, session store and failure counter (one process only).

Every operation runs under an asyncio lock, so compare-and-set steps stay atomic even if a
future change adds an await inside them. Only hashes are ever handed to these stores.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
from datetime import datetime, timedelta

from chatcore.ports.security import (
    AuthSession,
    EmailPurpose,
    FailureRecord,
    OneTimeToken,
    RefreshMatch,
)


def _live(token: OneTimeToken, now: datetime, max_failures: int) -> bool:
    return token.consumed_at is None and now < token.expires_at and token.failed_attempts < max_failures


class MemoryOneTimeTokenStore:
    def __init__(self) -> None:
        self.tokens: dict[str, OneTimeToken] = {}  # by attempt id
        self._lock = asyncio.Lock()

    async def put(self, token: OneTimeToken) -> None:
        async with self._lock:
            stale = [
                a for a, t in self.tokens.items() if t.email == token.email and t.purpose == token.purpose
            ]
            for attempt_id in stale:
                del self.tokens[attempt_id]
            self.tokens[token.attempt_id] = copy.copy(token)

    async def consume_code(
        self, attempt_id: str, code_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        async with self._lock:
            token = self.tokens.get(attempt_id)
            if token is None or token.purpose != purpose or not _live(token, now, max_failures):
                return None
            if not hmac.compare_digest(token.code_hash, code_hash):
                token.failed_attempts += 1
                return None
            token.consumed_at = now
            return copy.copy(token)

    async def consume_link(
        self, link_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        async with self._lock:
            token = next(
                (t for t in self.tokens.values() if hmac.compare_digest(t.link_hash, link_hash)), None
            )
            if token is None or token.purpose != purpose or not _live(token, now, max_failures):
                return None
            token.consumed_at = now
            return copy.copy(token)

    async def purge(self, *, now: datetime) -> int:
        async with self._lock:
            dead = [a for a, t in self.tokens.items() if t.consumed_at is not None or now >= t.expires_at]
            for attempt_id in dead:
                del self.tokens[attempt_id]
            return len(dead)


class MemorySessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, AuthSession] = {}
        # Every refresh hash a session ever had, current or superseded, to tell a replay from noise.
        self.refresh_index: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def add(self, session: AuthSession) -> None:
        async with self._lock:
            self.sessions[session.id] = copy.copy(session)
            self.refresh_index[session.refresh_hash] = session.id

    async def get(self, session_id: str) -> AuthSession | None:
        async with self._lock:
            session = self.sessions.get(session_id)
            return copy.copy(session) if session is not None else None

    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        async with self._lock:
            session_id = self.refresh_index.get(refresh_hash)
            session = self.sessions.get(session_id) if session_id is not None else None
            if session is None:
                return None
            return RefreshMatch(session=copy.copy(session), current=session.refresh_hash == refresh_hash)

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        async with self._lock:
            session = self.sessions.get(session_id)
            if session is None or session.revoked or session.refresh_hash != old_hash:
                return False
            session.refresh_hash = new_hash
            session.last_used_at = now
            session.generation += 1
            self.refresh_index[new_hash] = session_id
            return True

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        async with self._lock:
            session = self.sessions.get(session_id)
            if session is None or session.revoked:
                return False
            session.revoked_at, session.revoked_reason = now, reason
            return True

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        async with self._lock:
            count = 0
            for session in self.sessions.values():
                if session.user_id == user_id and session.id != keep and not session.revoked:
                    session.revoked_at, session.revoked_reason = now, reason
                    count += 1
            return count

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        async with self._lock:
            live = [
                copy.copy(s)
                for s in self.sessions.values()
                if s.user_id == user_id and not s.revoked and now < s.expires_at
            ]
            return sorted(live, key=lambda s: (s.created_at, s.id))

    async def purge(self, *, now: datetime) -> int:
        """Forget sessions past their absolute end, with every refresh hash they had."""
        async with self._lock:
            dead = {i for i, s in self.sessions.items() if now >= s.expires_at}
            for session_id in dead:
                del self.sessions[session_id]
            for h in [h for h, i in self.refresh_index.items() if i in dead]:
                del self.refresh_index[h]
            return len(dead)


class MemoryFailureCounter:
    def __init__(self) -> None:
        self.records: dict[str, FailureRecord] = {}
        self._lock = asyncio.Lock()

    def _current(self, key: str, now: datetime, forget_after_s: int) -> FailureRecord | None:
        record = self.records.get(key)
        if record is None or now - record.last_failure_at >= timedelta(seconds=forget_after_s):
            return None
        return record

    async def get(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord | None:
        async with self._lock:
            return self._current(key, now, forget_after_s)

    async def add_failure(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord:
        async with self._lock:
            record = self._current(key, now, forget_after_s)
            count = record.count + 1 if record is not None else 1
            self.records[key] = FailureRecord(count=count, last_failure_at=now)
            return self.records[key]

    async def clear(self, key: str) -> None:
        async with self._lock:
            self.records.pop(key, None)
