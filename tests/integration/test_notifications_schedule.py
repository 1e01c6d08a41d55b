"""The DigestSchedule port on every adapter (memory, SQLite), and the worker on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.memory.mail import MemoryMailer
from adapters.memory.notifications import MemoryDigestSchedule
from adapters.sqlite.database import SqliteDatabase
from adapters.sqlite.kit import sqlite_core
from adapters.sqlite.migrations import MIGRATIONS
from adapters.sqlite.notifications import SqliteDigestSchedule, SqliteEventFeed
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.messages import MarkReadCommand, SendMessageCommand
from chatcore.application.notification_worker import NotificationWorker
from chatcore.application.notifications import NotificationDeps, NotificationHandler, NotificationSettings
from chatcore.application.profiles import CreateUserCommand
from chatcore.ports.notifications import DigestSchedule, SentMail
from chatcore.testing.doubles import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(params=["memory", "sqlite"])
async def schedule(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DigestSchedule]:
    if request.param == "memory":
        yield MemoryDigestSchedule()
        return
    async with SqliteDatabase(tmp_path / "chat.db") as db:
        yield SqliteDigestSchedule(db)


async def test_one_digest_per_user_and_chat_due_with_its_first_message(schedule: DigestSchedule) -> None:
    await schedule.schedule("bob", "c1", seq=3, due_at=at(600))
    await schedule.schedule("bob", "c1", seq=4, due_at=at(700))
    await schedule.schedule("bob", "c2", seq=1, due_at=at(650))
    assert await schedule.next_due() == at(600)
    assert await schedule.claim_due(at(599), lease_until=at(900), limit=10) == []

    (digest,) = await schedule.claim_due(at(640), lease_until=at(940), limit=10)
    assert (digest.chat_id, digest.first_seq, digest.last_seq, digest.due_at) == ("c1", 3, 4, at(600))
    # Claimed: another worker does not get it until the lease ends.
    assert [d.chat_id for d in await schedule.claim_due(at(700), lease_until=at(1000), limit=10)] == ["c2"]
    again = await schedule.claim_due(at(940), lease_until=at(1240), limit=10)
    assert [(d.chat_id, d.first_seq, d.last_seq) for d in again] == [("c1", 3, 4)]


async def test_finish_keeps_messages_that_came_after_the_claim(schedule: DigestSchedule) -> None:
    await schedule.schedule("bob", "c1", seq=1, due_at=at(600))
    (digest,) = await schedule.claim_due(at(600), lease_until=at(900), limit=10)
    await schedule.schedule("bob", "c1", seq=2, due_at=at(610))
    await schedule.finish(digest, next_due_at=at(1200))
    (rest,) = await schedule.claim_due(at(1200), lease_until=at(1500), limit=10)
    assert (rest.first_seq, rest.last_seq) == (2, 2)
    await schedule.finish(rest, next_due_at=at(9999))
    assert await schedule.next_due() is None


async def test_reads_cancel_or_trim_and_postpone_moves(schedule: DigestSchedule) -> None:
    await schedule.schedule("bob", "c1", seq=1, due_at=at(600))
    await schedule.schedule("bob", "c1", seq=5, due_at=at(600))
    await schedule.cancel("bob", "c1", read_seq=2)
    await schedule.postpone("bob", "c1", due_at=at(800))
    await schedule.postpone("nobody", "c1", due_at=at(1))
    (digest,) = await schedule.claim_due(at(800), lease_until=at(900), limit=10)
    assert (digest.first_seq, digest.last_seq, digest.due_at) == (3, 5, at(800))
    await schedule.cancel("bob", "c1", read_seq=5)
    assert await schedule.next_due() is None
    await schedule.schedule("bob", "c1", seq=6, due_at=at(1000))
    await schedule.cancel("bob", "c1")
    assert await schedule.next_due() is None


async def test_records_are_claimed_once_and_released_on_failure(schedule: DigestSchedule) -> None:
    assert await schedule.claim_record("r1", now=at(0), lease_until=at(300))
    assert not await schedule.claim_record("r1", now=at(10), lease_until=at(310))
    assert await schedule.claim_record("r1", now=at(300), lease_until=at(600))  # the lease ran out
    await schedule.release_record("r1")
    assert await schedule.claim_record("r1", now=at(301), lease_until=at(601))
    await schedule.finish_record("r1", now=at(302))
    assert not await schedule.claim_record("r1", now=at(10_000), lease_until=at(10_300))
    await schedule.release_record("r1")  # a finished record stays finished
    assert not await schedule.claim_record("r1", now=at(10_000), lease_until=at(10_300))


async def test_sends_positions_and_purge(schedule: DigestSchedule) -> None:
    for seconds, key in ((0, "c1"), (100, "c2"), (200, "c1")):
        await schedule.record_sent(
            SentMail(user_id="bob", kind="missed_messages", key=key, sent_at=at(seconds))
        )
    await schedule.record_sent(SentMail(user_id="bob", kind="added", key="g1", sent_at=at(150)))
    recent = await schedule.sent_since("bob", "missed_messages", at(100))
    assert [(m.key, m.sent_at) for m in recent] == [("c2", at(100)), ("c1", at(200))]
    assert await schedule.position("notifications") is None
    await schedule.set_position("notifications", 42)
    assert await schedule.position("notifications") == 42
    assert await schedule.claim_record("r1", now=at(0), lease_until=at(10))
    await schedule.finish_record("r1", now=at(0))
    assert await schedule.purge(before=at(150)) == 3  # two sends and one record
    assert len(await schedule.sent_since("bob", "missed_messages", at(0))) == 1


def test_the_notification_migration_follows_the_others() -> None:
    names = [(m.version, m.name) for m in MIGRATIONS]
    assert (3, "notifications") in names
    assert [v for v, _ in names] == list(range(1, len(names) + 1))


async def test_worker_on_a_sqlite_file_mails_one_digest_and_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    mailer = MemoryMailer()
    settings = NotificationSettings(missed_message_delay_s=600)
    async with sqlite_core(tmp_path / "chat.db", clock=clock) as core:
        service = core.service
        ann = (
            await service.create_user(
                CreateUserCommand(email="ann@example.com", display_name="Ann", email_verified=True)
            )
        ).id
        bob = (
            await service.create_user(
                CreateUserCommand(email="bob@example.com", display_name="Bob", email_verified=True)
            )
        ).id
        cy = (
            await service.create_user(
                CreateUserCommand(email="cy@example.com", display_name="Cy", email_verified=True)
            )
        ).id

        def worker() -> NotificationWorker:
            schedule = SqliteDigestSchedule(core.db)
            handler = NotificationHandler(
                NotificationDeps(
                    deps=service.deps,
                    schedule=schedule,
                    mailer=mailer,
                    unsubscribe_key=bytes(32),
                    settings=settings,
                )
            )
            return NotificationWorker(
                handler, schedule=schedule, clock=clock, feed=SqliteEventFeed(core.db), start_at="beginning"
            )

        first = worker()
        chat = (
            await service.create_group_chat(
                CreateGroupChatCommand(actor=ann, title="Plans", member_ids=[bob, cy])
            )
        ).id
        assert await first.pump() == 4  # three UserRegistered and the ChatCreated
        for body in ("one", "two", "three"):
            await service.send_message(SendMessageCommand(actor=ann, chat_id=chat, body=body))
        await service.mark_read(MarkReadCommand(actor=cy, chat_id=chat, seq=3))

        second = worker()  # a restart: the position and the schedule are in the file
        assert await second.pump() == 4
        assert await second.pump() == 0
        clock.advance(600)
        assert await second.tick() == 1
        digests = [m for m in mailer.sent if "unread" in m.subject]
        assert [(m.to, m.subject) for m in digests] == [("bob@example.com", "3 unread messages in Plans")]
        assert sorted(m.to for m in mailer.sent if "added you" in m.subject) == [
            "bob@example.com",
            "cy@example.com",
        ]
