"""Live sessions kept in memory in front of a SessionStore, for the process that is its only writer.

Every authenticated request asks whether its session is still live (`Authenticate`, SECURITY.md
T7). Asking the store costs a statement per request, and under granian each statement also
costs a hand-over of the GIL. This wrapper answers from memory for a session it has read live.

It stays exact, without a time-to-live, because every change of a session in this process goes
through it: a revocation drops the cached entry before it returns, so the same token is refused
by the next request (a 0 s window). A read that overlapped a change keeps nothing, because it may
have read the row from before the change. A change whose caller is cancelled still runs to its
end (a store's write may commit after the cancellation), and reads keep nothing until it has
ended. It cannot see changes made by *other* processes, so the container uses it only where
there are none (no broker, and one server per database: `entrypoints.single_server`). With a
broker every request asks the store.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from chatcore.ports.security import AuthSession, RefreshMatch, SessionStore

DEFAULT_MAX_ENTRIES = 50_000  # about 40 MiB of sessions at most; the oldest entry leaves first


class CachedSessionStore:
    def __init__(self, inner: SessionStore, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.inner = inner  # the store itself: what is stored lives there
        self._max_entries = max_entries
        self._live: dict[str, AuthSession] = {}  # in insertion order: the first is the oldest
        self._changes = 0  # counts changes begun or ended; a read that saw it move keeps nothing
        self._pending = 0  # changes under way; reads keep nothing meanwhile

    async def get(self, session_id: str) -> AuthSession | None:
        cached = self._live.get(session_id)
        if cached is not None:
            return copy.copy(cached)  # callers may change their copy
        changes = self._changes
        session = await self.inner.get(session_id)
        if session is not None and not session.revoked and changes == self._changes and not self._pending:
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

    async def _change[T](self, session_id: str | None, change: Coroutine[Any, Any, T]) -> T:
        """Run a change of the store. It ends when the store's change ends, even if the caller
        is cancelled first (shielded), and only then may reads keep what they read."""
        self._forget(session_id)
        self._pending += 1
        running = asyncio.ensure_future(change)

        def ended(_: asyncio.Future[T]) -> None:
            self._pending -= 1
            self._forget(session_id)

        running.add_done_callback(ended)
        return await asyncio.shield(running)

    async def add(self, session: AuthSession) -> None:
        await self.inner.add(session)  # cached on its first use, not here

    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        return await self.inner.find_by_refresh(refresh_hash)

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        return await self._change(session_id, self.inner.rotate(session_id, old_hash, new_hash, now=now))

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        return await self._change(session_id, self.inner.revoke(session_id, now=now, reason=reason))

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        # Rare (a password changed or reset): the whole cache goes rather than an index by user.
        return await self._change(None, self.inner.revoke_all(user_id, now=now, reason=reason, keep=keep))

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        return await self.inner.list_active(user_id, now=now)
