"""Notification policy on the memory adapters and a fake clock: who gets which mail, and when."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.memory.kit import MemoryCore, memory_core
from adapters.memory.mail import MemoryMailer
from adapters.memory.notifications import MemoryDigestSchedule, MemoryEventFeed
from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand, OpenDirectChatCommand
from chatcore.application.groups import CreateGroupCommand, GroupMemberCommand
from chatcore.application.messages import MarkReadCommand, SendMessageCommand
from chatcore.application.notification_worker import NotificationWorker, run_notification_worker
from chatcore.application.notifications import (
    NotificationDeps,
    NotificationHandler,
    NotificationKind,
    NotificationSettings,
    Unsubscribe,
    UnsubscribeCommand,
    UnsubscribeTokens,
)
from chatcore.application.profiles import CreateUserCommand, UpdateProfileCommand
from chatcore.domain.errors import InvalidInput
from chatcore.ports.mail import Mail
from chatcore.testing.doubles import FakeClock

KEY = bytes(range(32))
DELAY_S = 600
SETTINGS = NotificationSettings(
    public_url="https://chat.example.com",
    app_name="Chatty",
    missed_message_delay_s=DELAY_S,
    digest_min_interval_s=1800,
    max_digests_per_user_per_hour=3,
    max_messages_per_digest=3,
)


class FlakyMailer(MemoryMailer):
    """Fails the next `failures` sends, then delivers."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def send(self, mail: Mail) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("smtp down")
        await super().send(mail)


@dataclass
class World:
    core: MemoryCore
    clock: FakeClock
    mailer: FlakyMailer
    schedule: MemoryDigestSchedule
    handler: NotificationHandler
    worker: NotificationWorker

    async def user(self, name: str, *, verified: bool = True) -> str:
        profile = await self.core.service.create_user(
            CreateUserCommand(email=f"{name}@example.com", display_name=name.title(), email_verified=verified)
        )
        return profile.id

    async def group_chat(self, owner: str, *members: str, title: str = "Plans") -> str:
        cmd = CreateGroupChatCommand(actor=owner, title=title, member_ids=list(members))
        return (await self.core.service.create_group_chat(cmd)).id

    async def send(self, actor: str, chat_id: str, body: str) -> int:
        result = await self.core.service.send_message(
            SendMessageCommand(actor=actor, chat_id=chat_id, body=body)
        )
        return result.message.seq

    async def read(self, actor: str, chat_id: str, seq: int) -> None:
        await self.core.service.mark_read(MarkReadCommand(actor=actor, chat_id=chat_id, seq=seq))

    async def settle(self) -> int:
        """Let the worker read everything committed, then mail what is due now."""
        await self.worker.pump()
        return await self.worker.tick()

    async def later(self, seconds: float) -> int:
        self.clock.advance(seconds)
        return await self.settle()

    def sent_to(self, email: str) -> list[Mail]:
        return [m for m in self.mailer.sent if m.to == email]


def make_world(settings: NotificationSettings = SETTINGS) -> World:
    clock = FakeClock()
    core = memory_core(clock=clock)
    mailer, schedule = FlakyMailer(), MemoryDigestSchedule()
    handler = NotificationHandler(
        NotificationDeps(
            deps=core.service.deps, schedule=schedule, mailer=mailer, unsubscribe_key=KEY, settings=settings
        )
    )
    worker = NotificationWorker(
        handler, schedule=schedule, clock=clock, feed=MemoryEventFeed(core.store), start_at="beginning"
    )
    return World(core, clock, mailer, schedule, handler, worker)


@pytest.fixture
def world() -> World:
    return make_world()


def unsubscribe_token(mail: Mail) -> str:
    url = next(line for line in mail.text.splitlines() if "/notifications/unsubscribe?" in line)
    assert url.startswith("https://chat.example.com/notifications/unsubscribe?token=")
    return parse_qs(urlsplit(url).query)["token"][0]


# -- "you were added" ----------------------------------------------------------------------------


