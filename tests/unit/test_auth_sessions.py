"""Sessions (SECURITY T4, T6-T9, P4): rotation, replay, logout, revoke, lifetimes, access checks."""

from __future__ import annotations

import asyncio

import pytest

from chatcore.application.auth import (
    ChangePasswordCommand,
    LogoutCommand,
    RefreshCommand,
    RevokeSessionCommand,
    TokenPair,
    new_secret,
)
from chatcore.domain.errors import InvalidInput, NotFound, Unauthenticated
from tests.unit.test_auth_kit import PASSWORD, AuthKit, build_kit, login, register

EMAIL = "ann@example.com"


@pytest.fixture
def kit() -> AuthKit:
    return build_kit()


async def _refresh(kit: AuthKit, token: str) -> TokenPair:
    return await kit.auth.refresh(RefreshCommand(refresh_token=token))


async def _signed_in(kit: AuthKit) -> TokenPair:
    await register(kit, EMAIL)
    return await login(kit, EMAIL)


async def test_login_issues_a_15_minute_access_token_for_a_live_session(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    claims = await kit.auth.authenticate(pair.access_token)
    assert (claims.user_id, claims.session_id) == (pair.user_id, pair.session_id)
    assert (claims.expires_at - claims.issued_at).total_seconds() == kit.settings.access_token_ttl_s == 900
    assert pair.expires_in == 900
    assert pair.refresh_expires_in == kit.settings.refresh_idle_ttl_s


async def test_refresh_rotates_the_token_and_keeps_the_session(kit: AuthKit) -> None:
    r1 = await _signed_in(kit)
    kit.clock.advance(60)
    r2 = await _refresh(kit, r1.refresh_token)
    assert r2.refresh_token != r1.refresh_token
    assert r2.session_id == r1.session_id
    assert (await kit.auth.authenticate(r2.access_token)).session_id == r1.session_id
    r3 = await _refresh(kit, r2.refresh_token)
    assert r3.session_id == r1.session_id


async def test_replaying_a_rotated_token_revokes_the_whole_family(kit: AuthKit) -> None:
    r1 = await _signed_in(kit)
    r2 = await _refresh(kit, r1.refresh_token)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, r1.refresh_token)  # the replay
    with pytest.raises(Unauthenticated):
        await _refresh(kit, r2.refresh_token)  # the family is gone
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(r2.access_token)  # and its access tokens at once
    session = kit.sessions.sessions[r1.session_id]
    assert session.revoked_reason == "refresh_reuse"


async def test_a_replay_long_after_rotation_is_still_detected(kit: AuthKit) -> None:
    r1 = await _signed_in(kit)
    r = r1
    for _ in range(20):
        kit.clock.advance(3600)
        r = await _refresh(kit, r.refresh_token)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, r1.refresh_token)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, r.refresh_token)


async def test_an_unknown_refresh_token_revokes_nothing(kit: AuthKit) -> None:
    r1 = await _signed_in(kit)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, new_secret())
    assert (await _refresh(kit, r1.refresh_token)).session_id == r1.session_id


async def test_ten_concurrent_refreshes_of_one_token_give_exactly_one_success(kit: AuthKit) -> None:
    r1 = await _signed_in(kit)
    results = await asyncio.gather(
        *(_refresh(kit, r1.refresh_token) for _ in range(10)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, TokenPair)]
    assert len(wins) == 1
    assert all(isinstance(r, Unauthenticated) for r in results if not isinstance(r, TokenPair))
    # No grace window (SECURITY decision b): the losers were replays, so the family is revoked.
    with pytest.raises(Unauthenticated):
        await _refresh(kit, wins[0].refresh_token)


