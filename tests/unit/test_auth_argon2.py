"""Password storage and login (SECURITY P1, P2, P3): argon2id, rehash on login, passwords as typed."""

from __future__ import annotations

import dataclasses
import threading

import argon2
import pytest

from adapters.security.argon2_hasher import CHEAPEST, PRODUCTION, Argon2PasswordHasher
from chatcore.application.auth import RegisterCommand
from chatcore.domain.errors import InvalidInput, Unauthenticated
from tests.unit.test_auth_kit import PASSWORD, AuthKit, build_kit, login, register

EMAIL = "ann@example.com"


@pytest.fixture
def kit() -> AuthKit:
    return build_kit()


def _stored_hash(kit: AuthKit, user_id: str) -> str:
    return kit.core.store.credentials[user_id].password_hash


async def test_production_hashes_are_argon2id_above_the_owasp_minimum() -> None:
    hasher = Argon2PasswordHasher()  # the production default: the one test that pays for it
    stored = await hasher.hash(PASSWORD)
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19_456
    assert params.time_cost >= 2
    assert params.salt_len >= 16
    assert params.parallelism >= 1
    assert hasher.parameters == PRODUCTION != CHEAPEST
    assert await hasher.verify(stored, PASSWORD)
    assert not await hasher.verify(stored, PASSWORD + " ")
    assert not hasher.needs_rehash(stored)


def test_only_argon2id_is_accepted() -> None:
    with pytest.raises(ValueError, match="argon2id"):
        Argon2PasswordHasher(dataclasses.replace(CHEAPEST, type=argon2.Type.I))


async def test_a_corrupt_hash_verifies_false_and_needs_rehash() -> None:
    hasher = Argon2PasswordHasher.cheapest()
    assert not await hasher.verify("$argon2id$garbage", PASSWORD)
    assert not await hasher.verify("", PASSWORD)
    assert hasher.needs_rehash("not a hash")


async def test_hashing_runs_in_worker_threads() -> None:
    hasher = Argon2PasswordHasher.cheapest()
    await hasher.hash(PASSWORD)
    assert any(t.name.startswith("argon2") for t in threading.enumerate())
    assert threading.current_thread() is threading.main_thread()


async def test_only_the_hash_is_stored_with_the_user(kit: AuthKit) -> None:
    user_id = await register(kit, EMAIL)
    stored = _stored_hash(kit, user_id)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert PASSWORD not in repr(kit.core.store.users[user_id])


async def test_login_rehashes_when_the_parameters_change(kit: AuthKit) -> None:
    user_id = await register(kit, EMAIL)
    old = _stored_hash(kit, user_id)
    assert argon2.extract_parameters(old).time_cost == CHEAPEST.time_cost

    stronger = dataclasses.replace(CHEAPEST, time_cost=2, memory_cost=16)
    upgraded = kit.with_hasher(Argon2PasswordHasher(stronger))
    await login(upgraded, EMAIL)
    new = _stored_hash(kit, user_id)
    assert new != old
    assert argon2.extract_parameters(new) == stronger

    await login(upgraded, EMAIL)  # already current: left alone
    assert _stored_hash(kit, user_id) == new


async def test_a_truncated_or_recased_password_does_not_log_in(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    for variant in (
        PASSWORD[:-1],
        PASSWORD[:12],
        PASSWORD.upper(),
        PASSWORD.title(),
        f" {PASSWORD}",
        f"{PASSWORD} ",
    ):
        with pytest.raises(Unauthenticated):
            await login(kit, EMAIL, variant)
        kit.clock.advance(3600)  # keep the login delay out of this test
    assert (await login(kit, EMAIL)).user_id


async def test_a_128_character_password_is_used_whole(kit: AuthKit) -> None:
    long_password = ("ab-cd-ef-" * 15)[:128]
    await register(kit, EMAIL, long_password)
    with pytest.raises(Unauthenticated):
        await login(kit, EMAIL, long_password[:127])
    assert (await login(kit, EMAIL, long_password)).user_id


async def test_registration_applies_the_password_policy(kit: AuthKit) -> None:
    for bad in ("eleven char", "x" * 129, "1qaz2wsx3edc4rfv", "QAZWSXEDCRFV", EMAIL):
        with pytest.raises(InvalidInput) as caught:
            await kit.auth.register(RegisterCommand(email=EMAIL, password=bad, display_name="Ann"))
        assert caught.value.field == "password"
    assert kit.core.store.users == {}


async def test_registration_refuses_control_characters_in_the_name(kit: AuthKit) -> None:
    with pytest.raises(InvalidInput) as caught:
        await kit.auth.register(
            RegisterCommand(email=EMAIL, password=PASSWORD, display_name="Bob\r\nBcc: x@evil")
        )
    assert caught.value.field == "display_name"


async def test_addresses_are_normalised_and_unique(kit: AuthKit) -> None:
    user_id = await register(kit, "Ann@Example.com")
    assert kit.core.store.users[user_id].email == EMAIL
    assert (await login(kit, " ANN@example.COM")).user_id == user_id
    await kit.auth.register(RegisterCommand(email=EMAIL, password="a second passphrase", display_name="Ann"))
    assert len(kit.core.store.users) == 1
    with pytest.raises(InvalidInput) as caught:
        await kit.auth.register(
            RegisterCommand(email="a" * 243 + "@example.com", password=PASSWORD, display_name="A")
        )
    assert caught.value.field == "email"


async def test_registration_records_the_event(kit: AuthKit) -> None:
    user_id = await register(kit, EMAIL)
    events = [r.event for r in kit.core.store.log if r.stream_id == user_id]
    assert [type(e).__name__ for e in events] == ["UserRegistered"]
