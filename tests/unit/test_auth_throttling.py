"""Login throttling without lockout (SECURITY R1): a growing delay per account, buckets per IP/account."""

from __future__ import annotations

import contextlib

import pytest

from chatcore.application.auth import AuthSettings, EmailCodeRequest, LoginCommand, VerifyEmailCodeCommand
from chatcore.domain.errors import RateLimited, Unauthenticated
from tests.unit.test_auth_kit import PUBLIC_URL, AuthKit, build_kit, login, mailed_code, register

ANN = "ann@example.com"
WRONG = "not ann's password at all"


@pytest.fixture
async def kit() -> AuthKit:
    kit = build_kit()
    await register(kit, ANN)
    await register(kit, "bob@example.com")
    return kit


async def _wrong(kit: AuthKit, email: str = ANN, ip: str | None = None) -> None:
    with pytest.raises(Unauthenticated):
        await kit.auth.login(LoginCommand(email=email, password=WRONG, ip=ip))


async def _attack(kit: AuthKit, email: str, seconds: int, *, step_s: int = 1) -> int:
    """Guess once per `step_s` from ever-changing IPs; how many guesses reached the hasher."""
    before = kit.hasher.verifies
    for i in range(0, seconds, step_s):
        with contextlib.suppress(Unauthenticated, RateLimited):
            await kit.auth.login(
                LoginCommand(email=email, password=f"guess number {i:06d}", ip=f"10.0.{i % 200}.{i % 250}")
            )
        kit.clock.advance(step_s)
    return kit.hasher.verifies - before


async def test_an_hour_of_guessing_reaches_the_hasher_at_most_100_times(kit: AuthKit) -> None:
    reached = await _attack(kit, ANN, 3600)
    assert 5 <= reached <= kit.settings.login_attempts_per_account_per_hour
    with pytest.raises(RateLimited) as caught:
        await login(kit, ANN)
    assert caught.value.retry_after_s <= kit.settings.login_delay_cap_s
    kit.clock.advance(caught.value.retry_after_s)
    assert (await login(kit, ANN)).user_id  # no permanent lockout: once the delay passes


async def test_the_hourly_cap_holds_even_without_the_delay() -> None:
    kit = build_kit(AuthSettings(public_url=PUBLIC_URL, login_failures_before_delay=10_000))
    await register(kit, ANN)
    for _ in range(3):  # every hour, including the first one with a full bucket
        assert await _attack(kit, ANN, 3600) <= kit.settings.login_attempts_per_account_per_hour


async def test_the_delay_starts_at_the_fifth_failure_and_doubles(kit: AuthKit) -> None:
    for _ in range(4):
        await _wrong(kit)
    await _wrong(kit)  # the 5th failure is still checked ...
    waits = []
    for _ in range(4):  # ... and then each further try waits 1, 2, 4, 8 s
        with pytest.raises(RateLimited) as caught:
            await _wrong(kit)
        waits.append(caught.value.retry_after_s)
        kit.clock.advance(caught.value.retry_after_s)
        await _wrong(kit)
    assert waits == [1, 2, 4, 8]


async def test_the_right_password_during_the_delay_is_refused_too(kit: AuthKit) -> None:
    for _ in range(5):
        await _wrong(kit)
    before = kit.hasher.verifies
    with pytest.raises(RateLimited) as caught:
        await login(kit, ANN)
    assert kit.hasher.verifies == before  # refused before any password check: no bypass
    kit.clock.advance(caught.value.retry_after_s)
    assert (await login(kit, ANN)).user_id


async def test_the_delay_is_capped_at_15_minutes(kit: AuthKit) -> None:
    waits = []
    for _ in range(40):
        try:
            await _wrong(kit)
        except RateLimited as limited:
            waits.append(limited.retry_after_s)
            kit.clock.advance(limited.retry_after_s)
    assert max(waits) == 900
    record = await kit.failures.get(ANN, now=kit.clock.now(), forget_after_s=3600)
    assert record is not None and kit.settings.login_delay_s(record.count) == 900


async def test_another_account_is_unaffected(kit: AuthKit) -> None:
    for _ in range(8):
        with contextlib.suppress(RateLimited):
            await _wrong(kit)
    assert (await login(kit, "bob@example.com")).user_id
    with pytest.raises(RateLimited):
        await login(kit, ANN)


async def test_a_success_clears_the_failures(kit: AuthKit) -> None:
    for _ in range(4):
        await _wrong(kit)
    await login(kit, ANN)
    for _ in range(4):
        await _wrong(kit)  # four more, and still no delay
    assert (await login(kit, ANN)).user_id


async def test_failures_are_forgotten_after_an_hour_without_one(kit: AuthKit) -> None:
    for _ in range(5):
        await _wrong(kit)
    kit.clock.advance(3600)
    for _ in range(4):
        await _wrong(kit)


async def test_the_31st_login_from_one_ip_in_a_minute_is_refused(kit: AuthKit) -> None:
    for i in range(30):
        await _wrong(kit, f"user{i}@example.com", ip="203.0.113.9")
    with pytest.raises(RateLimited):
        await kit.auth.login(LoginCommand(email=ANN, password=WRONG, ip="203.0.113.9"))
    await _wrong(kit, "user99@example.com", ip="203.0.113.10")
    kit.clock.advance(60)
    await _wrong(kit, "user99@example.com", ip="203.0.113.9")


async def test_the_code_login_stays_open_while_the_password_login_waits(kit: AuthKit) -> None:
    for _ in range(6):
        with contextlib.suppress(RateLimited):
            await _wrong(kit)
    sent = len(kit.mailer.sent)
    requested = await kit.auth.request_email_code(EmailCodeRequest(email=ANN))
    pair = await kit.auth.verify_email_code(
        VerifyEmailCodeCommand(attempt_id=requested.attempt_id, code=mailed_code(kit.mailer.sent[sent]))
    )
    assert pair.user_id
    assert (await login(kit, ANN)).user_id  # the code login also cleared the failures
