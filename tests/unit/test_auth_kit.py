"""The auth core on memory adapters, shared by the auth tests; plus the AuthSettings rules.

Everything is real: argon2 (cheapest profile), pyjwt, the memory stores, the memory limiter
and mailer. `CountingHasher` wraps the real hasher only to count calls.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import pytest

from adapters.memory.kit import MemoryCore, memory_core
from adapters.memory.mail import MemoryMailer
from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.memory.security import MemoryFailureCounter, MemoryOneTimeTokenStore, MemorySessionStore
from adapters.memory.system import FakeClock
from adapters.security.argon2_hasher import Argon2PasswordHasher
from adapters.security.jwt_tokens import JwtTokenIssuer
from chatcore.application.auth import (
    AuthService,
    AuthSettings,
    LoginCommand,
    RegisterCommand,
    TokenPair,
    VerifyEmailCommand,
)
from chatcore.ports.mail import Mail
from chatcore.ports.security import EmailPurpose

PUBLIC_URL = "https://chat.example.test"
ISSUER = "https://chat.example.test"
PASSWORD = "correct horse battery staple"


class CountingHasher:
    """The real argon2 hasher, counting how often each operation runs."""

    def __init__(self, inner: Argon2PasswordHasher) -> None:
        self.inner = inner
        self.hashes = 0
        self.verifies = 0

    async def hash(self, password: str) -> str:
        self.hashes += 1
        return await self.inner.hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifies += 1
        return await self.inner.verify(password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.inner.needs_rehash(password_hash)


@dataclass
class AuthKit:
    core: MemoryCore
    auth: AuthService
    clock: FakeClock
    mailer: MemoryMailer
    hasher: CountingHasher
    tokens: JwtTokenIssuer
    one_time: MemoryOneTimeTokenStore
    sessions: MemorySessionStore
    failures: MemoryFailureCounter
    limiter: MemoryRateLimiter
    settings: AuthSettings

    def with_hasher(self, inner: Argon2PasswordHasher) -> AuthKit:
        """The same stores and clock behind another hasher (a deploy with new argon2 parameters)."""
        return build_kit(self.settings, inner, _from=self)

    def mails_to(self, email: str) -> list[Mail]:
        return [m for m in self.mailer.sent if m.to == email]


def build_kit(
    settings: AuthSettings | None = None,
    hasher: Argon2PasswordHasher | None = None,
    *,
    mailer: MemoryMailer | None = None,
    _from: AuthKit | None = None,
) -> AuthKit:
    settings = settings or AuthSettings(public_url=PUBLIC_URL)
    counting = CountingHasher(hasher or Argon2PasswordHasher.cheapest())
    if _from is None:
        clock = FakeClock()
        core = memory_core(clock=clock)
        mailer, limiter = mailer or MemoryMailer(), MemoryRateLimiter(clock)
        one_time, sessions, failures = MemoryOneTimeTokenStore(), MemorySessionStore(), MemoryFailureCounter()
        tokens = JwtTokenIssuer(keys={"k1": secrets.token_bytes(32)}, active_kid="k1", issuer=ISSUER)
        code_key = secrets.token_bytes(32)
    else:
        clock, core, mailer, limiter = _from.clock, _from.core, _from.mailer, _from.limiter
        one_time, sessions, failures = _from.one_time, _from.sessions, _from.failures
        tokens, code_key = _from.tokens, _from.auth.ports.code_key
    auth = AuthService(
        core.service.deps,
        hasher=counting,
        tokens=tokens,
        one_time=one_time,
        sessions=sessions,
        failures=failures,
        limiter=limiter,
        mailer=mailer,
        code_key=code_key,
        settings=settings,
    )
    return AuthKit(
        core, auth, clock, mailer, counting, tokens, one_time, sessions, failures, limiter, settings
    )


def mailed_code(mail: Mail) -> str:
    found = re.search(r"Your code: (\d{6})\n", mail.text)
    assert found, mail.text
    return found.group(1)


def mailed_link(mail: Mail) -> str:
    found = re.search(r"^(https?://\S+#token=[A-Za-z0-9_-]+)$", mail.text, re.MULTILINE)
    assert found, mail.text
    return found.group(1)


def mailed_token(mail: Mail) -> str:
    return mailed_link(mail).rsplit("#token=", 1)[1]


async def register(kit: AuthKit, email: str, password: str = PASSWORD, *, verify: bool = True) -> str:
    """Register an account (confirming its address by the mailed code); its user id."""
    sent_before = len(kit.mailer.sent)
    registration = await kit.auth.register(
        RegisterCommand(email=email, password=password, display_name="Ann")
    )
    if verify:
        mail = kit.mailer.sent[sent_before]
        verified = await kit.auth.verify_email(
            VerifyEmailCommand(attempt_id=registration.attempt_id, code=mailed_code(mail))
        )
        return verified.user_id
    user = next(u for u in kit.core.store.users.values() if u.email == email.lower())
    return user.id


async def login(kit: AuthKit, email: str, password: str = PASSWORD, ip: str | None = None) -> TokenPair:
    return await kit.auth.login(LoginCommand(email=email, password=password, ip=ip))


@pytest.fixture
def kit() -> AuthKit:
    return build_kit()


# -- the settings refuse unsafe figures -------------------------------------------------------


def test_default_settings_hold_the_security_figures() -> None:
    s = AuthSettings()
    assert s.access_token_ttl_s == 900
    assert (s.refresh_absolute_ttl_s, s.refresh_idle_ttl_s) == (30 * 86_400, 7 * 86_400)
    assert (s.email_code_ttl_s, s.max_code_failures) == (600, 5)
    assert (s.code_requests_per_address_per_hour, s.code_requests_per_ip_per_hour) == (5, 20)
    assert (s.login_attempts_per_ip_per_minute, s.login_attempts_per_account_per_hour) == (30, 100)
    assert (s.login_failures_before_delay, s.login_delay_base_s, s.login_delay_cap_s) == (5, 1, 900)
    assert (s.min_password_chars, s.max_password_chars) == (12, 128)


@pytest.mark.parametrize(
    "bad",
    [
        {"email_code_ttl_s": 601},
        {"access_token_ttl_s": 3601},
        {"access_token_ttl_s": 0},
        {"refresh_idle_ttl_s": 31 * 86_400},
        {"max_code_failures": 6},  # 6 x 5 requests per hour > 25 guesses
        {"min_password_chars": 7},
        {"max_password_chars": 63},
        {"public_url": "ftp://chat.example.test"},
        {"public_url": "https://chat.example.test/?next=evil"},
        {"login_link_path": "auth/login"},
    ],
)
def test_settings_refuse_unsafe_figures(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each figure has its own message
        AuthSettings(**bad)  # type: ignore[arg-type]


def test_settings_accept_the_largest_safe_figures() -> None:
    AuthSettings(email_code_ttl_s=600, access_token_ttl_s=3600, max_code_failures=5)


def test_links_come_from_the_public_url_only() -> None:
    s = AuthSettings(public_url="https://chat.example.test/app/")
    assert s.link(EmailPurpose.LOGIN, "tok") == "https://chat.example.test/app/auth/login#token=tok"
    assert s.link(EmailPurpose.RESET_PASSWORD) == "https://chat.example.test/app/auth/reset-password"


def test_login_delay_doubles_from_the_fifth_failure_up_to_the_cap() -> None:
    s = AuthSettings()
    assert [s.login_delay_s(n) for n in range(1, 9)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert s.login_delay_s(14) == 512
    assert s.login_delay_s(15) == s.login_delay_s(1000) == 900


def test_the_code_key_must_be_long_enough() -> None:
    kit = build_kit()
    with pytest.raises(ValueError, match="code_key"):
        AuthService(
            kit.core.service.deps,
            hasher=kit.hasher,
            tokens=kit.tokens,
            one_time=kit.one_time,
            sessions=kit.sessions,
            failures=kit.failures,
            limiter=kit.limiter,
            mailer=kit.mailer,
            code_key=b"x" * 31,
        )
