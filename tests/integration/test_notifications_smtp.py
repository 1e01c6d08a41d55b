"""Notification mail through a real SMTP server (aiosmtpd): direct, and through the spool."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.memory.kit import MemoryCore, memory_core
from adapters.memory.notifications import MemoryDigestSchedule, MemoryEventFeed
from adapters.smtp import MailSender, MailSpool, QueuedMailer, SmtpMailer, parse_smtp_url
from chatcore.application.chats import CreateGroupChatCommand, OpenDirectChatCommand
from chatcore.application.messages import SendMessageCommand
from chatcore.application.notification_worker import NotificationWorker
from chatcore.application.notifications import NotificationDeps, NotificationHandler, NotificationSettings
from chatcore.application.profiles import CreateUserCommand
from chatcore.domain.errors import InvalidInput
from chatcore.ports.mail import Mailer
from chatcore.testing.doubles import FakeClock
from tests.integration.fixtures.smtp import SmtpTestServer, bounded

DELAY_S = 600
SETTINGS = NotificationSettings(public_url="https://chat.example.com", app_name="Chatty")


def smtp_mailer(server: SmtpTestServer) -> SmtpMailer:
    return SmtpMailer(
        parse_smtp_url(f"{server.url}?attempts=1&timeout=2&from=Chatty%20%3Cchat%40example.com%3E")
    )


@dataclass
class Rig:
    core: MemoryCore
    clock: FakeClock
    worker: NotificationWorker

    async def user(self, name: str, display_name: str | None = None) -> str:
        cmd = CreateUserCommand(
            email=f"{name}@example.com", display_name=display_name or name.title(), email_verified=True
        )
        return (await self.core.service.create_user(cmd)).id

    async def later(self, seconds: float) -> int:
        self.clock.advance(seconds)
        await self.worker.pump()
        return await self.worker.tick()


def make_rig(mailer: Mailer, clock: FakeClock | None = None) -> Rig:
    clock = clock or FakeClock()
    core = memory_core(clock=clock)
    schedule = MemoryDigestSchedule()
    handler = NotificationHandler(
        NotificationDeps(
            deps=core.service.deps,
            schedule=schedule,
            mailer=mailer,
            unsubscribe_key=bytes(32),
            settings=SETTINGS,
        )
    )
    worker = NotificationWorker(
        handler, schedule=schedule, clock=clock, feed=MemoryEventFeed(core.store), start_at="beginning"
    )
    return Rig(core, clock, worker)


@bounded(30)
async def test_added_and_digest_mails_arrive_with_recipient_subject_and_body(
    smtp_server: SmtpTestServer,
) -> None:
    rig = make_rig(smtp_mailer(smtp_server))
    ann, bob = await rig.user("ann"), await rig.user("bob")
    chat = await rig.core.service.create_group_chat(
        CreateGroupChatCommand(actor=ann, title="Café <Plans> & co", member_ids=[bob])
    )
    for body in ("first", "<b>second</b>"):
        await rig.core.service.send_message(SendMessageCommand(actor=ann, chat_id=chat.id, body=body))
    assert await rig.later(0) == 0
    assert await rig.later(DELAY_S) == 1
    assert await rig.later(DELAY_S * 10) == 0

    received = smtp_server.received
    assert [r.rcpt_tos for r in received] == [["bob@example.com"], ["bob@example.com"]]
    added, digest = (r.mail for r in received)
    assert added.subject == "Ann added you to Café <Plans> & co"
    assert 'Ann added you to the chat "Café <Plans> & co" on Chatty.' in added.text
    assert added.html is not None and "Café &lt;Plans&gt; &amp; co" in added.html
    assert digest.subject == "2 unread messages in Café <Plans> & co"
    assert "first" in digest.text and "<b>second</b>" in digest.text
    assert (
        digest.html is not None
        and "&lt;b&gt;second&lt;/b&gt;" in digest.html
        and "<b>second" not in digest.html
    )
    for mail in (added, digest):
        assert f"https://chat.example.com/chats/{chat.id}" in mail.text
        assert "https://chat.example.com/notifications/unsubscribe?token=" in mail.text


@bounded(30)
async def test_notification_mail_queued_while_smtp_is_down_is_delivered_once_it_returns(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    clock = FakeClock()
    spool = MailSpool(tmp_path / "spool")
    sender = MailSender(spool, smtp_mailer(smtp_server), clock=clock, backoff_s=30)
    rig = make_rig(QueuedMailer(spool, clock=clock), clock)
    ann, bob = await rig.user("ann"), await rig.user("bob")
    chat, _ = await rig.core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id=bob))
    await rig.core.service.send_message(SendMessageCommand(actor=ann, chat_id=chat.id, body="ping"))

    smtp_server.stop()
    assert await rig.later(DELAY_S) == 1  # handed to the spool: no error while SMTP is down
    assert (await sender.run_once()).retried == 1
    smtp_server.start()
    clock.advance(3600)
    assert (await sender.run_once()).delivered == 1
    (mail,) = smtp_server.mails()
    assert (mail.to, mail.subject) == ("bob@example.com", "1 unread message from Ann")


def _raw(smtp_server: SmtpTestServer, index: int) -> object:
    return message_from_bytes(smtp_server.received[index].data, policy=policy.default)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    name=st.one_of(
        st.text(min_size=1, max_size=30),
        st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40),
        st.builds(
            lambda a, sep, b: f"{a}{sep}{b}",
            st.text(min_size=1, max_size=8),
            st.sampled_from(["\r\n", "\n", "\r", ", ", "; ", " <", ">", "\r\nBcc: ", "\x00", "\u2028", '"']),
            st.sampled_from(["evil@x.example", "Bcc: evil@x.example", "=?utf-8?q?=0D=0ABcc:_e@x?=", "x"]),
        ),
    )
)
@bounded(30)
async def test_any_display_name_in_a_digest_is_refused_at_input_or_mailed_to_exactly_one_recipient(
    smtp_server: SmtpTestServer, name: str
) -> None:
    rig = make_rig(smtp_mailer(smtp_server))
    try:
        author = await rig.user("author", display_name=name)
    except InvalidInput:
        event("refused at input")
        return  # refused at input (M1): nothing can reach a header
    event("mailed")
    reader = await rig.user("reader")
    chat, _ = await rig.core.service.open_direct_chat(OpenDirectChatCommand(actor=author, user_id=reader))
    await rig.core.service.send_message(SendMessageCommand(actor=author, chat_id=chat.id, body="hi"))
    before = len(smtp_server.received)
    assert await rig.later(DELAY_S) == 1

    received = smtp_server.received[before:]
    assert len(received) == 1
    assert received[0].rcpt_tos == ["reader@example.com"]
    message = _raw(smtp_server, before)
    assert message.get_all("To") == ["reader@example.com"]  # type: ignore[attr-defined]
    assert message.get_all("Cc") is None and message.get_all("Bcc") is None  # type: ignore[attr-defined]
    subject = received[0].mail.subject
    assert "\r" not in subject and "\n" not in subject
    assert subject.startswith("1 unread message from ")
