"""No user enumeration (SECURITY E6): known and unknown addresses get the same answers.

Responses are compared after replacing the random attempt id, byte for byte; mails are counted
per address; the counting hasher shows one password verification per login either way.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from adapters.memory.mail import MemoryMailer
from chatcore.application.auth import (
    EmailCodeRequest,
    LoginCommand,
    PasswordResetRequest,
    RegisterCommand,
)
from chatcore.domain.errors import Unauthenticated
from chatcore.ports.mail import Mail
from chatcore.ports.security import EmailPurpose
from tests.unit.test_auth_kit import PASSWORD, AuthKit, build_kit, login, register

KNOWN = [f"known{i}@example.com" for i in range(50)]
UNKNOWN = [f"unknown{i}@example.com" for i in range(50)]


@pytest.fixture
async def kit() -> AuthKit:
    kit = build_kit()
    for email in KNOWN:
        await register(kit, email)
        kit.clock.advance(3600)  # a fresh hour of mail allowance for the next one
    kit.mailer.sent.clear()
    return kit


def _normalised(result: msgspec.Struct) -> bytes:
    data: dict[str, Any] = msgspec.to_builtins(result)
    assert len(data["attempt_id"]) == 22  # 128 random bits either way
    data["attempt_id"] = "<attempt>"
    return msgspec.json.encode(data)


async def test_code_requests_answer_alike_and_mail_known_addresses_only(kit: AuthKit) -> None:
    answers = set()
    for email in KNOWN + UNKNOWN:
        answers.add(_normalised(await kit.auth.request_email_code(EmailCodeRequest(email=email))))
    assert len(answers) == 1
    assert all(len(kit.mails_to(e)) == 1 for e in KNOWN)
    assert all(len(kit.mails_to(e)) == 0 for e in UNKNOWN)


async def test_reset_requests_answer_alike_and_mail_known_addresses_only(kit: AuthKit) -> None:
    answers = set()
    for email in KNOWN + UNKNOWN:
        answers.add(_normalised(await kit.auth.request_password_reset(PasswordResetRequest(email=email))))
    assert len(answers) == 1
    assert all(len(kit.mails_to(e)) == 1 for e in KNOWN)
    assert all(len(kit.mails_to(e)) == 0 for e in UNKNOWN)


async def test_failed_logins_answer_alike_with_exactly_one_verification_each(kit: AuthKit) -> None:
    details = set()
    hashes_before = kit.hasher.hashes
    for email in KNOWN + UNKNOWN:
        before = kit.hasher.verifies
        with pytest.raises(Unauthenticated) as caught:
            await kit.auth.login(LoginCommand(email=email, password="a wrong but long password"))
        assert kit.hasher.verifies - before == 1, email
        details.add((type(caught.value), caught.value.detail, str(caught.value)))
    assert len(details) == 1
    assert kit.hasher.hashes - hashes_before <= 1  # at most the dummy hash, made once
    assert kit.mailer.sent == []


async def test_a_successful_login_also_verifies_exactly_once(kit: AuthKit) -> None:
    before = kit.hasher.verifies
    await login(kit, KNOWN[0])
    assert kit.hasher.verifies - before == 1


async def test_unknown_addresses_are_throttled_like_known_ones(kit: AuthKit) -> None:
    outcomes: dict[str, list[str]] = {}
    for email in (KNOWN[0], UNKNOWN[0]):
        outcomes[email] = []
        for _ in range(7):
            try:
                await kit.auth.login(LoginCommand(email=email, password="a wrong but long password"))
            except Exception as exc:
                outcomes[email].append(f"{type(exc).__name__}:{getattr(exc, 'retry_after_s', '')}")
    assert outcomes[KNOWN[0]] == outcomes[UNKNOWN[0]]
    assert outcomes[KNOWN[0]][-1] == "RateLimited:1"


async def test_registering_answers_alike_for_new_and_taken_addresses(kit: AuthKit) -> None:
    answers = set()
    hashes_before = kit.hasher.hashes
    for email in KNOWN[:10] + UNKNOWN[:10]:
        registration = await kit.auth.register(
            RegisterCommand(email=email, password="a wholly new passphrase", display_name="Eve")
        )
        answers.add(_normalised(registration))
    assert len(answers) == 1
    assert kit.hasher.hashes - hashes_before == 20  # the password is hashed either way
    # one mail each: a verification code to a new address, a notice to a taken one
    assert all(len(kit.mails_to(e)) == 1 for e in KNOWN[:10] + UNKNOWN[:10])
    assert kit.mails_to(KNOWN[0])[0].subject == "Your chatcore account"
    assert kit.mails_to(UNKNOWN[0])[0].subject.startswith("Confirm your email address")


async def test_registering_a_taken_address_changes_nothing_of_the_account(kit: AuthKit) -> None:
    users_before = len(kit.core.store.users)
    await kit.auth.register(
        RegisterCommand(email=KNOWN[0], password="the intruder's passphrase", display_name="Eve")
    )
    assert len(kit.core.store.users) == users_before
    with pytest.raises(Unauthenticated):
        await login(kit, KNOWN[0], "the intruder's passphrase")
    assert (await login(kit, KNOWN[0], PASSWORD)).user_id
    notice = kit.mails_to(KNOWN[0])[0]
    assert "intruder" not in notice.text  # the attempted password never reaches a mail


class FailingMailer(MemoryMailer):
    """A mail server that is down."""

    async def send(self, mail: Mail) -> None:
        raise ConnectionError("smtp down")


async def test_a_failing_mailer_does_not_tell_known_addresses_apart() -> None:
    kit = build_kit(mailer=FailingMailer())
    await register(kit, KNOWN[0], verify=False)
    for purpose in EmailPurpose:
        known = await kit.auth.request_email_code(EmailCodeRequest(email=KNOWN[0], purpose=purpose))
        unknown = await kit.auth.request_email_code(EmailCodeRequest(email=UNKNOWN[0], purpose=purpose))
        assert _normalised(known) == _normalised(unknown)
