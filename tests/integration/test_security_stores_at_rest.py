"""E4: the auth stores keep hashes only. After real sign-ups, code requests, logins and a refresh,
a raw dump of every store (memory state, SQLite rows and file bytes, Mongo documents) holds no
mailed code, link token, refresh token, access token or password, nor a plain SHA-256 of a code.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.memory.kit import memory_core
from adapters.memory.mail import MemoryMailer
from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.security.argon2_hasher import Argon2PasswordHasher
from adapters.security.jwt_tokens import JwtTokenIssuer
from chatcore.application.auth import (
    AuthService,
    AuthSettings,
    EmailCodeRequest,
    LoginCommand,
    PasswordResetRequest,
    RefreshCommand,
    RegisterCommand,
    VerifyEmailCodeCommand,
    VerifyEmailCommand,
    sha256_hex,
)
from chatcore.domain.errors import Unauthenticated
from chatcore.testing.doubles import FakeClock
from tests.contract.test_security_stores import SECURITY_ADAPTERS, SecurityStores
from tests.unit.test_auth_kit import mailed_code, mailed_token

PASSWORD = "correct horse battery staple"
# Ahead of real time, so that MongoDB's TTL monitor never deletes what the test dumps.
START = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture(params=sorted(SECURITY_ADAPTERS))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[SecurityStores]:
    async with SECURITY_ADAPTERS[request.param](request) as under_test:
        yield under_test


async def test_stores_hold_no_raw_secret_after_codes_logins_and_a_refresh(stores: SecurityStores) -> None:
    clock = FakeClock(START)
    core, mailer = memory_core(clock=clock), MemoryMailer()
    auth = AuthService(
        core.service.deps,
        hasher=Argon2PasswordHasher.cheapest(),
        tokens=JwtTokenIssuer(keys={"k1": secrets.token_bytes(32)}, active_kid="k1", issuer="https://t.test"),
        one_time=stores.one_time,
        sessions=stores.sessions,
        failures=stores.failures,
        limiter=MemoryRateLimiter(clock),
        mailer=mailer,
        code_key=secrets.token_bytes(32),
        settings=AuthSettings(public_url="https://chat.example.test"),
    )
    email = "ann@example.com"
    registration = await auth.register(RegisterCommand(email=email, password=PASSWORD, display_name="Ann"))
    verify_code = mailed_code(mailer.sent[-1])
    await auth.verify_email(VerifyEmailCommand(attempt_id=registration.attempt_id, code=verify_code))
    login_request = await auth.request_email_code(EmailCodeRequest(email=email))
    login_mail = mailer.sent[-1]
    await auth.request_password_reset(PasswordResetRequest(email=email))
    reset_mail = mailer.sent[-1]  # left live in the store
    with pytest.raises(Unauthenticated):
        await auth.login(LoginCommand(email=email, password="wrong " + PASSWORD))
    first = await auth.login(LoginCommand(email=email, password=PASSWORD))
    clock.advance(60)
    second = await auth.refresh(RefreshCommand(refresh_token=first.refresh_token))  # first's is superseded
    by_code = await auth.verify_email_code(
        VerifyEmailCodeCommand(attempt_id=login_request.attempt_id, code=mailed_code(login_mail))
    )

    dump = await stores.dump()

    codes = [verify_code, mailed_code(login_mail), mailed_code(reset_mail)]
    links = [mailed_token(m) for m in mailer.sent if "#token=" in m.text]
    refresh = [first.refresh_token, second.refresh_token, by_code.refresh_token]
    access = [first.access_token, second.access_token, by_code.access_token]
    assert len(links) == 3
    # The dump is not empty: the hashes of what was handed out are all there.
    for secret in (*links, *refresh):
        assert sha256_hex(secret) in dump
    for secret in (*links, *refresh, *access, PASSWORD):
        assert secret not in dump
    for code in codes:
        # Digit-bounded: a code's digits may turn up inside a longer number, such as a timestamp.
        assert re.search(rf"(?<![0-9]){code}(?![0-9])", dump) is None, code
        assert sha256_hex(code) not in dump
