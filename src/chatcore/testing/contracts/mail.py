"""The mailer contract: a sent mail reaches whatever the adapter's inbox is, intact."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chatcore.ports.mail import Mail, Mailer


@dataclass
class MailerUnderTest:
    mailer: Mailer
    # Returns every mail delivered so far, as the adapter's real destination saw it.
    delivered: Callable[[], Awaitable[list[Mail]]]


class MailerContract:
    """Provide a `mail` fixture yielding a MailerUnderTest."""

    async def test_mail_arrives_with_recipient_subject_and_bodies(self, mail: MailerUnderTest) -> None:
        sent = Mail(to="ann@example.com", subject="Your code", text="Code: 123456\n", html="<p>Code</p>")
        await mail.mailer.send(sent)
        (got,) = await mail.delivered()
        assert (got.to, got.subject) == (sent.to, sent.subject)
        assert got.text.strip() == sent.text.strip()

    async def test_unicode_survives(self, mail: MailerUnderTest) -> None:
        await mail.mailer.send(Mail(to="zoe@example.com", subject="Grüße ✓", text="Ça va? 日本語"))
        (got,) = await mail.delivered()
        assert got.subject == "Grüße ✓" and "日本語" in got.text