async def test_logout_ends_the_session_and_its_access_token_at_once(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    await kit.auth.logout(LogoutCommand(actor=pair.user_id, session_id=pair.session_id))
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(pair.access_token)  # no clock movement: a 0 s window
    with pytest.raises(Unauthenticated):
        await _refresh(kit, pair.refresh_token)


async def test_a_refresh_token_is_not_an_access_token(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(pair.refresh_token)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, pair.access_token)


async def test_each_login_gets_a_new_256_bit_session(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    pairs = []
    for _ in range(60):
        pairs.append(await login(kit, EMAIL))
        kit.clock.advance(60)  # stay inside the per-account hourly bucket
    assert len({p.session_id for p in pairs}) == 60
    assert len({p.refresh_token for p in pairs}) == 60
    assert all(len(p.session_id) >= 43 and len(p.refresh_token) >= 43 for p in pairs)


def test_session_ids_and_refresh_tokens_do_not_repeat_in_10000_draws() -> None:
    assert len({new_secret() for _ in range(10_000)}) == 10_000


async def test_a_refresh_token_is_refused_after_30_days_even_when_used_daily(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    for _ in range(29):
        kit.clock.advance(86_400)
        pair = await _refresh(kit, pair.refresh_token)
    kit.clock.advance(86_400)  # day 30
    with pytest.raises(Unauthenticated):
        await _refresh(kit, pair.refresh_token)


async def test_access_tokens_never_outlive_their_session(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    for _ in range(29):
        kit.clock.advance(86_400)
        pair = await _refresh(kit, pair.refresh_token)
    kit.clock.advance(86_400 - 300)  # 5 minutes before the absolute end
    last = await _refresh(kit, pair.refresh_token)
    assert last.expires_in == 300
    kit.clock.advance(300)
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(last.access_token)


async def test_a_refresh_token_idle_for_7_days_is_refused(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    kit.clock.advance(7 * 86_400 - 1)
    pair = await _refresh(kit, pair.refresh_token)
    kit.clock.advance(7 * 86_400)
    with pytest.raises(Unauthenticated):
        await _refresh(kit, pair.refresh_token)


async def test_an_expired_access_token_is_refused_through_the_clock(kit: AuthKit) -> None:
    pair = await _signed_in(kit)
    kit.clock.advance(900 + 10 + 1)  # past exp by more than any allowed leeway
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(pair.access_token)


async def test_users_list_and_revoke_their_own_sessions_only(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    await register(kit, "bob@example.com")
    phone = await login(kit, EMAIL)
    kit.clock.advance(1)
    laptop = await login(kit, EMAIL)
    bob = await login(kit, "bob@example.com")

    listed = await kit.auth.list_sessions(phone.user_id, current_session_id=phone.session_id)
    assert [(s.id, s.current) for s in listed] == [(phone.session_id, True), (laptop.session_id, False)]
    assert all(s.method == "password" for s in listed)

    with pytest.raises(NotFound):
        await kit.auth.revoke_session(RevokeSessionCommand(actor=bob.user_id, session_id=laptop.session_id))
    await kit.auth.revoke_session(RevokeSessionCommand(actor=phone.user_id, session_id=laptop.session_id))
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(laptop.access_token)
    assert (await kit.auth.authenticate(phone.access_token)).session_id == phone.session_id
    assert [s.id for s in await kit.auth.list_sessions(phone.user_id)] == [phone.session_id]


async def test_changing_the_password_ends_the_other_sessions_and_mails_the_user(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    here = await login(kit, EMAIL)
    there = await login(kit, EMAIL)
    new_password = "a brand new passphrase for ann"
    await kit.auth.change_password(
        ChangePasswordCommand(
            actor=here.user_id,
            session_id=here.session_id,
            current_password=PASSWORD,
            new_password=new_password,
        )
    )
    with pytest.raises(Unauthenticated):
        await _refresh(kit, there.refresh_token)
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(there.access_token)
    assert (await _refresh(kit, here.refresh_token)).session_id == here.session_id
    assert kit.mails_to(EMAIL)[-1].subject == "Your chatcore password was changed"
    with pytest.raises(Unauthenticated):
        await login(kit, EMAIL, PASSWORD)
    assert (await login(kit, EMAIL, new_password)).user_id == here.user_id


async def test_changing_the_password_needs_the_current_one(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    here = await login(kit, EMAIL)
    there = await login(kit, EMAIL)
    with pytest.raises(InvalidInput) as caught:
        await kit.auth.change_password(
            ChangePasswordCommand(
                actor=here.user_id,
                session_id=here.session_id,
                current_password="not the password at all",
                new_password="a brand new passphrase for ann",
            )
        )
    assert caught.value.field == "current_password"
    assert (await _refresh(kit, there.refresh_token)).session_id == there.session_id
    assert (await login(kit, EMAIL)).user_id == here.user_id


async def test_a_new_password_must_pass_the_policy(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    here = await login(kit, EMAIL)
    with pytest.raises(InvalidInput) as caught:
        await kit.auth.change_password(
            ChangePasswordCommand(
                actor=here.user_id,
                session_id=here.session_id,
                current_password=PASSWORD,
                new_password="short",
            )
        )
    assert caught.value.field == "password"
