"""Mailed codes and links (SECURITY E1-E5, E7): entropy, lifetime, single use, binding, limits, hashes."""

from __future__ import annotations

import asyncio
import re

import msgspec
import pytest

from chatcore.application.auth import (
    CodeRequested,
    EmailCodeRequest,
    PasswordResetRequest,
    RefreshCommand,
    ResetPasswordCommand,
    TokenPair,
    VerifyEmailCodeCommand,
    VerifyEmailCommand,
    VerifyEmailLinkCommand,
)
from chatcore.domain.errors import InvalidInput, RateLimited, Unauthenticated
from chatcore.ports.mail import Mail
from chatcore.ports.security import EmailPurpose
from tests.unit.test_auth_kit import (
    PUBLIC_URL,
    AuthKit,
    build_kit,
    login,
    mailed_code,
    mailed_link,
    mailed_token,
    register,
)

EMAIL = "ann@example.com"


@pytest.fixture
def kit() -> AuthKit:
    return build_kit()


async def _request(
    kit: AuthKit, email: str = EMAIL, purpose: EmailPurpose = EmailPurpose.LOGIN, ip: str | None = None
) -> tuple[CodeRequested, Mail | None]:
    sent = len(kit.mailer.sent)
    requested = await kit.auth.request_email_code(EmailCodeRequest(email=email, purpose=purpose, ip=ip))
    mail = kit.mailer.sent[sent] if len(kit.mailer.sent) > sent else None
    return requested, mail


async def _verify(kit: AuthKit, attempt_id: str, code: str) -> TokenPair:
    return await kit.auth.verify_email_code(VerifyEmailCodeCommand(attempt_id=attempt_id, code=code))


async def test_the_mail_carries_a_6_digit_code_and_a_256_bit_link(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None and mail.to == EMAIL
    assert re.fullmatch(r"\d{6}", mailed_code(mail))
    assert len(mailed_token(mail)) >= 43
    assert mailed_code(mail) not in mail.subject
    assert mail.html is not None and mailed_code(mail) in mail.html
    assert requested.expires_in == 600


async def test_the_link_uses_the_configured_public_url_only(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    _, mail = await _request(kit)
    assert mail is not None
    assert mailed_link(mail).startswith(f"{PUBLIC_URL}/auth/login#token=")
    assert all(
        link.startswith(PUBLIC_URL) for link in re.findall(r"https?://[^\s\"<]+", mail.text + str(mail.html))
    )


async def test_a_code_signs_in_and_confirms_the_address(kit: AuthKit) -> None:
    user_id = await register(kit, EMAIL, verify=False)
    requested, mail = await _request(kit)
    assert mail is not None
    pair = await _verify(kit, requested.attempt_id, mailed_code(mail))
    assert pair.user_id == user_id
    assert (await kit.auth.authenticate(pair.access_token)).user_id == user_id
    assert kit.core.store.users[user_id].email_verified
    assert kit.sessions.sessions[pair.session_id].method == "email_code"


async def test_a_code_is_accepted_at_599_seconds(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    kit.clock.advance(599)
    assert (await _verify(kit, requested.attempt_id, mailed_code(mail))).user_id


async def test_a_code_is_refused_at_601_seconds_like_a_wrong_code(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    code = mailed_code(mail)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    with pytest.raises(Unauthenticated) as wrong_error:
        await _verify(kit, requested.attempt_id, wrong)
    kit.clock.advance(601)
    with pytest.raises(Unauthenticated) as late_error:
        await _verify(kit, requested.attempt_id, code)
    assert late_error.value.detail == wrong_error.value.detail


async def test_a_link_expires_with_its_code(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    _, mail = await _request(kit)
    assert mail is not None
    kit.clock.advance(601)
    with pytest.raises(Unauthenticated):
        await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(mail)))


async def test_a_code_works_once(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    await _verify(kit, requested.attempt_id, mailed_code(mail))
    with pytest.raises(Unauthenticated):
        await _verify(kit, requested.attempt_id, mailed_code(mail))
    # and the link of the same mail is used up with it
    with pytest.raises(Unauthenticated):
        await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(mail)))


async def test_a_link_signs_in_once(kit: AuthKit) -> None:
    user_id = await register(kit, EMAIL)
    _, mail = await _request(kit)
    assert mail is not None
    pair = await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(mail)))
    assert pair.user_id == user_id
    with pytest.raises(Unauthenticated):
        await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(mail)))