async def test_members_of_a_new_group_chat_are_told_but_not_its_creator(world: World) -> None:
    ann, bob, cy = await world.user("ann"), await world.user("bob"), await world.user("cy")
    chat = await world.group_chat(ann, bob, cy, title="Trip to Lyon")
    await world.settle()

    assert sorted(m.to for m in world.mailer.sent) == ["bob@example.com", "cy@example.com"]
    (mail,) = world.sent_to("bob@example.com")
    assert mail.subject == "Ann added you to Trip to Lyon"
    assert 'Ann added you to the chat "Trip to Lyon" on Chatty.' in mail.text
    assert f"https://chat.example.com/chats/{chat}" in mail.text
    assert mail.html is not None and f'href="https://chat.example.com/chats/{chat}"' in mail.html
    assert unsubscribe_token(mail)


async def test_a_member_added_by_someone_else_is_told_with_the_group_name(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    group = await world.core.service.create_group(CreateGroupCommand(actor=ann, name="Climbers"))
    await world.core.service.add_group_member(GroupMemberCommand(actor=ann, group_id=group.id, user_id=bob))
    await world.settle()

    (mail,) = world.sent_to("bob@example.com")
    assert mail.subject == "Ann added you to Climbers"
    assert f"https://chat.example.com/groups/{group.id}" in mail.text

    chat = await world.group_chat(ann, title="Crag")
    world.mailer.sent.clear()
    await world.core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    await world.settle()
    (mail,) = world.sent_to("bob@example.com")
    assert mail.subject == "Ann added you to Crag"
    assert world.sent_to("ann@example.com") == []


async def test_direct_chats_and_self_made_groups_mail_nobody(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id=bob))
    await world.core.service.create_group(CreateGroupCommand(actor=ann, name="Solo"))
    await world.group_chat(ann, title="Notes to self")
    await world.settle()
    assert world.mailer.sent == []


