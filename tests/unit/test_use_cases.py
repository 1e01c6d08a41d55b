"""Use cases on the memory adapters: what a client sees when it calls them."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from adapters.memory.kit import MemoryCore, memory_core
from adapters.memory.rate_limit import MemoryRateLimiter
from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand, OpenDirectChatCommand
from chatcore.application.groups import CreateGroupCommand, GroupMemberCommand
from chatcore.application.messages import (
    EditMessageCommand,
    ListMessagesQuery,
    MarkReadCommand,
    SendMessageCommand,
)
from chatcore.application.profiles import CreateUserCommand, UpdateProfileCommand
from chatcore.application.service import ChatService
from chatcore.domain.errors import Conflict, Gone, InvalidInput, LimitExceeded, NotFound, RateLimited
from chatcore.domain.events import ChatUpdated, MessagePosted
from chatcore.domain.limits import Limits
from chatcore.testing.doubles import FakeClock


@pytest.fixture
def core() -> MemoryCore:
    return memory_core(limits=Limits(max_message_chars=20, max_page_size=10, default_page_size=4))


async def _users(core: MemoryCore, *names: str) -> list[str]:
    created = [
        await core.service.create_user(CreateUserCommand(email=f"{n}@example.com", display_name=n.title()))
        for n in names
    ]
    return [u.id for u in created]


async def _chat_with(core: MemoryCore, owner: str, *members: str) -> str:
    chat = await core.service.create_group_chat(
        CreateGroupChatCommand(actor=owner, title="chat", member_ids=list(members))
    )
    return chat.id


async def _send(core: MemoryCore, actor: str, chat_id: str, body: str, key: str | None = None) -> int:
    result = await core.service.send_message(
        SendMessageCommand(actor=actor, chat_id=chat_id, body=body, client_msg_id=key)
    )
    return result.message.seq


async def test_history_pages_back_from_newest_and_forward_from_a_seq(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat = await _chat_with(core, ann, bob)
    for i in range(10):
        await _send(core, ann, chat, f"m{i + 1}")
    list_messages = core.service.list_messages

    newest = await list_messages(ListMessagesQuery(actor=bob, chat_id=chat))
    assert [m.seq for m in newest.messages] == [7, 8, 9, 10]
    assert newest.has_more
    older = await list_messages(ListMessagesQuery(actor=bob, chat_id=chat, before=7, limit=10))
    assert [m.seq for m in older.messages] == [1, 2, 3, 4, 5, 6]
    assert not older.has_more
    forward = await list_messages(ListMessagesQuery(actor=bob, chat_id=chat, after=2, limit=3))
    assert [m.seq for m in forward.messages] == [3, 4, 5]
    assert forward.has_more
    tail = await list_messages(ListMessagesQuery(actor=bob, chat_id=chat, after=8, limit=3))
    assert ([m.seq for m in tail.messages], tail.has_more) == ([9, 10], False)


@pytest.mark.parametrize(("limit", "field"), [(0, "limit"), (11, "limit")])
async def test_page_size_outside_the_limits_names_the_field(core: MemoryCore, limit: int, field: str) -> None:
    (ann,) = await _users(core, "ann")
    chat = await _chat_with(core, ann)
    with pytest.raises(InvalidInput) as caught:
        await core.service.list_messages(ListMessagesQuery(actor=ann, chat_id=chat, limit=limit))
    assert caught.value.field == field
    page = await core.service.list_messages(ListMessagesQuery(actor=ann, chat_id=chat, limit=10))
    assert page.messages == []


async def test_message_length_limit_passes_and_limit_plus_one_is_refused(core: MemoryCore) -> None:
    (ann,) = await _users(core, "ann")
    chat = await _chat_with(core, ann)
    assert await _send(core, ann, chat, "x" * 20) == 1
    with pytest.raises(LimitExceeded) as caught:
        await _send(core, ann, chat, "x" * 21)
    assert (caught.value.field, caught.value.limit) == ("body", 20)
    assert await _send(core, ann, chat, "ok") == 2  # the refused send consumed no seq


async def test_retried_send_returns_the_original_and_another_body_is_refused(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat = await _chat_with(core, ann, bob)
    first = await core.service.send_message(
        SendMessageCommand(actor=ann, chat_id=chat, body="hello", client_msg_id="k1")
    )
    again = await core.service.send_message(
        SendMessageCommand(actor=ann, chat_id=chat, body="hello", client_msg_id="k1")
    )
    assert (first.created, again.created) == (True, False)
    assert again.message == first.message
    with pytest.raises(InvalidInput) as caught:
        await _send(core, ann, chat, "other body", key="k1")
    assert caught.value.field == "client_msg_id"
    assert await _send(core, bob, chat, "hello", key="k1") == 2  # keys are per sender


async def test_fifty_concurrent_duplicate_sends_store_one_message_and_one_event(core: MemoryCore) -> None:
    (ann,) = await _users(core, "ann")
    chat = await _chat_with(core, ann)
    command = SendMessageCommand(actor=ann, chat_id=chat, body="once", client_msg_id="dup")
    results = await asyncio.gather(*(core.service.send_message(command) for _ in range(50)))
    assert sum(r.created for r in results) == 1
    assert {r.message.seq for r in results} == {1}
    posted = [r for r in core.store.log if isinstance(r.event, MessagePosted)]
    assert len(posted) == 1


async def test_my_chats_show_unread_counts_last_message_and_newest_first(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    quiet = await _chat_with(core, ann, bob)
    busy = await _chat_with(core, ann, bob)
    assert isinstance(core.clock, FakeClock)
    core.clock.advance(60)
    for body in ("a", "b", "c"):
        await _send(core, ann, busy, body)
    await _send(core, bob, busy, "mine")

    summaries = await core.service.list_my_chats(bob)
    assert [s.chat.id for s in summaries] == [busy, quiet]
    assert summaries[0].unread_count == 3  # bob's own message does not count
    assert summaries[0].last_message is not None and summaries[0].last_message.body == "mine"
    assert (summaries[1].unread_count, summaries[1].last_message) == (0, None)

    marker = await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=busy, seq=2))
    assert (marker.seq, marker.unread_count) == (2, 1)
    back = await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=busy, seq=1))
    assert back.seq == 2  # markers never move back
    with pytest.raises(InvalidInput) as caught:
        await core.service.mark_read(MarkReadCommand(actor=bob, chat_id=busy, seq=5))
    assert caught.value.field == "seq"


async def test_edit_keeps_history_and_delete_answers_gone(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat = await _chat_with(core, ann, bob)
    seq = await _send(core, bob, chat, "draft")
    edited = await core.service.edit_message(
        EditMessageCommand(actor=bob, chat_id=chat, seq=seq, body="final")
    )
    assert (edited.body, edited.edited_at is not None) == ("final", True)
    history = await core.service.get_edit_history(ann, chat, seq)
    assert [h.body for h in history] == ["draft"]
    await core.service.delete_message(ann, chat, seq)  # the chat owner deletes any message
    with pytest.raises(Gone):
        await core.service.get_message(bob, chat, seq)
    page = await core.service.list_messages(ListMessagesQuery(actor=bob, chat_id=chat))
    assert [(m.seq, m.body, m.deleted) for m in page.messages] == [(1, "", True)]


async def test_opening_a_direct_chat_twice_returns_the_same_chat(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    first, created = await core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id=bob))
    second, created_again = await core.service.open_direct_chat(OpenDirectChatCommand(actor=bob, user_id=ann))
    assert (first.id, created, created_again) == (second.id, True, False)
    with pytest.raises(InvalidInput):
        await core.service.open_direct_chat(OpenDirectChatCommand(actor=ann, user_id="nobody"))


async def test_unknown_user_cannot_be_added_and_outsider_sees_nothing(core: MemoryCore) -> None:
    ann, bob, eve = await _users(core, "ann", "bob", "eve")
    chat = await _chat_with(core, ann, bob)
    with pytest.raises(InvalidInput) as caught:
        await core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id="ghost"))
    assert caught.value.field == "user_id"
    for attempt in (
        core.service.get_chat(eve, chat),
        core.service.list_messages(ListMessagesQuery(actor=eve, chat_id=chat)),
        core.service.send_message(SendMessageCommand(actor=eve, chat_id=chat, body="hi")),
        core.service.get_chat(eve, "no-such-chat"),
    ):
        with pytest.raises(NotFound) as missing:
            await attempt
        assert str(missing.value) == "chat not found"


async def test_deleting_a_group_keeps_its_chats_as_standalone(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    group = await core.service.create_group(CreateGroupCommand(actor=ann, name="Team"))
    await core.service.add_group_member(GroupMemberCommand(actor=ann, group_id=group.id, user_id=bob))
    chat = await core.service.create_group_chat(
        CreateGroupChatCommand(actor=bob, title="side", member_ids=[ann], group_id=group.id)
    )
    await core.service.delete_group(ann, group.id)
    after = await core.service.get_chat(ann, chat.id)
    assert (after.group_id, after.owner_id) == (None, bob)
    assert any(isinstance(r.event, ChatUpdated) and r.stream_id == chat.id for r in core.store.log)
    with pytest.raises(NotFound):
        await core.service.get_group(ann, group.id)
    assert await _send(core, ann, chat.id, "still here") == 1


async def test_email_is_unique_after_normalisation(core: MemoryCore) -> None:
    await core.service.create_user(CreateUserCommand(email="Ann@Example.COM", display_name="Ann"))
    with pytest.raises(Conflict):
        await core.service.create_user(CreateUserCommand(email=" ann@example.com", display_name="Other"))


async def test_profile_update_validates_and_hides_email_from_others(core: MemoryCore) -> None:
    (ann,) = await _users(core, "ann")
    with pytest.raises(InvalidInput) as caught:
        await core.service.update_my_profile(
            UpdateProfileCommand(actor=ann, display_name="Ann\r\nBcc: x@evil")
        )
    assert caught.value.field == "display_name"
    await core.service.update_my_profile(UpdateProfileCommand(actor=ann, display_name="Ann B", bio="hi"))
    public = await core.service.get_public_profile(ann)
    assert (public.display_name, public.bio) == ("Ann B", "hi")
    assert not hasattr(public, "email")


async def test_relay_publishes_committed_events_to_subscribers(core: MemoryCore) -> None:
    ann, bob = await _users(core, "ann", "bob")
    chat = await _chat_with(core, ann, bob)
    subscription = core.bus.subscribe([chat])
    await _send(core, ann, chat, "live")
    record = await asyncio.wait_for(anext(aiter(subscription)), 1)
    assert isinstance(record.event, MessagePosted)
    assert (record.stream_id, record.event.body) == (chat, "live")
    assert await core.log.undispatched(10) == []
    await subscription.close()


@pytest.mark.parametrize(
    "name",
    ["Bob\r\nBcc: x@evil.example", "Bob\u2028Eve", "=?utf-8?q?Bob=0D=0ABcc:_x@evil?=", "\u202eevil"],
)
async def test_names_that_could_forge_mail_headers_are_refused(core: MemoryCore, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await core.service.create_user(CreateUserCommand(email="bob@example.com", display_name=name))
    assert caught.value.field == "display_name"
    assert core.store.users == {}


async def test_a_burst_of_sends_beyond_the_bucket_is_refused_with_retry_after() -> None:
    clock = FakeClock()
    core = memory_core(clock=clock)
    limited = ChatService(dataclasses.replace(core.service.deps, limiter=MemoryRateLimiter(clock)))
    (ann,) = await _users(core, "ann")
    chat = await _chat_with(core, ann)
    burst = core.service.deps.rates.send.burst
    for i in range(burst):
        await limited.send_message(SendMessageCommand(actor=ann, chat_id=chat, body=f"m{i}"))
    with pytest.raises(RateLimited) as caught:
        await limited.send_message(SendMessageCommand(actor=ann, chat_id=chat, body="one too many"))
    assert caught.value.retry_after_s >= 1
    clock.advance(1)
    await limited.send_message(SendMessageCommand(actor=ann, chat_id=chat, body="after a second"))
    assert (await limited.get_chat(ann, chat)).last_seq == burst + 1  # the refused send took no seq
