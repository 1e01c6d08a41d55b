"""The durable outgoing queue in front of a real SMTP server: outages, expiry, dead letters."""

from __future__ import annotations

import asyncio
import logging
import stat
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from adapters.smtp import MailSender, MailSpool, QueuedMailer, SmtpMailer, SpooledMail, parse_smtp_url
from adapters.system import SystemClock
from chatcore.ports.mail import Mail
from chatcore.testing.doubles import FakeClock
from tests.integration.fixtures import smtp as smtp_fixtures
from tests.integration.fixtures.smtp import SmtpTestServer, bounded, wait_until

CODE_MAIL = Mail(to="ann@example.com", subject="Your login code", text="Your code is 493817.\n")
ADDED_MAIL = Mail(to="bob@example.com", subject="You were added to a chat", text="Open the app.\n")
CODE_TTL_S = 600
HOUR_S = 3600

# Until tests/conftest.py registers the plugin (pytest_plugins), take its fixture by name.
smtp_server = smtp_fixtures.smtp_server


def smtp_for(server: SmtpTestServer) -> SmtpMailer:
    # One attempt per send: retrying over minutes is the queue's job.
    return SmtpMailer(parse_smtp_url(f"{server.url}?attempts=1&timeout=2"))


class Outbox:
    """A spool with its QueuedMailer and a MailSender delivering to the test's SMTP server."""

    def __init__(self, root: Path, server: SmtpTestServer, *, max_attempts: int = 5) -> None:
        self.clock = FakeClock()
        self.spool = MailSpool(root)
        self.sender = MailSender(
            self.spool, smtp_for(server), clock=self.clock, max_attempts=max_attempts, backoff_s=30
        )
        self.mailer = QueuedMailer(self.spool, clock=self.clock)


@pytest.fixture
def outbox(tmp_path: Path, smtp_server: SmtpTestServer) -> Outbox:
    return Outbox(tmp_path / "spool", smtp_server)


@bounded(30)
async def test_smtp_down_mails_queue_and_are_delivered_after_it_returns(
    outbox: Outbox, smtp_server: SmtpTestServer
) -> None:
    smtp_server.stop()
    await outbox.mailer.send(CODE_MAIL)  # no error for the caller while SMTP is down
    await outbox.mailer.send(ADDED_MAIL)

    assert (await outbox.sender.run_once()).retried == 2
    smtp_server.start()
    assert (await outbox.sender.run_once()).delivered == 0  # not due yet: backing off

    outbox.clock.advance(HOUR_S)
    report = await outbox.sender.run_once()

    assert (report.delivered, report.retried, report.dead) == (2, 0, 0)
    assert sorted(m.to for m in smtp_server.mails()) == ["ann@example.com", "bob@example.com"]
    assert outbox.spool.waiting() == [] and outbox.spool.dead() == []
    assert (await outbox.sender.run_once()).delivered == 0  # delivered once, not again