async def test_added_mail_respects_the_preference_and_unverified_addresses(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    cy = await world.user("cy", verified=False)
    await world.core.service.update_my_profile(UpdateProfileCommand(actor=bob, notify_added=False))
    await world.group_chat(ann, bob, cy)
    await world.settle()
    assert world.mailer.sent == []


# -- missed-message digests -----------------------------------------------------------------------


async def test_read_before_the_delay_sends_nothing(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    await world.settle()
    world.mailer.sent.clear()
    seq = await world.send(ann, chat, "lunch?")
    await world.later(DELAY_S - 1)
    await world.read(bob, chat, seq)
    assert await world.later(DELAY_S * 10) == 0
    assert world.mailer.sent == []
    assert world.schedule.digests == {}


async def test_unread_messages_make_exactly_one_digest_per_chat(world: World) -> None:
    ann, bob, cy = await world.user("ann"), await world.user("bob"), await world.user("cy")
    plans = await world.group_chat(ann, bob, cy, title="Plans")
    other = await world.group_chat(cy, bob, title="Other")
    await world.settle()
    world.mailer.sent.clear()
    for i in range(5):
        await world.send(ann, plans, f"plan {i}")
        await world.later(10)
    await world.send(cy, plans, "sounds good")
    await world.send(cy, other, "hi bob")

    assert await world.later(DELAY_S - 60) == 0  # not due yet
    sent = await world.later(60)
    assert sent >= 1
    await world.later(DELAY_S)  # the second chat's digest, whatever the order
    bob_mails = sorted(world.sent_to("bob@example.com"), key=lambda m: m.subject)
    assert [m.subject for m in bob_mails] == ["1 unread message in Other", "6 unread messages in Plans"]
    plans_mail = bob_mails[1]
    # The newest three are shown (max_messages_per_digest=3), with their senders, oldest first.
    assert "plan 3" in plans_mail.text and "plan 4" in plans_mail.text and "sounds good" in plans_mail.text
    assert "plan 0" not in plans_mail.text and "... and 3 earlier messages." in plans_mail.text
    assert plans_mail.text.index("Ann (") < plans_mail.text.index("Cy (")
    assert f"https://chat.example.com/chats/{plans}" in plans_mail.text
    # Ann wrote most of it but has unread messages from Cy; Cy read by writing last.
    assert [m.subject for m in world.sent_to("ann@example.com")] == ["1 unread message in Plans"]
    assert world.sent_to("cy@example.com") == []
    assert await world.later(DELAY_S * 10) == 0


async def test_a_read_on_another_device_cancels_the_digest(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    await world.send(ann, chat, "one")
    seq = await world.send(ann, chat, "two")
    await world.settle()
    assert (bob, chat) in {(d.user_id, d.chat_id) for d in world.schedule.digests.values()}

    await world.read(bob, chat, seq)  # another device: only the read marker moves
    await world.worker.pump()
    assert world.schedule.digests == {}


async def test_the_read_marker_is_checked_when_the_digest_is_due(world: World) -> None:
    """Even if the read has not reached the worker yet, the digest looks at the marker itself."""
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    seq = await world.send(ann, chat, "one")
    await world.worker.pump()
    await world.read(bob, chat, seq)  # not pumped
    world.clock.advance(DELAY_S)
    assert await world.worker.tick() == 0
    assert [m.subject for m in world.sent_to("bob@example.com")] == ["Ann added you to Plans"]
    assert world.schedule.digests == {}


async def test_a_partial_read_mails_only_what_is_still_unread(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    first = await world.send(ann, chat, "first")
    await world.send(ann, chat, "second")
    await world.settle()
    await world.read(bob, chat, first)
    await world.later(DELAY_S)
    (digest,) = [m for m in world.sent_to("bob@example.com") if "unread" in m.subject]
    assert digest.subject == "1 unread message in Plans"
    assert "second" in digest.text and "first" not in digest.text


async def test_digests_are_throttled_per_chat_and_per_user(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chats = [await world.group_chat(ann, bob, title=f"Room {i}") for i in range(5)]
    await world.settle()
    world.mailer.sent.clear()

    await world.send(ann, chats[0], "a")
    await world.later(DELAY_S)
    assert len(world.sent_to("bob@example.com")) == 1
    # A new message in the same chat right after: at most one digest per 1800 s per chat.
    await world.send(ann, chats[0], "b")
    await world.later(DELAY_S)
    assert len(world.sent_to("bob@example.com")) == 1
    await world.later(1800 - DELAY_S)
    assert [m.subject for m in world.sent_to("bob@example.com")][-1] == "1 unread message in Room 0"
    assert len(world.sent_to("bob@example.com")) == 2

    # The per-user cap: 3 digests in any hour. Two were sent in the last hour; four more chats wait.
    for chat in chats[1:]:
        await world.send(ann, chat, "ping")
    await world.later(DELAY_S)
    assert len(world.sent_to("bob@example.com")) == 3
    pending = len(world.schedule.digests)
    assert pending == 3  # postponed, not dropped
    await world.later(3600)
    await world.later(3600)
    assert len(world.sent_to("bob@example.com")) == 6
    assert world.schedule.digests == {}


async def test_preference_off_means_no_digest_and_turning_it_off_later_cancels(world: World) -> None:
    ann, bob, cy = await world.user("ann"), await world.user("bob"), await world.user("cy")
    await world.core.service.update_my_profile(UpdateProfileCommand(actor=bob, notify_missed_messages=False))
    chat = await world.group_chat(ann, bob, cy)
    await world.send(ann, chat, "hello")
    await world.settle()
    profile = await world.core.service.get_my_profile(bob)
    assert (profile.notify_missed_messages, profile.notify_added) == (False, True)
    await world.core.service.update_my_profile(UpdateProfileCommand(actor=cy, notify_missed_messages=False))
    await world.later(DELAY_S)
    assert [m for m in world.mailer.sent if "unread" in m.subject] == []


async def test_deleted_messages_and_members_who_left_get_no_digest(world: World) -> None:
    ann, bob, cy = await world.user("ann"), await world.user("bob"), await world.user("cy")
    chat = await world.group_chat(ann, bob, cy)
    seq = await world.send(ann, chat, "oops")
    await world.core.service.delete_message(ann, chat, seq)
    await world.send(ann, chat, "for cy only")
    await world.core.service.remove_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    await world.later(DELAY_S)
    digests = [m for m in world.mailer.sent if "unread" in m.subject]
    assert [(m.to, m.subject) for m in digests] == [("cy@example.com", "1 unread message in Plans")]
    assert "oops" not in digests[0].text


async def test_a_direct_chat_digest_names_the_other_person(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat, _ = await world.core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id=bob))
    await world.send(ann, chat.id, "hey\nare you around?")
    await world.later(DELAY_S)
    (mail,) = world.sent_to("bob@example.com")
    assert mail.subject == "1 unread message from Ann"
    assert "  hey\n  are you around?" in mail.text


# -- idempotency and failures ---------------------------------------------------------------------


async def test_a_record_handled_twice_mails_once(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.group_chat(ann, bob)
    records = list(world.core.store.log)
    for record in records + records:
        await world.handler.handle(record)
    assert len(world.sent_to("bob@example.com")) == 1
    # The feed replayed from the start (a lost position) changes nothing either.
    world.schedule.positions.clear()
    await world.settle()
    assert len(world.sent_to("bob@example.com")) == 1


async def test_a_failed_send_is_retried_without_mailing_those_already_served(world: World) -> None:
    ann, bob, cy = await world.user("ann"), await world.user("bob"), await world.user("cy")
    await world.worker.pump()
    world.mailer.failures = 0
    await world.group_chat(ann, bob, cy)

    original = world.mailer.send
    calls: list[str] = []

    async def fail_for_cy(mail: Mail) -> None:
        calls.append(mail.to)
        if mail.to == "cy@example.com" and calls.count(mail.to) == 1:
            raise ConnectionError("smtp down")
        await original(mail)

    world.mailer.send = fail_for_cy  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await world.worker.pump()
    await world.worker.pump()  # the record comes again
    assert sorted(m.to for m in world.mailer.sent) == ["bob@example.com", "cy@example.com"]


async def test_a_digest_that_fails_to_send_is_retried_later(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    await world.send(ann, chat, "hello")
    await world.settle()
    world.mailer.sent.clear()
    world.mailer.failures = 1
    assert await world.later(DELAY_S) == 0
    assert len(world.schedule.digests) == 1
    assert await world.later(SETTINGS.retry_after_failure_s) == 1


async def test_a_poison_record_is_skipped_after_max_attempts() -> None:
    world = make_world()
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.group_chat(ann, bob)
    world.mailer.failures = 100
    for _ in range(4):
        with pytest.raises(ConnectionError):
            await world.worker.pump()
    await world.worker.pump()  # the fifth failure gives up on it
    position = await world.schedule.position("notifications")
    assert position == len(world.core.store.log)


async def test_a_new_worker_starts_at_the_end_of_the_feed(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.group_chat(ann, bob)
    fresh = MemoryDigestSchedule()
    late = NotificationWorker(
        world.handler, schedule=fresh, clock=world.clock, feed=MemoryEventFeed(world.core.store)
    )
    assert await late.pump() == 0
    await world.group_chat(ann, bob, title="Second")
    assert await late.pump() == 1  # only the new ChatCreated


# -- unsubscribe ---------------------------------------------------------------------------------


async def test_the_unsubscribe_link_turns_the_preference_off_without_login(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.group_chat(ann, bob)
    await world.send(ann, chat, "hello")
    await world.later(DELAY_S)
    added, digest = world.sent_to("bob@example.com")
    unsubscribe = Unsubscribe(world.core.service.deps, unsubscribe_key=KEY)

    result = await unsubscribe(UnsubscribeCommand(token=unsubscribe_token(digest)))
    assert result.kind == "missed_messages"
    profile = await world.core.service.get_my_profile(bob)
    assert (profile.notify_missed_messages, profile.notify_added) == (False, True)

    await unsubscribe(UnsubscribeCommand(token=unsubscribe_token(added)))
    profile = await world.core.service.get_my_profile(bob)
    assert (profile.notify_missed_messages, profile.notify_added) == (False, False)
    # Again: still fine, nothing changes.
    await unsubscribe(UnsubscribeCommand(token=unsubscribe_token(added)))

    await world.send(ann, chat, "still there?")
    await world.later(DELAY_S * 10)
    assert len(world.sent_to("bob@example.com")) == 2


def _tampered(token: str) -> list[str]:
    user, kind, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    other_user = UnsubscribeTokens(KEY).issue("someone-else", NotificationKind.ADDED).split(".")[0]
    return [
        f"{user}.{kind}.{flipped}",
        f"{other_user}.{kind}.{mac}",
        f"{user}.{'added' if kind == 'missed_messages' else 'missed_messages'}.{mac}",
        f"{user}.{kind}",
        "",
        "not-a-token",
        token + ".x",
        UnsubscribeTokens(bytes(32)).issue("id-000001", NotificationKind.ADDED),
    ]


async def test_a_tampered_unsubscribe_token_is_refused(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    await world.group_chat(ann, bob)
    await world.settle()
    (mail,) = world.sent_to("bob@example.com")
    unsubscribe = Unsubscribe(world.core.service.deps, unsubscribe_key=KEY)
    for bad in _tampered(unsubscribe_token(mail)):
        with pytest.raises(InvalidInput) as caught:
            await unsubscribe(UnsubscribeCommand(token=bad))
        assert caught.value.field == "token"
    profile = await world.core.service.get_my_profile(bob)
    assert profile.notify_added and profile.notify_missed_messages


def test_tokens_are_bound_to_user_and_kind() -> None:
    tokens = UnsubscribeTokens(KEY)
    token = tokens.issue("user-1", NotificationKind.MISSED_MESSAGES)
    assert tokens.verify(token) == ("user-1", NotificationKind.MISSED_MESSAGES)
    assert tokens.issue("user-1", NotificationKind.ADDED) != token
    assert "user-1" not in token  # opaque, though not secret
    with pytest.raises(ValueError, match="at least 32"):
        UnsubscribeTokens(b"short")


def test_settings_refuse_links_that_could_be_hijacked() -> None:
    for bad in ("ftp://x", "https://x/?q=1", "https://x/#f", "chat.example.com"):
        with pytest.raises(ValueError, match="public_url"):
            NotificationSettings(public_url=bad)
    with pytest.raises(ValueError, match="link paths"):
        NotificationSettings(unsubscribe_path="https://evil.example/")
    with pytest.raises(ValueError, match="at least 1"):
        NotificationSettings(missed_message_delay_s=0)


async def test_the_worker_loop_wakes_on_commit_and_stops_when_told(world: World) -> None:
    class Consumer:
        ran = False

        async def run(self, stop: asyncio.Event | None = None) -> None:
            assert stop is not None
            self.ran = True
            await stop.wait()

    worker = NotificationWorker(
        world.handler,
        schedule=world.schedule,
        clock=world.clock,
        feed=MemoryEventFeed(world.core.store),
        poll_interval_s=30,
        start_at="beginning",
    )
    stop, consumer = asyncio.Event(), Consumer()
    async with asyncio.timeout(5):
        task = asyncio.create_task(run_notification_worker(worker, consumer=consumer, stop=stop))
        ann, bob = await world.user("ann"), await world.user("bob")
        await world.group_chat(ann, bob)
        worker.wake()  # what the composition root's `committed` hook does
        while not world.mailer.sent:  # noqa: ASYNC110 - the loop runs in the same event loop
            await asyncio.sleep(0.01)
        stop.set()
        await task
    assert consumer.ran
    assert [m.to for m in world.mailer.sent] == ["bob@example.com"]
