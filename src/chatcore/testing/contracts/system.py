"""Contracts of the small ports: Clock, IdGenerator, PasswordHasher, TokenIssuer."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from chatcore.domain.errors import Unauthenticated
from chatcore.ports.security import PasswordHasher, TokenIssuer
from chatcore.ports.system import Clock, IdGenerator

_URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


class ClockContract:
    """Provide a `clock` fixture."""

    def test_now_is_timezone_aware_utc_and_never_goes_back(self, clock: Clock) -> None:
        first, second = clock.now(), clock.now()
        assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
        assert second >= first


class IdGeneratorContract:
    """Provide an `ids` fixture."""

    def test_ids_are_unique_url_safe_and_sort_in_creation_order(self, ids: IdGenerator) -> None:
        made = [ids.new_id() for _ in range(10_000)]
        assert len(set(made)) == len(made)
        assert all(_URL_SAFE.match(i) and len(i) <= 64 for i in made)
        # Within one process, later ids sort after earlier ones (history and logs rely on it).
        assert made[-1] > made[0]


class PasswordHasherContract:
    """Provide a `hasher` fixture."""

    async def test_a_hash_verifies_its_password_only(self, hasher: PasswordHasher) -> None:
        password = "correct horse battery staple"
        stored = await hasher.hash(password)
        assert password not in stored
        assert await hasher.verify(stored, password)
        for other in ("correct horse battery stapl", password.upper(), password + " ", ""):
            assert not await hasher.verify(stored, other)
        assert not hasher.needs_rehash(stored)

    async def test_the_same_password_hashes_differently_each_time(self, hasher: PasswordHasher) -> None:
        first, second = await asyncio.gather(
            hasher.hash("same password here"), hasher.hash("same password here")
        )
        assert first != second  # salted

    async def test_a_corrupt_hash_never_verifies(self, hasher: PasswordHasher) -> None:
        assert not await hasher.verify("not a hash", "anything at all")


NOW = datetime(2030, 1, 1, tzinfo=UTC)


class TokenIssuerContract:
    """Provide an `issuer` fixture; `other_issuer` signs with another key (for forgery)."""

    def test_a_token_verifies_to_its_claims_until_it_expires(self, issuer: TokenIssuer) -> None:
        token, claims = issuer.issue(user_id="u1", session_id="s1", now=NOW, ttl_s=900)
        verified = issuer.verify(token, now=NOW + timedelta(seconds=899))
        assert (verified.user_id, verified.session_id, verified.token_id) == ("u1", "s1", claims.token_id)
        assert verified.expires_at - verified.issued_at == timedelta(seconds=900)
        with pytest.raises(Unauthenticated):
            issuer.verify(token, now=NOW + timedelta(seconds=900 + 60))

    def test_each_token_has_its_own_id(self, issuer: TokenIssuer) -> None:
        ids = {issuer.issue(user_id="u1", session_id="s1", now=NOW, ttl_s=60)[1].token_id for _ in range(50)}
        assert len(ids) == 50

    def test_tampered_or_foreign_tokens_are_refused(
        self, issuer: TokenIssuer, other_issuer: TokenIssuer
    ) -> None:
        token, _ = issuer.issue(user_id="u1", session_id="s1", now=NOW, ttl_s=900)
        forged, _ = other_issuer.issue(user_id="u1", session_id="s1", now=NOW, ttl_s=900)
        flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        for bad in (forged, flipped, token + "x", "", "a.b.c"):
            with pytest.raises(Unauthenticated):
                issuer.verify(bad, now=NOW)