@bounded(30)
async def test_sender_loop_delivers_mail_queued_during_an_outage_once_smtp_returns(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    clock = SystemClock()
    spool = MailSpool(tmp_path / "spool")
    sender = MailSender(spool, smtp_for(smtp_server), clock=clock, backoff_s=0.05, poll_interval_s=0.05)
    mailer = QueuedMailer(spool, clock=clock, on_queued=sender.wake)
    stop = asyncio.Event()
    smtp_server.stop()
    task = asyncio.create_task(sender.run(stop))
    try:
        await mailer.enqueue(CODE_MAIL, expires_at=clock.now() + timedelta(seconds=CODE_TTL_S))
        await wait_until(lambda: any(entry.attempts >= 2 for entry in spool.waiting()))
        assert smtp_server.received == []

        smtp_server.start()
        await wait_until(lambda: bool(smtp_server.received))
    finally:
        stop.set()
        await task
    assert [m.subject for m in smtp_server.mails()] == ["Your login code"]
    assert spool.waiting() == []


@bounded(30)
async def test_queued_mail_wakes_the_sender_without_waiting_for_the_poll(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    clock = SystemClock()
    spool = MailSpool(tmp_path / "spool")
    sender = MailSender(spool, smtp_for(smtp_server), clock=clock, poll_interval_s=60)
    mailer = QueuedMailer(spool, clock=clock, on_queued=sender.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.05)  # the sender is now waiting out its 60 s poll
        await mailer.send(ADDED_MAIL)
        await wait_until(lambda: bool(smtp_server.received), timeout_s=5)
    finally:
        stop.set()
        await task


@bounded(30)
async def test_login_code_whose_lifetime_passed_during_the_outage_is_dropped_not_sent_late(
    outbox: Outbox, smtp_server: SmtpTestServer
) -> None:
    smtp_server.stop()
    await outbox.mailer.enqueue(CODE_MAIL, expires_at=outbox.clock.now() + timedelta(seconds=CODE_TTL_S))
    await outbox.mailer.send(ADDED_MAIL)  # no lifetime: still worth sending late
    await outbox.sender.run_once()

    outbox.clock.advance(CODE_TTL_S + 1)
    smtp_server.start()
    report = await outbox.sender.run_once()

    assert (report.delivered, report.expired) == (1, 1)
    assert [m.to for m in smtp_server.mails()] == ["bob@example.com"]
    assert outbox.spool.waiting() == [] and outbox.spool.dead() == []


@bounded(30)
async def test_mail_already_expired_is_not_even_queued(outbox: Outbox) -> None:
    queued = await outbox.mailer.enqueue(CODE_MAIL, expires_at=outbox.clock.now())
    assert queued is None
    assert outbox.spool.waiting() == []


@bounded(30)
async def test_mail_moves_to_dead_letters_after_max_attempts(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    outbox = Outbox(tmp_path / "spool", smtp_server, max_attempts=3)
    smtp_server.stop()
    await outbox.mailer.send(CODE_MAIL)

    reports = []
    for _ in range(3):
        reports.append(await outbox.sender.run_once())
        outbox.clock.advance(HOUR_S)

    assert [(r.retried, r.dead) for r in reports] == [(1, 0), (1, 0), (0, 1)]
    (dead,) = outbox.spool.dead()
    assert dead.mail == CODE_MAIL and dead.attempts == 3
    assert dead.last_error is not None and "TransientMailError" in dead.last_error
    assert dead.dead_at == outbox.clock.now() - timedelta(seconds=HOUR_S)
    smtp_server.start()
    assert (await outbox.sender.run_once()).delivered == 0
    assert smtp_server.received == []


@bounded(30)
async def test_permanent_failure_goes_to_dead_letters_without_retrying(
    outbox: Outbox, smtp_server: SmtpTestServer
) -> None:
    smtp_server.fail_next("550 5.1.1 No such user", stage="rcpt", times=5)
    await outbox.mailer.send(CODE_MAIL)

    report = await outbox.sender.run_once()

    assert (report.dead, report.retried) == (1, 0)
    assert smtp_server.handler.sessions == 1
    (dead,) = outbox.spool.dead()
    assert dead.attempts == 1 and dead.last_error is not None and "PermanentMailError" in dead.last_error


@bounded(30)
async def test_transient_4xx_is_retried_by_the_queue(outbox: Outbox, smtp_server: SmtpTestServer) -> None:
    smtp_server.fail_next("451 4.3.0 Try again later")
    await outbox.mailer.send(CODE_MAIL)
    assert (await outbox.sender.run_once()).retried == 1
    outbox.clock.advance(HOUR_S)
    assert (await outbox.sender.run_once()).delivered == 1


@pytest.mark.parametrize(
    "subject",
    ["x\r\nBcc: evil@x", "x\nBcc: evil@x", "=?utf-8?q?x=0D=0ABcc:_evil@x?="],
    ids=["crlf", "lf", "rfc2047"],
)
@bounded(30)
async def test_header_injection_is_refused_when_queued_and_nothing_is_spooled(
    outbox: Outbox, smtp_server: SmtpTestServer, subject: str
) -> None:
    with pytest.raises(ValueError, match="subject"):
        await outbox.mailer.send(Mail(to="ann@example.com", subject=subject, text="t"))
    assert outbox.spool.waiting() == []
    await outbox.sender.run_once()
    assert smtp_server.received == []


@bounded(30)
async def test_spool_files_are_private_whole_and_leave_no_temporaries(outbox: Outbox) -> None:
    mail_id = await outbox.mailer.enqueue(CODE_MAIL, expires_at=outbox.clock.now() + timedelta(minutes=10))

    root = outbox.spool.root
    for folder in (root, outbox.spool.queue_dir, outbox.spool.dead_dir, outbox.spool.tmp_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (path,) = outbox.spool.queue_dir.iterdir()
    assert path.name == f"{mail_id}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = msgspec.json.decode(path.read_bytes(), type=SpooledMail)
    assert entry.mail == CODE_MAIL and entry.attempts == 0
    assert list(outbox.spool.tmp_dir.iterdir()) == []


@bounded(30)
async def test_mail_left_in_flight_by_a_crashed_sender_is_sent_after_restart(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    clock = SystemClock()
    spool = MailSpool(tmp_path / "spool")
    mail_id = await QueuedMailer(spool, clock=clock).enqueue(CODE_MAIL)
    assert mail_id is not None and spool.claim(mail_id)  # a sender took it, then died

    sender = MailSender(spool, smtp_for(smtp_server), clock=clock, poll_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        await wait_until(lambda: bool(smtp_server.received))
    finally:
        stop.set()
        await task
    assert list(spool.inflight_dir.iterdir()) == []


@bounded(30)
async def test_two_senders_on_one_spool_never_send_a_mail_twice(
    outbox: Outbox, smtp_server: SmtpTestServer
) -> None:
    other = MailSender(outbox.spool, smtp_for(smtp_server), clock=outbox.clock)
    for n in range(12):
        await outbox.mailer.send(Mail(to=f"user{n}@example.com", subject=f"mail {n}", text="t"))

    reports = await asyncio.gather(outbox.sender.run_once(), other.run_once())

    assert sum(r.delivered for r in reports) == 12
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == sorted(
        f"user{n}@example.com" for n in range(12)
    )


@bounded(30)
async def test_logs_name_mail_ids_never_recipients_subjects_or_codes(
    outbox: Outbox, smtp_server: SmtpTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    smtp_server.stop()
    await outbox.mailer.enqueue(CODE_MAIL, expires_at=outbox.clock.now() + timedelta(seconds=CODE_TTL_S))
    await outbox.sender.run_once()
    smtp_server.start()
    outbox.clock.advance(60)
    await outbox.sender.run_once()

    assert smtp_server.received
    ours = [record.getMessage() for record in caplog.records if record.name.startswith("adapters.")]
    assert any("queued" in line for line in ours) and any("delivered" in line for line in ours)
    for forbidden in ("493817", "ann@example.com", "Your login code", "Your code"):
        assert forbidden not in caplog.text  # nor in anyone else's lines (aiosmtplib, the server)
