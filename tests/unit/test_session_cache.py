"""The live-session cache: answers from memory, yet every change in this process shows at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory.security import MemorySessionStore
from adapters.session_cache import CachedSessionStore
from chatcore.ports.security import AuthSession

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _session(session_id: str, user_id: str = "u1") -> AuthSession:
    return AuthSession(
        id=session_id,
        user_id=user_id,
        refresh_hash=f"hash-{session_id}",
        created_at=NOW,
        last_used_at=NOW,
        expires_at=NOW + timedelta(days=1),
        method="password",
    )


class CountingStore(MemorySessionStore):
    """Counts reads; `hold` makes the next read wait (for a change to run meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def get(self, session_id: str) -> AuthSession | None:
        self.reads += 1
        found = await super().get(session_id)  # the row as it is now
        if self.hold is not None:
            self.reading.set()
            await self.hold.wait()  # ... returned after whatever runs meanwhile
        return found


async def test_a_live_session_is_read_from_the_store_once() -> None:
    inner = CountingStore()
    cache = CachedSessionStore(inner)
    await cache.add(_session("s1"))
    for _ in range(3):
        assert await cache.get("s1") == _session("s1")
    assert inner.reads == 1


async def test_a_revocation_shows_on_the_next_read() -> None:
    inner = CountingStore()
    cache = CachedSessionStore(inner)
    await cache.add(_session("s1"))
    assert await cache.get("s1") is not None
    assert await cache.revoke("s1", now=NOW, reason="logout")
    revoked = await cache.get("s1")
    assert revoked is not None and revoked.revoked
    assert inner.reads == 2


async def test_revoking_every_session_of_a_user_shows_at_once() -> None:
    cache = CachedSessionStore(CountingStore())
    for session in (_session("s1"), _session("s2"), _session("s3", user_id="u2")):
        await cache.add(session)
        await cache.get(session.id)
    assert await cache.revoke_all("u1", now=NOW, reason="password_changed", keep="s2") == 1
    states = {i: (await cache.get(i)) for i in ("s1", "s2", "s3")}
    revoked = {i: s is not None and s.revoked for i, s in states.items()}
    assert revoked == {"s1": True, "s2": False, "s3": False}


async def test_a_read_that_overlapped_a_revocation_is_not_kept() -> None:
    # The read fetched the row before the revocation, and returns after it: what it read may be
    # stale, so the next read asks the store again.
    inner = CountingStore()
    cache = CachedSessionStore(inner)
    await cache.add(_session("s1"))
    inner.hold = asyncio.Event()
    stale_read = asyncio.create_task(cache.get("s1"))
    await inner.reading.wait()
    assert await cache.revoke("s1", now=NOW, reason="logout")
    inner.hold.set()
    before = await stale_read
    assert before is not None and not before.revoked  # what the store had when asked
    inner.hold = None
    after = await cache.get("s1")
    assert after is not None and after.revoked


async def test_a_revoked_or_missing_session_is_never_kept() -> None:
    inner = CountingStore()
    cache = CachedSessionStore(inner)
    await cache.add(_session("s1"))
    await inner.revoke("s1", now=NOW, reason="logout")
    for _ in range(2):
        assert await cache.get("s1") is not None
        assert await cache.get("nobody") is None
    assert inner.reads == 4


async def test_a_caller_changing_its_copy_does_not_change_the_cache() -> None:
    cache = CachedSessionStore(CountingStore())
    await cache.add(_session("s1"))
    first = await cache.get("s1")
    assert first is not None
    first.revoked_at = NOW
    again = await cache.get("s1")
    assert again is not None and not again.revoked


async def test_the_cache_holds_at_most_max_entries_and_drops_the_oldest() -> None:
    inner = CountingStore()
    cache = CachedSessionStore(inner, max_entries=2)
    for i in range(3):
        await cache.add(_session(f"s{i}"))
        await cache.get(f"s{i}")
    assert inner.reads == 3
    await cache.get("s2")
    await cache.get("s1")
    assert inner.reads == 3  # the two newest were kept
    await cache.get("s0")
    assert inner.reads == 4  # the oldest was dropped


async def test_a_rotation_is_read_back_from_the_store() -> None:
    cache = CachedSessionStore(CountingStore())
    await cache.add(_session("s1"))
    await cache.get("s1")
    assert await cache.rotate("s1", "hash-s1", "hash-new", now=NOW + timedelta(minutes=1))
    rotated = await cache.get("s1")
    assert rotated is not None and (rotated.refresh_hash, rotated.generation) == ("hash-new", 1)


class SlowRevokeStore(CountingStore):
    """A revocation that takes effect only when `commit` is set (a batch COMMIT on a busy disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.commit = asyncio.Event()

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        await self.commit.wait()
        return await super().revoke(session_id, now=now, reason=reason)


async def test_a_revocation_whose_caller_is_cancelled_still_shows_once_it_ends() -> None:
    # The caller goes away, the store's change goes on (SQLite commits it anyway): reads in the
    # meantime see the live row and must not keep it, or the token would live on from memory.
    inner = SlowRevokeStore()
    cache = CachedSessionStore(inner)
    await cache.add(_session("s1"))
    await cache.get("s1")
    logout = asyncio.create_task(cache.revoke("s1", now=NOW, reason="logout"))
    await asyncio.sleep(0)
    logout.cancel()
    with pytest.raises(asyncio.CancelledError):
        await logout
    during = await cache.get("s1")
    assert during is not None and not during.revoked  # what the store still says
    inner.commit.set()
    for _ in range(3):  # the change runs to its end without its caller
        await asyncio.sleep(0)
    after = await cache.get("s1")
    assert after is not None and after.revoked
