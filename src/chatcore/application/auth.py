"""Authentication: registration, password and email-code login, sessions with rotating refresh tokens.

Design notes (the why; SECURITY.md rows P1-P4, E1-E8, T1-T10, R1 give the figures):

- No user enumeration. Register, Login, RequestEmailCode and RequestPasswordReset answer the
  same for a known and an unknown address: the same result type with a fresh random attempt id,
  or the same generic `Unauthenticated`. Login verifies exactly one password either way (a dummy
  hash stands in for a missing account). Register hashes the password before it looks the address
  up; a taken address gets a mail telling its owner, instead of a verification mail. Mail failures
  are logged, never raised, so that they cannot tell the two cases apart either.
- Refresh tokens are opaque 256-bit strings; only their SHA-256 is stored. Each use rotates
  the token. The session store remembers superseded hashes until the family's absolute end, so a
  replay of any rotated token, or the loser of a race between two uses of the same token, revokes
  the whole family. There is no grace window: a client that lost a refresh response signs in again.
- Mailed codes are 6 digits (HMAC-SHA-256 with the server key, bound to their attempt id) and
  links carry a 256-bit token (SHA-256). The link puts the token in the URL fragment, which
  browsers never send to a server, so it stays out of access logs and Referer headers; the client
  page posts it back.
- Throttles go through the RateLimiter port (token buckets per IP and per address) and the
  FailureCounter port (a growing delay per account from the 5th consecutive failure). Every key is
  the normalised address, so an address without an account is throttled the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn
from urllib.parse import urlsplit

import msgspec

from chatcore.application import mail_templates
from chatcore.application.common import Deps, UseCase
from chatcore.domain.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from chatcore.domain.events import SessionsRevoked, UserRegistered
from chatcore.domain.passwords import (
    LOWEST_ALLOWED_MINIMUM,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    check_password,
)
from chatcore.domain.text import clean_name
from chatcore.domain.users import PasswordCredential, User, normalise_email
from chatcore.ports.mail import Mail, Mailer
from chatcore.ports.rate_limit import RateLimiter, RateRule
from chatcore.ports.security import (
    AccessClaims,
    AuthSession,
    EmailPurpose,
    FailureCounter,
    OneTimeToken,
    OneTimeTokenStore,
    PasswordHasher,
    SessionStore,
    TokenIssuer,
)
from chatcore.ports.unit_of_work import UnitOfWork

log = logging.getLogger("chatcore.auth")

HOUR_S = 3600
DAY_S = 86_400
MAX_ACCESS_TOKEN_TTL_S = 3600
MAX_EMAIL_CODE_TTL_S = 600
# ASVS V6.6.3: an attacker's odds against one address stay <= 25 in 10^6 per hour.
MAX_CODE_GUESSES_PER_ADDRESS_HOUR = 25
MIN_SECRET_KEY_BYTES = 32
MAX_USER_AGENT_CHARS = 256

_CODE = re.compile(r"\d{6}")


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Every lifetime and limit of authentication; the entrypoint settings embed one of these."""

    public_url: str = "http://localhost:8000"  # links in mails are built from this only
    app_name: str = "chatcore"
    login_link_path: str = "/auth/login"
    verify_link_path: str = "/auth/verify-email"
    reset_link_path: str = "/auth/reset-password"
    access_token_ttl_s: int = 900
    refresh_absolute_ttl_s: int = 30 * DAY_S
    refresh_idle_ttl_s: int = 7 * DAY_S
    email_code_ttl_s: int = 600
    max_code_failures: int = 5
    code_requests_per_address_per_hour: int = 5
    code_requests_per_ip_per_hour: int = 20
    login_attempts_per_ip_per_minute: int = 30
    login_attempts_per_account_per_hour: int = 100
    login_failures_before_delay: int = 5  # the 5th consecutive failure starts the delay
    login_delay_base_s: int = 1  # doubled with each further failure
    login_delay_cap_s: int = 900
    login_failures_forgotten_after_s: int = HOUR_S
    min_password_chars: int = MIN_PASSWORD_CHARS
    max_password_chars: int = MAX_PASSWORD_CHARS

    def __post_init__(self) -> None:
        url = urlsplit(self.public_url)
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise ValueError("public_url must be an http(s) URL without query or fragment")
        for path in (self.login_link_path, self.verify_link_path, self.reset_link_path):
            if not path.startswith("/") or "#" in path or "?" in path:
                raise ValueError("link paths must start with '/' and hold no query or fragment")
        if not 1 <= self.access_token_ttl_s <= MAX_ACCESS_TOKEN_TTL_S:
            raise ValueError(f"access_token_ttl_s must be between 1 and {MAX_ACCESS_TOKEN_TTL_S}")
        if not 1 <= self.email_code_ttl_s <= MAX_EMAIL_CODE_TTL_S:
            raise ValueError(f"email_code_ttl_s must be between 1 and {MAX_EMAIL_CODE_TTL_S}")
        if not 1 <= self.refresh_idle_ttl_s <= self.refresh_absolute_ttl_s:
            raise ValueError("refresh_idle_ttl_s must be between 1 and refresh_absolute_ttl_s")
        if self.access_token_ttl_s > self.refresh_idle_ttl_s:
            raise ValueError("access_token_ttl_s must not exceed refresh_idle_ttl_s")
        positive = (
            self.max_code_failures,
            self.code_requests_per_address_per_hour,
            self.code_requests_per_ip_per_hour,
            self.login_attempts_per_ip_per_minute,
            self.login_attempts_per_account_per_hour,
            self.login_failures_before_delay,
            self.login_delay_base_s,
            self.login_delay_cap_s,
            self.login_failures_forgotten_after_s,
        )
        if min(positive) < 1:
            raise ValueError("every limit must be at least 1")
        guesses = self.max_code_failures * self.code_requests_per_address_per_hour
        if guesses > MAX_CODE_GUESSES_PER_ADDRESS_HOUR:
            raise ValueError(
                "max_code_failures x code_requests_per_address_per_hour must be at most "
                f"{MAX_CODE_GUESSES_PER_ADDRESS_HOUR}"
            )
        if not LOWEST_ALLOWED_MINIMUM <= self.min_password_chars <= self.max_password_chars:
            raise ValueError(f"min_password_chars must be between {LOWEST_ALLOWED_MINIMUM} and the maximum")
        if self.max_password_chars < 64:
            raise ValueError("max_password_chars must be at least 64 (ASVS V6.2.9)")

    def link(self, purpose: EmailPurpose, token: str | None = None) -> str:
        path = {
            EmailPurpose.LOGIN: self.login_link_path,
            EmailPurpose.VERIFY_EMAIL: self.verify_link_path,
            EmailPurpose.RESET_PASSWORD: self.reset_link_path,
        }[purpose]
        base = self.public_url.rstrip("/") + path
        return base if token is None else f"{base}#token={token}"

    # The token buckets. Keys: the client IP, or the normalised address. A bucket of N refilled
    # at N per hour refuses the (N+1)th request of a burst and allows N per hour in the long run
    # (a single sliding hour may see up to 2N - 1 after a full bucket).
    def mail_ip_rule(self) -> RateRule:
        n = self.code_requests_per_ip_per_hour
        return RateRule(name="auth.mail.ip", burst=n, per_second=n / HOUR_S)

    def mail_address_rule(self) -> RateRule:
        n = self.code_requests_per_address_per_hour
        return RateRule(name="auth.mail.address", burst=n, per_second=n / HOUR_S)

    def login_ip_rule(self) -> RateRule:
        n = self.login_attempts_per_ip_per_minute
        return RateRule(name="auth.login.ip", burst=n, per_second=n / 60)

    def login_account_rule(self) -> RateRule:
        # A hard cap in every sliding hour: a bucket lets through its burst plus an hour of
        # refill, so each gets half of the figure.
        n = self.login_attempts_per_account_per_hour
        burst = max(1, n // 2)
        return RateRule(name="auth.login.account", burst=burst, per_second=max(1, n - burst) / HOUR_S)

    def login_delay_s(self, failures: int) -> int:
        """The wait after the last of `failures` consecutive failures before the next try."""
        if failures < self.login_failures_before_delay:
            return 0
        doublings = min(failures - self.login_failures_before_delay, 32)
        return int(min(self.login_delay_base_s * 2**doublings, self.login_delay_cap_s))


# -- commands and results ---------------------------------------------------------------------


class RegisterCommand(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    password: str
    display_name: str
    ip: str | None = None


class Registration(msgspec.Struct, frozen=True, kw_only=True):
    """The same for a new and a taken address: where to send the mailed verification code."""

    attempt_id: str
    expires_in: int


class LoginCommand(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    password: str
    ip: str | None = None
    user_agent: str | None = None


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int  # seconds of life of the access token
    refresh_expires_in: int  # seconds until the refresh token lapses if unused
    session_id: str
    user_id: str


class RefreshCommand(msgspec.Struct, frozen=True, kw_only=True):
    refresh_token: str


class LogoutCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    session_id: str


class RevokeSessionCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    session_id: str


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    method: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool


class EmailCodeRequest(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    purpose: EmailPurpose = EmailPurpose.LOGIN
    ip: str | None = None


class PasswordResetRequest(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    ip: str | None = None


class CodeRequested(msgspec.Struct, frozen=True, kw_only=True):
    """The same for a known and an unknown address; `attempt_id` binds the code to this request."""

    attempt_id: str
    expires_in: int


class VerifyEmailCodeCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Sign in with a mailed login code."""

    attempt_id: str
    code: str
    ip: str | None = None
    user_agent: str | None = None


class VerifyEmailLinkCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Sign in with the token of a mailed login link."""

    token: str
    ip: str | None = None
    user_agent: str | None = None


class VerifyEmailCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Confirm an address with a mailed verification code (attempt_id + code) or link token."""

    attempt_id: str | None = None
    code: str | None = None
    token: str | None = None
    ip: str | None = None


class EmailVerified(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    email: str


class ResetPasswordCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Choose a new password with a mailed reset code (attempt_id + code) or link token."""

    new_password: str
    attempt_id: str | None = None
    code: str | None = None
    token: str | None = None
    ip: str | None = None


class ChangePasswordCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    session_id: str  # the caller's session: the only one kept
    current_password: str
    new_password: str
    ip: str | None = None


# -- secrets ----------------------------------------------------------------------------------


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe (43 characters): refresh tokens, link tokens, session ids."""
    return secrets.token_urlsafe(32)


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def new_attempt_id() -> str:
    return secrets.token_urlsafe(16)


def _clip_user_agent(user_agent: str | None) -> str | None:
    if user_agent is None:
        return None
    return "".join(ch for ch in user_agent if ch.isprintable())[:MAX_USER_AGENT_CHARS]


class DummyHash:
    """A hash of a random password, made by the live hasher, for logins of unknown accounts."""

    def __init__(self) -> None:
        self._value: str | None = None

    async def get(self, hasher: PasswordHasher) -> str:
        if self._value is None:
            self._value = await hasher.hash(secrets.token_urlsafe(24))
        return self._value


@dataclass(frozen=True, slots=True)
class AuthPorts:
    """The ports and settings of authentication, built once by the composition root."""

    hasher: PasswordHasher
    tokens: TokenIssuer
    one_time: OneTimeTokenStore
    sessions: SessionStore
    failures: FailureCounter
    limiter: RateLimiter
    mailer: Mailer
    settings: AuthSettings
    code_key: bytes  # the HMAC key for mailed codes
    dummy: DummyHash = field(default_factory=DummyHash)

    def __post_init__(self) -> None:
        if len(self.code_key) < MIN_SECRET_KEY_BYTES:
            raise ValueError(f"code_key must hold at least {MIN_SECRET_KEY_BYTES} random bytes")


# -- the shared steps -------------------------------------------------------------------------


class AuthUseCase(UseCase):
    def __init__(self, deps: Deps, auth: AuthPorts) -> None:
        super().__init__(deps)
        self.auth = auth
        self.settings = auth.settings

    async def announce_revoked(
        self, user_id: str, reason: str, *, session_id: str | None = None, keep: str | None = None
    ) -> None:
        """Record the revocation in the user's stream, so their open connections close at once."""

        async def work(uow: UnitOfWork) -> None:
            uow.record(
                SessionsRevoked(user_id=user_id, session_id=session_id, kept_session_id=keep, reason=reason)
            )

        await self.transaction(work)

    def now(self) -> datetime:
        return self.deps.clock.now()

    async def throttle(self, key: str, rule: RateRule) -> None:
        decision = await self.auth.limiter.hit(key, rule)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s)

    async def throttle_mail(self, email: str, ip: str | None) -> None:
        if ip is not None:
            await self.throttle(ip, self.settings.mail_ip_rule())
        await self.throttle(email, self.settings.mail_address_rule())

    async def throttle_login(self, email: str, ip: str | None) -> None:
        """Before a password check: the per-IP bucket, the growing delay, the per-account bucket."""
        s, now = self.settings, self.now()
        if ip is not None:
            await self.throttle(ip, s.login_ip_rule())
        record = await self.auth.failures.get(
            email, now=now, forget_after_s=s.login_failures_forgotten_after_s
        )
        if record is not None:
            ready_at = record.last_failure_at + timedelta(seconds=s.login_delay_s(record.count))
            if now < ready_at:
                raise RateLimited(math.ceil((ready_at - now).total_seconds()))
        await self.throttle(email, s.login_account_rule())

    async def login_failed(self, email: str) -> None:
        await self.auth.failures.add_failure(
            email, now=self.now(), forget_after_s=self.settings.login_failures_forgotten_after_s
        )

    async def send(self, mail: Mail) -> None:
        try:
            await self.auth.mailer.send(mail)
        except Exception:
            # Raising would tell a known address from an unknown one; the mailer retries or queues.
            log.exception("auth mail could not be sent")

    def code_hash(self, attempt_id: str, code: str) -> str:
        message = f"{attempt_id}:{code}".encode()
        return hmac.new(self.auth.code_key, message, hashlib.sha256).hexdigest()

    async def mail_token(self, user: User, purpose: EmailPurpose) -> str:
        """Store a new code-and-link token for the user (voiding older ones) and mail it."""
        s, now = self.settings, self.now()
        attempt_id, code, link_token = new_attempt_id(), new_code(), new_secret()
        await self.auth.one_time.put(
            OneTimeToken(
                attempt_id=attempt_id,
                purpose=purpose,
                email=user.email,
                user_id=user.id,
                code_hash=self.code_hash(attempt_id, code),
                link_hash=sha256_hex(link_token),
                created_at=now,
                expires_at=now + timedelta(seconds=s.email_code_ttl_s),
            )
        )
        template = {
            EmailPurpose.LOGIN: mail_templates.login_code_mail,
            EmailPurpose.VERIFY_EMAIL: mail_templates.verification_mail,
            EmailPurpose.RESET_PASSWORD: mail_templates.reset_mail,
        }[purpose]
        link = s.link(purpose, link_token)
        mail = template(to=user.email, app_name=s.app_name, code=code, link=link, ttl_s=s.email_code_ttl_s)
        # Past the code's lifetime the mail is worthless: a queue drops it rather than send it late.
        await self.send(msgspec.structs.replace(mail, expires_at=now + timedelta(seconds=s.email_code_ttl_s)))
        return attempt_id

    async def request_token(self, raw_email: str, purpose: EmailPurpose, ip: str | None) -> CodeRequested:
        email = normalise_email(raw_email)
        await self.throttle_mail(email, ip)

        async def work(uow: UnitOfWork) -> User | None:
            return await uow.users.get_by_email(email)

        user = await self.read(work)
        ttl = self.settings.email_code_ttl_s
        if user is None:
            return CodeRequested(attempt_id=new_attempt_id(), expires_in=ttl)
        return CodeRequested(attempt_id=await self.mail_token(user, purpose), expires_in=ttl)

    async def consume(
        self,
        purpose: EmailPurpose,
        *,
        attempt_id: str | None = None,
        code: str | None = None,
        token: str | None = None,
    ) -> OneTimeToken:
        """Use up a mailed code (with its attempt id) or link token; one generic error for any miss."""
        s, now = self.settings, self.now()
        if token is not None and attempt_id is None and code is None:
            found = await self.auth.one_time.consume_link(
                sha256_hex(token), purpose, now=now, max_failures=s.max_code_failures
            )
        elif token is None and attempt_id is not None and code is not None:
            if not _CODE.fullmatch(code):
                raise InvalidInput("code", "the code is 6 digits")
            found = await self.auth.one_time.consume_code(
                attempt_id,
                self.code_hash(attempt_id, code),
                purpose,
                now=now,
                max_failures=s.max_code_failures,
            )
        else:
            raise InvalidInput("token", "give either attempt_id and code, or token")
        if found is None:
            raise Unauthenticated("the code or link is wrong, used or expired")
        return found

    async def token_owner(self, uow: UnitOfWork, token: OneTimeToken) -> User:
        """The user a consumed token was mailed to, if the account still has that address."""
        user = await uow.users.get(token.user_id)
        if user is None or user.email != token.email:
            raise Unauthenticated("the code or link is wrong, used or expired")
        return user

    async def start_session(
        self, user_id: str, method: str, ip: str | None, user_agent: str | None
    ) -> TokenPair:
        """A new refresh family with a new session id: every authentication gets its own (ASVS V7.2.4)."""
        s, now = self.settings, self.now()
        refresh = new_secret()
        session = AuthSession(
            id=new_secret(),
            user_id=user_id,
            refresh_hash=sha256_hex(refresh),
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=s.refresh_absolute_ttl_s),
            method=method,
            ip=ip,
            user_agent=_clip_user_agent(user_agent),
        )
        await self.auth.sessions.add(session)
        log.info("auth.session_started", extra={"user_id": user_id, "ip": ip, "method": method})
        return self.token_pair(session, refresh, now)

    def token_pair(self, session: AuthSession, refresh: str, now: datetime) -> TokenPair:
        s = self.settings
        # An access token never outlives its session.
        left_s = int((session.expires_at - now).total_seconds())
        ttl = max(1, min(s.access_token_ttl_s, left_s))
        access, claims = self.auth.tokens.issue(
            user_id=session.user_id, session_id=session.id, now=now, ttl_s=ttl
        )
        refresh_until = min(
            session.expires_at, session.last_used_at + timedelta(seconds=s.refresh_idle_ttl_s)
        )
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=int((claims.expires_at - now).total_seconds()),
            refresh_expires_in=max(0, int((refresh_until - now).total_seconds())),
            session_id=session.id,
            user_id=session.user_id,
        )

    def session_live(self, session: AuthSession, now: datetime) -> bool:
        idle_until = session.last_used_at + timedelta(seconds=self.settings.refresh_idle_ttl_s)
        return not session.revoked and now < session.expires_at and now < idle_until

    async def set_password(self, user_id: str, password_hash: str) -> None:
        now = self.now()

        async def work(uow: UnitOfWork) -> None:
            await uow.credentials.save(PasswordCredential(user_id, password_hash, now))

        await self.transaction(work)

    async def mail_password_changed(self, user: User) -> None:
        s = self.settings
        reset_link = s.link(EmailPurpose.RESET_PASSWORD)
        await self.send(
            mail_templates.password_changed_mail(
                to=user.email, app_name=s.app_name, when=self.now(), reset_link=reset_link
            )
        )


# -- registration and password login ----------------------------------------------------------


class Register(AuthUseCase):
    """Create an account with a password and mail a verification code; a taken address is not told."""

    async def __call__(self, cmd: RegisterCommand) -> Registration:
        s = self.settings
        email = normalise_email(cmd.email)
        name = clean_name("display_name", cmd.display_name, self.deps.limits.max_display_name_chars)
        check_password(
            cmd.password,
            min_chars=s.min_password_chars,
            max_chars=s.max_password_chars,
            context=(email, name),
        )
        await self.throttle_mail(email, cmd.ip)
        # Hashed before the address is looked up, so a taken address costs the same time.
        password_hash = await self.auth.hasher.hash(cmd.password)
        now = self.now()

        async def work(uow: UnitOfWork) -> User | None:
            if await uow.users.get_by_email(email) is not None:
                return None
            user = User(self.deps.ids.new_id(), email, name, now)
            await uow.users.add(user)
            await uow.credentials.save(PasswordCredential(user.id, password_hash, now))
            uow.record(UserRegistered(user_id=user.id, email=email))
            return user

        user = await self.transaction(work)
        if user is None:
            await self.send(
                mail_templates.account_exists_mail(
                    to=email, app_name=s.app_name, sign_in_link=s.link(EmailPurpose.LOGIN)
                )
            )
            return Registration(attempt_id=new_attempt_id(), expires_in=s.email_code_ttl_s)
        log.info("auth.registered", extra={"user_id": user.id, "ip": cmd.ip})
        attempt_id = await self.mail_token(user, EmailPurpose.VERIFY_EMAIL)
        return Registration(attempt_id=attempt_id, expires_in=s.email_code_ttl_s)


class Login(AuthUseCase):
    """Password login: exactly one password verification whether or not the account exists."""

    async def __call__(self, cmd: LoginCommand) -> TokenPair:
        email = normalise_email(cmd.email)
        await self.throttle_login(email, cmd.ip)
        hasher = self.auth.hasher
        dummy = await self.auth.dummy.get(hasher)

        async def work(uow: UnitOfWork) -> tuple[User | None, PasswordCredential | None]:
            user = await uow.users.get_by_email(email)
            return user, (await uow.credentials.get(user.id) if user is not None else None)

        user, credential = await self.read(work)
        stored = credential.password_hash if credential is not None else dummy
        matched = await hasher.verify(stored, cmd.password)
        if user is None or credential is None or not matched:
            await self.login_failed(email)
            log.info("auth.login_failed", extra={"user_id": user.id if user else None, "ip": cmd.ip})
            raise Unauthenticated()
        await self.auth.failures.clear(email)
        if hasher.needs_rehash(credential.password_hash):
            await self._rehash(credential, cmd.password)
        return await self.start_session(user.id, "password", cmd.ip, cmd.user_agent)

    async def _rehash(self, old: PasswordCredential, password: str) -> None:
        new_hash = await self.auth.hasher.hash(password)
        now = self.now()

        async def work(uow: UnitOfWork) -> None:
            current = await uow.credentials.get(old.user_id)
            # A password changed meanwhile wins over this upgrade.
            if current is not None and current.password_hash == old.password_hash:
                await uow.credentials.save(PasswordCredential(old.user_id, new_hash, now))

        await self.transaction(work)


# -- sessions ---------------------------------------------------------------------------------


class Refresh(AuthUseCase):
    """Rotate a refresh token. A superseded token, or a lost race, revokes the whole family."""

    async def __call__(self, cmd: RefreshCommand) -> TokenPair:
        now, sessions = self.now(), self.auth.sessions
        old_hash = sha256_hex(cmd.refresh_token)
        match = await sessions.find_by_refresh(old_hash)
        if match is None or match.session.revoked:
            raise Unauthenticated()
        session = match.session
        if not match.current:
            await self._reuse_detected(session, now)
        if not self.session_live(session, now):
            await sessions.revoke(session.id, now=now, reason="expired")
            raise Unauthenticated()

        async def work(uow: UnitOfWork) -> User | None:
            return await uow.users.get(session.user_id)

        if await self.read(work) is None:
            await sessions.revoke(session.id, now=now, reason="user_gone")
            raise Unauthenticated()
        refresh = new_secret()
        new_hash = sha256_hex(refresh)
        if not await sessions.rotate(session.id, old_hash, new_hash, now=now):
            await self._reuse_detected(session, now)
        session.refresh_hash, session.last_used_at = new_hash, now
        session.generation += 1
        return self.token_pair(session, refresh, now)

    async def _reuse_detected(self, session: AuthSession, now: datetime) -> NoReturn:
        await self.auth.sessions.revoke(session.id, now=now, reason="refresh_reuse")
        await self.announce_revoked(session.user_id, "refresh_reuse", session_id=session.id)
        log.warning("auth.refresh_reuse", extra={"user_id": session.user_id, "session_id": session.id})
        raise Unauthenticated()


class Authenticate(AuthUseCase):
    """An access token's claims, if its session is still live: a revoked session fails at once."""

    async def __call__(self, access_token: str) -> AccessClaims:
        now = self.now()
        claims = self.auth.tokens.verify(access_token, now=now)
        session = await self.auth.sessions.get(claims.session_id)
        if (
            session is None
            or session.revoked
            or session.user_id != claims.user_id
            or now >= session.expires_at
        ):
            raise Unauthenticated()
        return claims


class Logout(AuthUseCase):
    """End the caller's session: its refresh family and every access token it issued."""

    async def __call__(self, cmd: LogoutCommand) -> None:
        await _revoke_own(self, cmd.actor, cmd.session_id, "logout")


class RevokeSession(AuthUseCase):
    """End one of the caller's sessions (another device)."""

    async def __call__(self, cmd: RevokeSessionCommand) -> None:
        await _revoke_own(self, cmd.actor, cmd.session_id, "revoked_by_user")


async def _revoke_own(case: AuthUseCase, actor: str, session_id: str, reason: str) -> None:
    session = await case.auth.sessions.get(session_id)
    if session is None or session.user_id != actor:
        raise NotFound("session")
    await case.auth.sessions.revoke(session_id, now=case.now(), reason=reason)
    await case.announce_revoked(actor, reason, session_id=session_id)
    log.info("auth.session_revoked", extra={"user_id": actor, "session_id": session_id, "reason": reason})


class ListSessions(AuthUseCase):
    async def __call__(self, actor: str, *, current_session_id: str | None = None) -> list[SessionView]:
        now = self.now()
        sessions = await self.auth.sessions.list_active(actor, now=now)
        return [
            SessionView(
                id=s.id,
                method=s.method,
                created_at=s.created_at,
                last_used_at=s.last_used_at,
                expires_at=s.expires_at,
                ip=s.ip,
                user_agent=s.user_agent,
                current=s.id == current_session_id,
            )
            for s in sessions
            if self.session_live(s, now)
        ]


# -- mailed codes and links -------------------------------------------------------------------


class RequestEmailCode(AuthUseCase):
    """Mail a 6-digit code and a link for login, verification or reset; silent for unknown addresses."""

    async def __call__(self, cmd: EmailCodeRequest) -> CodeRequested:
        return await self.request_token(cmd.email, cmd.purpose, cmd.ip)


class VerifyEmailCode(AuthUseCase):
    """Sign in with a mailed login code bound to its attempt id."""

    async def __call__(self, cmd: VerifyEmailCodeCommand) -> TokenPair:
        if cmd.ip is not None:
            await self.throttle(cmd.ip, self.settings.login_ip_rule())
        token = await self.consume(EmailPurpose.LOGIN, attempt_id=cmd.attempt_id, code=cmd.code)
        return await _email_login(self, token, "email_code", cmd.ip, cmd.user_agent)


class VerifyEmailLink(AuthUseCase):
    """Sign in with the token of a mailed login link."""

    async def __call__(self, cmd: VerifyEmailLinkCommand) -> TokenPair:
        if cmd.ip is not None:
            await self.throttle(cmd.ip, self.settings.login_ip_rule())
        token = await self.consume(EmailPurpose.LOGIN, token=cmd.token)
        return await _email_login(self, token, "email_link", cmd.ip, cmd.user_agent)


async def _email_login(
    case: AuthUseCase, token: OneTimeToken, method: str, ip: str | None, user_agent: str | None
) -> TokenPair:
    async def work(uow: UnitOfWork) -> User:
        user = await case.token_owner(uow, token)
        if user.verify_email():  # the code proved the mailbox
            await uow.users.save(user)
        return user

    user = await case.transaction(work)
    await case.auth.failures.clear(user.email)
    return await case.start_session(user.id, method, ip, user_agent)


class VerifyEmail(AuthUseCase):
    """Confirm the address with a mailed verification code or link."""

    async def __call__(self, cmd: VerifyEmailCommand) -> EmailVerified:
        if cmd.ip is not None:
            await self.throttle(cmd.ip, self.settings.login_ip_rule())
        token = await self.consume(
            EmailPurpose.VERIFY_EMAIL, attempt_id=cmd.attempt_id, code=cmd.code, token=cmd.token
        )

        async def work(uow: UnitOfWork) -> EmailVerified:
            user = await self.token_owner(uow, token)
            if user.verify_email():
                await uow.users.save(user)
            return EmailVerified(user_id=user.id, email=user.email)

        return await self.transaction(work)


class RequestPasswordReset(AuthUseCase):
    """Mail a reset code and link; the same answer for unknown addresses."""

    async def __call__(self, cmd: PasswordResetRequest) -> CodeRequested:
        return await self.request_token(cmd.email, EmailPurpose.RESET_PASSWORD, cmd.ip)


class ResetPassword(AuthUseCase):
    """Set a new password with a mailed reset code or link; every session of the user ends."""

    async def __call__(self, cmd: ResetPasswordCommand) -> None:
        s = self.settings
        # Checked before the token is used up, so that a refused password does not burn it.
        check_password(cmd.new_password, min_chars=s.min_password_chars, max_chars=s.max_password_chars)
        if cmd.ip is not None:
            await self.throttle(cmd.ip, s.login_ip_rule())
        token = await self.consume(
            EmailPurpose.RESET_PASSWORD, attempt_id=cmd.attempt_id, code=cmd.code, token=cmd.token
        )
        password_hash = await self.auth.hasher.hash(cmd.new_password)
        now = self.now()

        async def work(uow: UnitOfWork) -> User:
            user = await self.token_owner(uow, token)
            await uow.credentials.save(PasswordCredential(user.id, password_hash, now))
            if user.verify_email():
                await uow.users.save(user)
            return user

        user = await self.transaction(work)
        revoked = await self.auth.sessions.revoke_all(user.id, now=now, reason="password_reset")
        await self.announce_revoked(user.id, "password_reset")
        await self.auth.failures.clear(user.email)
        log.info("auth.password_reset", extra={"user_id": user.id, "ip": cmd.ip, "sessions_revoked": revoked})
        await self.mail_password_changed(user)


class ChangePassword(AuthUseCase):
    """Change the password with the current one; the user's other sessions end, a mail tells them."""

    async def __call__(self, cmd: ChangePasswordCommand) -> None:
        s = self.settings

        async def work(uow: UnitOfWork) -> tuple[User | None, PasswordCredential | None]:
            user = await uow.users.get(cmd.actor)
            return user, (await uow.credentials.get(cmd.actor) if user is not None else None)

        user, credential = await self.read(work)
        if user is None:
            raise NotFound("user")
        check_password(
            cmd.new_password,
            min_chars=s.min_password_chars,
            max_chars=s.max_password_chars,
            context=(user.email, user.display_name),
        )
        # A stolen access token must not become a way to guess the password: same throttles as login.
        await self.throttle_login(user.email, cmd.ip)
        hasher = self.auth.hasher
        if credential is None or not await hasher.verify(credential.password_hash, cmd.current_password):
            await self.login_failed(user.email)
            raise InvalidInput("current_password", "the current password is wrong")
        await self.auth.failures.clear(user.email)
        password_hash = await hasher.hash(cmd.new_password)
        await self.set_password(user.id, password_hash)
        revoked = await self.auth.sessions.revoke_all(
            user.id, now=self.now(), reason="password_changed", keep=cmd.session_id
        )
        await self.announce_revoked(user.id, "password_changed", keep=cmd.session_id)
        log.info(
            "auth.password_changed", extra={"user_id": user.id, "ip": cmd.ip, "sessions_revoked": revoked}
        )
        await self.mail_password_changed(user)


# -- the facade -------------------------------------------------------------------------------


class AuthService:
    """Every authentication use case, built once from the same dependencies."""

    def __init__(
        self,
        deps: Deps,
        *,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        one_time: OneTimeTokenStore,
        sessions: SessionStore,
        failures: FailureCounter,
        limiter: RateLimiter,
        mailer: Mailer,
        code_key: bytes,
        settings: AuthSettings | None = None,
    ) -> None:
        self.deps = deps
        self.ports = auth = AuthPorts(
            hasher=hasher,
            tokens=tokens,
            one_time=one_time,
            sessions=sessions,
            failures=failures,
            limiter=limiter,
            mailer=mailer,
            settings=settings or AuthSettings(),
            code_key=code_key,
        )
        self.settings = auth.settings
        self.register = Register(deps, auth)
        self.login = Login(deps, auth)
        self.refresh = Refresh(deps, auth)
        self.authenticate = Authenticate(deps, auth)
        self.logout = Logout(deps, auth)
        self.list_sessions = ListSessions(deps, auth)
        self.revoke_session = RevokeSession(deps, auth)
        self.request_email_code = RequestEmailCode(deps, auth)
        self.verify_email_code = VerifyEmailCode(deps, auth)
        self.verify_email_link = VerifyEmailLink(deps, auth)
        self.verify_email = VerifyEmail(deps, auth)
        self.request_password_reset = RequestPasswordReset(deps, auth)
        self.reset_password = ResetPassword(deps, auth)
        self.change_password = ChangePassword(deps, auth)