async def test_ten_concurrent_verifies_of_one_code_give_exactly_one_success(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    code = mailed_code(mail)
    results = await asyncio.gather(
        *(_verify(kit, requested.attempt_id, code) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, TokenPair) for r in results) == 1
    assert sum(isinstance(r, Unauthenticated) for r in results) == 9


async def test_ten_concurrent_uses_of_one_link_give_exactly_one_success(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    _, mail = await _request(kit)
    assert mail is not None
    command = VerifyEmailLinkCommand(token=mailed_token(mail))
    results = await asyncio.gather(
        *(kit.auth.verify_email_link(command) for _ in range(10)), return_exceptions=True
    )
    assert sum(isinstance(r, TokenPair) for r in results) == 1


async def test_a_code_only_works_with_its_own_attempt(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    await register(kit, "bob@example.com")
    ann_attempt, ann_mail = await _request(kit, EMAIL)
    bob_attempt, bob_mail = await _request(kit, "bob@example.com")
    assert ann_mail is not None and bob_mail is not None
    with pytest.raises(Unauthenticated):
        await _verify(kit, bob_attempt.attempt_id, mailed_code(ann_mail))
    assert (await _verify(kit, ann_attempt.attempt_id, mailed_code(ann_mail))).user_id


async def test_a_new_request_voids_the_older_code(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    first, first_mail = await _request(kit)
    second, second_mail = await _request(kit)
    assert first_mail is not None and second_mail is not None
    with pytest.raises(Unauthenticated):
        await _verify(kit, first.attempt_id, mailed_code(first_mail))
    with pytest.raises(Unauthenticated):
        await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(first_mail)))
    assert (await _verify(kit, second.attempt_id, mailed_code(second_mail))).user_id


async def test_five_wrong_codes_void_the_right_one(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    code = mailed_code(mail)
    for i in range(1, 6):
        with pytest.raises(Unauthenticated):
            await _verify(kit, requested.attempt_id, f"{(int(code) + i) % 10**6:06d}")
    with pytest.raises(Unauthenticated):
        await _verify(kit, requested.attempt_id, code)
    with pytest.raises(Unauthenticated):
        await kit.auth.verify_email_link(VerifyEmailLinkCommand(token=mailed_token(mail)))


async def test_four_wrong_codes_leave_the_right_one_working(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    requested, mail = await _request(kit)
    assert mail is not None
    code = mailed_code(mail)
    for i in range(1, 5):
        with pytest.raises(Unauthenticated):
            await _verify(kit, requested.attempt_id, f"{(int(code) + i) % 10**6:06d}")
    assert (await _verify(kit, requested.attempt_id, code)).user_id


async def test_a_malformed_code_is_invalid_input(kit: AuthKit) -> None:
    with pytest.raises(InvalidInput) as caught:
        await _verify(kit, "attempt", "12345a")
    assert caught.value.field == "code"


async def test_a_login_code_does_not_verify_or_reset_and_vice_versa(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    login_req, login_mail = await _request(kit, purpose=EmailPurpose.LOGIN)
    reset_req, reset_mail = await _request(kit, purpose=EmailPurpose.RESET_PASSWORD)
    assert login_mail is not None and reset_mail is not None
    with pytest.raises(Unauthenticated):
        await kit.auth.reset_password(
            ResetPasswordCommand(
                new_password="another long passphrase",
                attempt_id=login_req.attempt_id,
                code=mailed_code(login_mail),
            )
        )
    with pytest.raises(Unauthenticated):
        await _verify(kit, reset_req.attempt_id, mailed_code(reset_mail))
    # neither was used up by the wrong door
    assert (await _verify(kit, login_req.attempt_id, mailed_code(login_mail))).user_id


async def test_only_hashes_are_at_rest(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    secrets_seen: list[str] = []
    for purpose in EmailPurpose:
        _, mail = await _request(kit, purpose=purpose)
        assert mail is not None
        secrets_seen += [mailed_code(mail), mailed_token(mail)]
    pair = await login(kit, EMAIL)
    refreshed = await kit.auth.refresh(RefreshCommand(refresh_token=pair.refresh_token))
    secrets_seen += [pair.refresh_token, refreshed.refresh_token]

    dump = msgspec.json.encode(
        {
            "one_time": list(kit.one_time.tokens.values()),
            "sessions": list(kit.sessions.sessions.values()),
            "refresh_index": kit.sessions.refresh_index,
        }
    ).decode()
    assert len(kit.one_time.tokens) == 3
    for secret in secrets_seen:
        assert re.search(rf"(?<![0-9a-zA-Z_-]){re.escape(secret)}(?![0-9a-zA-Z_-])", dump) is None, secret
        assert secret not in dump if len(secret) > 6 else True


async def test_the_sixth_request_in_an_hour_is_refused_for_known_and_unknown_addresses(kit: AuthKit) -> None:
    await register(kit, EMAIL, verify=False)  # the registration mail counts as the first of five
    for _ in range(4):
        await _request(kit, EMAIL)
    with pytest.raises(RateLimited) as known:
        await _request(kit, EMAIL)
    for _ in range(5):
        await _request(kit, "nobody@example.com")
    with pytest.raises(RateLimited) as unknown:
        await _request(kit, "nobody@example.com")
    assert known.value.retry_after_s > 0 and unknown.value.retry_after_s > 0
    kit.clock.advance(3600)
    await _request(kit, EMAIL)


async def test_the_address_limit_keys_on_the_normalised_address(kit: AuthKit) -> None:
    for spelling in (
        "nobody@example.com",
        "Nobody@Example.com",
        " NOBODY@example.COM",
        "nobody@EXAMPLE.com",
        "nobody@example.com",
    ):
        await _request(kit, spelling)
    with pytest.raises(RateLimited):
        await _request(kit, "NoBody@example.com")


async def test_the_21st_request_from_one_ip_in_an_hour_is_refused(kit: AuthKit) -> None:
    for i in range(20):
        await _request(kit, f"user{i}@example.com", ip="203.0.113.7")
    with pytest.raises(RateLimited):
        await _request(kit, "user99@example.com", ip="203.0.113.7")
    await _request(kit, "user99@example.com", ip="203.0.113.8")


async def test_an_address_is_confirmed_by_code_or_by_link(kit: AuthKit) -> None:
    ann = await register(kit, EMAIL, verify=False)
    bob = await register(kit, "bob@example.com", verify=False)
    assert not kit.core.store.users[ann].email_verified
    _, ann_mail = await _request(kit, EMAIL, purpose=EmailPurpose.VERIFY_EMAIL)
    assert ann_mail is not None
    verified = await kit.auth.verify_email(VerifyEmailCommand(token=mailed_token(ann_mail)))
    assert (verified.user_id, verified.email) == (ann, EMAIL)
    assert kit.core.store.users[ann].email_verified

    registration_mail = kit.mails_to("bob@example.com")[0]
    assert registration_mail.subject.startswith("Confirm your email address")
    bob_attempt = next(iter(t.attempt_id for t in kit.one_time.tokens.values() if t.user_id == bob))
    await kit.auth.verify_email(
        VerifyEmailCommand(attempt_id=bob_attempt, code=mailed_code(registration_mail))
    )
    assert kit.core.store.users[bob].email_verified


async def test_verification_needs_exactly_one_proof(kit: AuthKit) -> None:
    with pytest.raises(InvalidInput):
        await kit.auth.verify_email(VerifyEmailCommand())
    with pytest.raises(InvalidInput):
        await kit.auth.verify_email(VerifyEmailCommand(attempt_id="a", code="123456", token="t"))


async def test_a_reset_sets_the_password_ends_every_session_and_mails_the_user(kit: AuthKit) -> None:
    await register(kit, EMAIL)
    old_session = await login(kit, EMAIL)
    sent = len(kit.mailer.sent)
    requested = await kit.auth.request_password_reset(PasswordResetRequest(email=EMAIL))
    mail = kit.mailer.sent[sent]
    assert mail.subject == "Reset your chatcore password"
    assert mailed_link(mail).startswith(f"{PUBLIC_URL}/auth/reset-password#token=")

    with pytest.raises(InvalidInput):  # a refused password does not burn the code
        await kit.auth.reset_password(
            ResetPasswordCommand(
                new_password="short", attempt_id=requested.attempt_id, code=mailed_code(mail)
            )
        )
    new_password = "a completely fresh passphrase"
    await kit.auth.reset_password(
        ResetPasswordCommand(
            new_password=new_password, attempt_id=requested.attempt_id, code=mailed_code(mail)
        )
    )
    with pytest.raises(Unauthenticated):
        await kit.auth.authenticate(old_session.access_token)
    with pytest.raises(Unauthenticated):
        await kit.auth.refresh(RefreshCommand(refresh_token=old_session.refresh_token))
    assert kit.mails_to(EMAIL)[-1].subject == "Your chatcore password was changed"
    assert (await login(kit, EMAIL, new_password)).user_id == old_session.user_id
    with pytest.raises(Unauthenticated):
        await kit.auth.reset_password(
            ResetPasswordCommand(new_password="yet another passphrase", token=mailed_token(mail))
        )


async def test_a_reset_by_link_works_for_an_account_without_a_password(kit: AuthKit) -> None:
    from chatcore.application.profiles import CreateUserCommand

    profile = await kit.core.service.create_user(CreateUserCommand(email=EMAIL, display_name="Ann"))
    sent = len(kit.mailer.sent)
    await kit.auth.request_password_reset(PasswordResetRequest(email=EMAIL))
    await kit.auth.reset_password(
        ResetPasswordCommand(
            new_password="a first passphrase for ann", token=mailed_token(kit.mailer.sent[sent])
        )
    )
    assert (await login(kit, EMAIL, "a first passphrase for ann")).user_id == profile.id


def test_mail_templates_escape_what_they_insert() -> None:
    from chatcore.application.mail_templates import login_code_mail

    mail = login_code_mail(
        to=EMAIL, app_name="<b>chat</b>", code="012345", link='https://x.test/a#token=t"><script>', ttl_s=600
    )
    assert mail.html is not None
    assert "<script>" not in mail.html and "<b>chat</b>" not in mail.html
    assert "&lt;b&gt;chat&lt;/b&gt;" in mail.html
    assert "Your code: 012345" in mail.text and "for 10 minutes" in mail.text
