"""The auth store contracts: one-time tokens, sessions and failure counters behave as auth.py needs.

Three suites, one fixture each: `one_time_tokens` (OneTimeTokensUnderTest), `sessions`
(SessionsUnderTest) and `failures` (FailuresUnderTest). Every test drives time through the
fixture's FakeClock. The clock starts far in the future on purpose: a database that deletes by
TTL (MongoDB) does so by the server's real clock, and must never remove a document under a test.
Times are whole seconds apart because some stores (BSON dates) keep milliseconds only.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from chatcore.ports.security import (
    AuthSession,
    EmailPurpose,
    FailureCounter,
    OneTimeToken,
    OneTimeTokenStore,
    SessionStore,
)
from chatcore.testing.doubles import FakeClock

# Ahead of any real clock the suite will meet, so server-side TTL deletion never fires in a test.
SUITE_START = datetime(2100, 1, 1, tzinfo=UTC)
MAX_FAILURES = 5
TOKEN_TTL_S = 600
SESSION_TTL_S = 30 * 86_400
CONCURRENT_CALLS = 10


def suite_clock() -> FakeClock:
    return FakeClock(SUITE_START)


def fake_hash(label: str) -> str:
    """A stand-in for a stored hash: 64 hex characters, like the real ones."""
    return hashlib.sha256(label.encode()).hexdigest()


@dataclass
class OneTimeTokensUnderTest:
    store: OneTimeTokenStore
    clock: FakeClock = field(default_factory=suite_clock)


@dataclass
class SessionsUnderTest:
    store: SessionStore
    clock: FakeClock = field(default_factory=suite_clock)


@dataclass
class FailuresUnderTest:
    counter: FailureCounter
    clock: FakeClock = field(default_factory=suite_clock)


# -- one-time tokens -------------------------------------------------------------------------


def _token(
    now: datetime,
    attempt_id: str = "attempt-1",
    *,
    email: str = "ann@example.com",
    purpose: EmailPurpose = EmailPurpose.LOGIN,
    user_id: str = "u1",
    ttl_s: int = TOKEN_TTL_S,
) -> OneTimeToken:
    return OneTimeToken(
        attempt_id=attempt_id,
        purpose=purpose,
        email=email,
        user_id=user_id,
        code_hash=fake_hash(f"code:{attempt_id}"),
        link_hash=fake_hash(f"link:{attempt_id}"),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )


class OneTimeTokenStoreContract:
    """Provide a `one_time_tokens` fixture yielding a OneTimeTokensUnderTest on an empty store."""

    async def _code(
        self,
        t: OneTimeTokensUnderTest,
        token: OneTimeToken,
        code_hash: str | None = None,
        *,
        attempt_id: str | None = None,
        purpose: EmailPurpose | None = None,
    ) -> OneTimeToken | None:
        return await t.store.consume_code(
            attempt_id or token.attempt_id,
            code_hash or token.code_hash,
            purpose or token.purpose,
            now=t.clock.now(),
            max_failures=MAX_FAILURES,
        )

    async def _link(
        self, t: OneTimeTokensUnderTest, token: OneTimeToken, purpose: EmailPurpose | None = None
    ) -> OneTimeToken | None:
        return await t.store.consume_link(
            token.link_hash, purpose or token.purpose, now=t.clock.now(), max_failures=MAX_FAILURES
        )

    async def test_code_consumes_the_token_once_and_returns_it(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        await t.store.put(token)
        t.clock.advance(30)
        found = await self._code(t, token)
        assert found is not None
        assert found.attempt_id == token.attempt_id and found.purpose is EmailPurpose.LOGIN
        assert (found.email, found.user_id) == (token.email, token.user_id)
        assert (found.code_hash, found.link_hash) == (token.code_hash, token.link_hash)
        assert (found.created_at, found.expires_at) == (token.created_at, token.expires_at)
        assert found.consumed_at == t.clock.now()
        assert found.failed_attempts == 0
        assert await self._code(t, token) is None
        assert await self._link(t, token) is None  # the code and the link are one token

    async def test_link_consumes_the_token_once(self, one_time_tokens: OneTimeTokensUnderTest) -> None:
        t = one_time_tokens
        token = _token(t.clock.now(), purpose=EmailPurpose.VERIFY_EMAIL)
        await t.store.put(token)
        found = await self._link(t, token)
        assert found is not None and found.attempt_id == token.attempt_id
        assert found.purpose is EmailPurpose.VERIFY_EMAIL and found.consumed_at == t.clock.now()
        assert await self._link(t, token) is None
        assert await self._code(t, token) is None

    async def test_a_new_token_voids_older_ones_of_the_same_email_and_purpose(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        now = t.clock.now()
        first = _token(now, "attempt-1")
        other_purpose = _token(now, "attempt-2", purpose=EmailPurpose.RESET_PASSWORD)
        other_email = _token(now, "attempt-3", email="bob@example.com", user_id="u2")
        for token in (first, other_purpose, other_email):
            await t.store.put(token)
        second = _token(now, "attempt-4")
        await t.store.put(second)
        assert await self._code(t, first) is None
        assert await self._link(t, first) is None
        assert await self._code(t, second) is not None
        assert await self._code(t, other_purpose) is not None
        assert await self._link(t, other_email) is not None

    async def test_concurrent_consumes_of_one_code_have_exactly_one_winner(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        await t.store.put(token)
        results = await asyncio.gather(*(self._code(t, token) for _ in range(CONCURRENT_CALLS)))
        assert sum(r is not None for r in results) == 1

    async def test_concurrent_consumes_of_one_link_have_exactly_one_winner(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        await t.store.put(token)
        results = await asyncio.gather(*(self._link(t, token) for _ in range(CONCURRENT_CALLS)))
        assert sum(r is not None for r in results) == 1

    async def test_wrong_codes_count_and_the_limit_voids_code_and_link(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        by_code, by_link = (
            _token(t.clock.now(), "attempt-1"),
            _token(t.clock.now(), "attempt-2", email="b@x.io"),
        )
        for token in (by_code, by_link):
            await t.store.put(token)
            for _ in range(MAX_FAILURES):
                assert await self._code(t, token, fake_hash("wrong")) is None
        assert await self._code(t, by_code) is None
        assert await self._link(t, by_link) is None

    async def test_wrong_codes_below_the_limit_leave_the_token_live(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        await t.store.put(token)
        for _ in range(MAX_FAILURES - 1):
            assert await self._code(t, token, fake_hash("wrong")) is None
        found = await self._code(t, token)
        assert found is not None and found.failed_attempts == MAX_FAILURES - 1

    async def test_concurrent_wrong_codes_never_let_more_than_the_limit_through(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        await t.store.put(token)
        wrong = [self._code(t, token, fake_hash(f"wrong{i}")) for i in range(3 * MAX_FAILURES)]
        assert not any(await asyncio.gather(*wrong))
        assert await self._code(t, token) is None

    async def test_wrong_purpose_or_attempt_is_refused_and_consumes_nothing(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        token = _token(t.clock.now())
        other = _token(t.clock.now(), "attempt-2", email="bob@example.com", user_id="u2")
        await t.store.put(token)
        await t.store.put(other)
        assert await self._code(t, token, purpose=EmailPurpose.RESET_PASSWORD) is None
        assert await self._link(t, token, EmailPurpose.VERIFY_EMAIL) is None
        assert await self._code(t, token, attempt_id=other.attempt_id) is None  # A's code, B's attempt
        assert await self._code(t, token, attempt_id="no-such-attempt") is None
        assert (
            await t.store.consume_link(
                fake_hash("no-such-link"), EmailPurpose.LOGIN, now=t.clock.now(), max_failures=MAX_FAILURES
            )
            is None
        )
        assert await self._code(t, token) is not None

    async def test_an_expired_token_is_refused(self, one_time_tokens: OneTimeTokensUnderTest) -> None:
        t = one_time_tokens
        live, dead = _token(t.clock.now(), "attempt-1"), _token(t.clock.now(), "attempt-2", email="b@x.io")
        await t.store.put(live)
        await t.store.put(dead)
        t.clock.advance(TOKEN_TTL_S - 1)
        assert await self._code(t, live) is not None
        t.clock.advance(1)  # now == expires_at
        assert await self._code(t, dead) is None
        assert await self._link(t, dead) is None
        t.clock.advance(3600)
        assert await self._code(t, dead) is None

    async def test_purge_deletes_consumed_and_expired_tokens_only(
        self, one_time_tokens: OneTimeTokensUnderTest
    ) -> None:
        t = one_time_tokens
        now = t.clock.now()
        consumed = _token(now, "attempt-1", email="a@x.io")
        expiring = _token(now, "attempt-2", email="b@x.io", ttl_s=60)
        live = _token(now, "attempt-3", email="c@x.io")
        for token in (consumed, expiring, live):
            await t.store.put(token)
        assert await self._code(t, consumed) is not None
        t.clock.advance(60)
        assert await t.store.purge(now=t.clock.now()) == 2
        assert await t.store.purge(now=t.clock.now()) == 0
        assert await self._link(t, live) is not None


# -- sessions --------------------------------------------------------------------------------


def _session(
    now: datetime,
    session_id: str = "s1",
    *,
    user_id: str = "u1",
    refresh: str | None = None,
    ttl_s: int = SESSION_TTL_S,
    ip: str | None = "203.0.113.7",
    user_agent: str | None = "Mozilla/5.0 (X11) Firefox/140",
) -> AuthSession:
    return AuthSession(
        id=session_id,
        user_id=user_id,
        refresh_hash=fake_hash(refresh or f"refresh:{session_id}:0"),
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        method="password",
        ip=ip,
        user_agent=user_agent,
    )


class SessionStoreContract:
    """Provide a `sessions` fixture yielding a SessionsUnderTest on an empty store."""

    async def test_add_and_get_round_trip(self, sessions: SessionsUnderTest) -> None:
        s = sessions
        full = _session(s.clock.now(), "s1")
        bare = _session(s.clock.now(), "s2", ip=None, user_agent=None)
        bare.method = "email_link"
        for session in (full, bare):
            await s.store.add(session)
            assert await s.store.get(session.id) == session
        assert await s.store.get("no-such-session") is None

    async def test_rotate_is_a_compare_and_set(self, sessions: SessionsUnderTest) -> None:
        s = sessions
        session = _session(s.clock.now())
        await s.store.add(session)
        h1, h2 = fake_hash("r1"), fake_hash("r2")
        s.clock.advance(900)
        assert await s.store.rotate(session.id, session.refresh_hash, h1, now=s.clock.now())
        rotated = await s.store.get(session.id)
        assert rotated is not None
        assert (rotated.refresh_hash, rotated.generation) == (h1, 1)
        assert rotated.last_used_at == s.clock.now()
        assert (rotated.created_at, rotated.expires_at) == (session.created_at, session.expires_at)
        s.clock.advance(900)
        assert not await s.store.rotate(session.id, session.refresh_hash, h2, now=s.clock.now())
        assert await s.store.get(session.id) == rotated  # a refused rotation changes nothing
        assert not await s.store.rotate("no-such-session", h1, h2, now=s.clock.now())

    async def test_concurrent_rotations_of_one_hash_have_exactly_one_winner(
        self, sessions: SessionsUnderTest
    ) -> None:
        s = sessions
        session = _session(s.clock.now())
        await s.store.add(session)
        new_hashes = [fake_hash(f"r{i}") for i in range(CONCURRENT_CALLS)]
        results = await asyncio.gather(
            *(s.store.rotate(session.id, session.refresh_hash, h, now=s.clock.now()) for h in new_hashes)
        )
        assert sum(results) == 1
        winner = new_hashes[results.index(True)]
        after = await s.store.get(session.id)
        assert after is not None and (after.refresh_hash, after.generation) == (winner, 1)
        for loser in (h for h, won in zip(new_hashes, results, strict=True) if not won):
            assert await s.store.find_by_refresh(loser) is None

    async def test_find_by_refresh_tells_current_superseded_and_unknown(
        self, sessions: SessionsUnderTest
    ) -> None:
        s = sessions
        session = _session(s.clock.now())
        other = _session(s.clock.now(), "s2", user_id="u2")
        await s.store.add(session)
        await s.store.add(other)
        h0, h1, h2 = session.refresh_hash, fake_hash("r1"), fake_hash("r2")
        assert await s.store.rotate(session.id, h0, h1, now=s.clock.now())
        s.clock.advance(86_400)
        assert await s.store.rotate(session.id, h1, h2, now=s.clock.now())
        current = await s.store.find_by_refresh(h2)
        assert current is not None and current.current
        assert current.session == await s.store.get(session.id)
        for old in (h0, h1):
            replay = await s.store.find_by_refresh(old)
            assert replay is not None and not replay.current
            assert replay.session.id == session.id and replay.session.refresh_hash == h2
            assert replay.session.generation == 2
        assert await s.store.find_by_refresh(fake_hash("made-up")) is None
        found_other = await s.store.find_by_refresh(other.refresh_hash)
        assert found_other is not None and found_other.current and found_other.session.id == "s2"

    async def test_revoke_ends_the_family_once(self, sessions: SessionsUnderTest) -> None:
        s = sessions
        session = _session(s.clock.now())
        await s.store.add(session)
        s.clock.advance(60)
        revoked_at = s.clock.now()
        assert await s.store.revoke(session.id, now=revoked_at, reason="logout")
        s.clock.advance(60)
        assert not await s.store.revoke(session.id, now=s.clock.now(), reason="again")
        assert not await s.store.revoke("no-such-session", now=s.clock.now(), reason="logout")
        got = await s.store.get(session.id)
        assert got is not None and got.revoked
        assert (got.revoked_at, got.revoked_reason) == (revoked_at, "logout")
        # Still found by its hash, so a refresh of a revoked family is told apart from noise.
        match = await s.store.find_by_refresh(session.refresh_hash)
        assert match is not None and match.session.revoked
        assert not await s.store.rotate(session.id, session.refresh_hash, fake_hash("r1"), now=s.clock.now())

    async def test_revoke_all_counts_and_keeps_one(self, sessions: SessionsUnderTest) -> None:
        s = sessions
        now = s.clock.now()
        for session_id, user_id in (("s1", "u1"), ("s2", "u1"), ("s3", "u1"), ("s4", "u2")):
            await s.store.add(_session(now, session_id, user_id=user_id))
        assert await s.store.revoke("s3", now=now, reason="logout")
        assert await s.store.revoke_all("u1", now=now, reason="password_changed", keep="s1") == 1
        kept = await s.store.get("s1")
        assert kept is not None and not kept.revoked
        s2 = await s.store.get("s2")
        assert s2 is not None and s2.revoked_reason == "password_changed"
        s3 = await s.store.get("s3")
        assert s3 is not None and s3.revoked_reason == "logout"  # already revoked: left alone
        assert await s.store.revoke_all("u1", now=now, reason="password_reset") == 1
        assert await s.store.revoke_all("u1", now=now, reason="password_reset") == 0
        assert await s.store.revoke_all("nobody", now=now, reason="password_reset") == 0
        untouched = await s.store.get("s4")
        assert untouched is not None and not untouched.revoked

    async def test_list_active_excludes_revoked_and_expired_oldest_first(
        self, sessions: SessionsUnderTest
    ) -> None:
        s = sessions
        start = s.clock.now()
        await s.store.add(_session(start, "s-short", ttl_s=3600))
        s.clock.advance(10)
        await s.store.add(_session(s.clock.now(), "s-b"))
        await s.store.add(_session(s.clock.now(), "s-a"))  # same instant: ordered by id
        s.clock.advance(10)
        await s.store.add(_session(s.clock.now(), "s-revoked"))
        await s.store.add(_session(s.clock.now(), "s-other", user_id="u2"))
        assert await s.store.revoke("s-revoked", now=s.clock.now(), reason="logout")
        active = await s.store.list_active("u1", now=s.clock.now())
        assert [x.id for x in active] == ["s-short", "s-a", "s-b"]
        assert active[0] == await s.store.get("s-short")
        s.clock.set(start + timedelta(seconds=3600))  # s-short's absolute end
        assert [x.id for x in await s.store.list_active("u1", now=s.clock.now())] == ["s-a", "s-b"]
        assert await s.store.list_active("nobody", now=s.clock.now()) == []


# -- failure counters -------------------------------------------------------------------------

FORGET_S = 3600


class FailureCounterContract:
    """Provide a `failures` fixture yielding a FailuresUnderTest on an empty counter."""

    async def test_failures_count_up_from_one(self, failures: FailuresUnderTest) -> None:
        f = failures
        assert await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S) is None
        for expected in (1, 2, 3):
            f.clock.advance(30)
            record = await f.counter.add_failure(
                "ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S
            )
            assert (record.count, record.last_failure_at) == (expected, f.clock.now())
        got = await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert got is not None and (got.count, got.last_failure_at) == (3, f.clock.now())
        assert await f.counter.get("bob@example.com", now=f.clock.now(), forget_after_s=FORGET_S) is None

    async def test_failures_are_forgotten_after_the_window(self, failures: FailuresUnderTest) -> None:
        f = failures
        for _ in range(3):
            await f.counter.add_failure("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        f.clock.advance(FORGET_S - 1)
        kept = await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert kept is not None and kept.count == 3
        f.clock.advance(1)  # the last failure is now exactly `forget_after_s` old
        assert await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S) is None
        record = await f.counter.add_failure("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert (record.count, record.last_failure_at) == (1, f.clock.now())

    async def test_each_failure_restarts_the_window(self, failures: FailuresUnderTest) -> None:
        f = failures
        for _ in range(4):
            await f.counter.add_failure("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
            f.clock.advance(FORGET_S - 1)
        record = await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert record is not None and record.count == 4

    async def test_clear_forgets_one_key(self, failures: FailuresUnderTest) -> None:
        f = failures
        for key in ("ann@example.com", "bob@example.com"):
            await f.counter.add_failure(key, now=f.clock.now(), forget_after_s=FORGET_S)
        await f.counter.clear("ann@example.com")
        await f.counter.clear("nobody@example.com")
        assert await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S) is None
        bob = await f.counter.get("bob@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert bob is not None and bob.count == 1
        again = await f.counter.add_failure("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert again.count == 1

    async def test_concurrent_failures_are_all_counted(self, failures: FailuresUnderTest) -> None:
        f = failures
        records = await asyncio.gather(
            *(
                f.counter.add_failure("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
                for _ in range(CONCURRENT_CALLS)
            )
        )
        assert sorted(r.count for r in records) == list(range(1, CONCURRENT_CALLS + 1))
        got = await f.counter.get("ann@example.com", now=f.clock.now(), forget_after_s=FORGET_S)
        assert got is not None and got.count == CONCURRENT_CALLS
