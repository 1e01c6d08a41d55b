"""Live sessions kept in memory in front of a SessionStore, for the process that is its only writer.

Every authenticated request asks whether its session is still live (`Authenticate`, SECURITY.md
T7). Asking the store costs a statement per request, and under granian each statement also
costs a hand-over of the GIL. This wrapper answers from memory for a session it has read live.

It stays exact, without a time-to-live, because every change of a session in this process goes
through it: a revocation drops the cached entry before it returns, so the same token is refused
by the next request (a 0 s window). A read that overlapped a change keeps nothing, because it may
have read the row from before the change. It cannot see changes made by *other* processes, so
the container uses it only where there are none (no broker: one process serves the data, see
`entrypoints.container`). With a broker every request asks the store.
"""

from __future__ import annotations

import copy
from datetime import datetime

from chatcore.ports.security import AuthSession, RefreshMatch, SessionStore

DEFAULT_MAX_ENTRIES = 100_000  # about 40 MiB of sessions at most; the oldest entry leaves first


class CachedSessionStore:
    def __init__(self, inner: SessionStore, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.inner = inner  # the store itself: what is stored lives there
        self._max_entries = max_entries
        self._live: dict[str, AuthSession] = {}  # in insertion order: the first is the oldest
        self._changes = 0  # counts changes begun or ended; a read that saw it move keeps nothing

    async def get(self, session_id: str) -> AuthSession | None:
        cached = self._live.get(session_id)
        if cached is not None:
            return copy.copy(cached)  # callers may change their copy
        changes = self._changes
        session = await self.inner.get(session_id)
        if session is not None and not session.revoked and changes == self._changes:
            self._remember(session)
        return session

    def _remember(self, session: AuthSession) -> None:
        if len(self._live) >= self._max_entries:
            del self._live[next(iter(self._live))]
        self._live[session.id] = copy.copy(session)

    def _forget(self, session_id: str | None) -> None:
        """Before and after each change: the entry goes, and reads in flight keep nothing."""
        self._changes += 1
        if session_id is None:
            self._live.clear()
        else:
            self._live.pop(session_id, None)

    async def add(self, session: AuthSession) -> None:
        await self.inner.add(session)  # cached on its first use, not here

    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        return await self.inner.find_by_refresh(refresh_hash)

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        self._forget(session_id)
        try:
            return await self.inner.rotate(session_id, old_hash, new_hash, now=now)
        finally:
            self._forget(session_id)

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        self._forget(session_id)
        try:
            return await self.inner.revoke(session_id, now=now, reason=reason)
        finally:
            self._forget(session_id)

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        # Rare (a password changed or reset): the whole cache goes rather than an index by user.
        self._forget(None)
        try:
            return await self.inner.revoke_all(user_id, now=now, reason=reason, keep=keep)
        finally:
            self._forget(None)

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        return await self.inner.list_active(user_id, now=now)
