"""The transport-free real-time session: frames in, acks and events out, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import pytest

from adapters.memory.kit import MemoryCore, memory_core
from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
from chatcore.application.messages import SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.realtime import (
    AckFrame,
    AnyServerFrame,
    EventFrame,
    PingFrame,
    ReadFrame,
    RealtimeSession,
    SendFrame,
    encode_frame,
)
from chatcore.application.service import ChatService
from chatcore.application.updates import CursorCodec, GetUpdates
from chatcore.domain.errors import NotFound
from chatcore.domain.events import ChatMemberAdded, ChatMemberRemoved, MessagePosted, SessionsRevoked
from chatcore.domain.limits import Limits


class World:
    def __init__(self, core: MemoryCore | None = None) -> None:
        self.core: MemoryCore = core or memory_core()
        self.service = self.core.service
        self.updates = GetUpdates(self.service.deps, self.core.log, CursorCodec(b"r" * 32, 1 << 15))

    def session(self, actor: str) -> RealtimeSession:
        return RealtimeSession(actor, self.service, self.updates, self.core.bus)

    async def user(self, name: str) -> str:
        return (
            await self.service.create_user(CreateUserCommand(email=f"{name}@example.com", display_name=name))
        ).id

    async def chat(self, owner: str, *members: str) -> str:
        command = CreateGroupChatCommand(actor=owner, title="t", member_ids=list(members))
        return (await self.service.create_group_chat(command)).id

    async def send(self, actor: str, chat: str, body: str, service: ChatService | None = None) -> None:
        await (service or self.service).send_message(SendMessageCommand(actor=actor, chat_id=chat, body=body))


async def frames_until(session: RealtimeSession, count: int, wait_s: float = 2.0) -> list[EventFrame]:
    got: list[EventFrame] = []
    while len(got) < count:
        batch: list[AnyServerFrame] = await asyncio.wait_for(session.next_frames(), wait_s)
        got += [f for f in batch if isinstance(f, EventFrame)]
    return got


def bodies(frames: list[EventFrame]) -> list[str]:
    return [f.record.event.body for f in frames if isinstance(f.record.event, MessagePosted)]


@pytest.fixture
def world() -> World:
    return World()


async def test_live_events_then_resume_from_the_last_cursor_after_a_drop(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    session = world.session(bob)
    assert await session.open(None) == []
    await world.send(ann, chat, "one")
    (first,) = await frames_until(session, 1)
    await session.close()  # the connection drops

    for body in ("two", "three"):
        await world.send(ann, chat, body)
    again = world.session(bob)
    missed = await again.open(first.cursor)
    assert bodies([f for f in missed if isinstance(f, EventFrame)]) == ["two", "three"]
    await world.send(ann, chat, "four")
    assert bodies(await frames_until(again, 1)) == ["four"]
    await again.close()


async def test_send_frames_are_acknowledged_and_retries_find_the_original(world: World) -> None:
    ann = await world.user("ann")
    chat = await world.chat(ann)
    session = world.session(ann)
    await session.open(None)
    frame = SendFrame(id="f1", chat_id=chat, body="hello", client_msg_id="k1")
    ack = await session.handle(frame)
    retry = await session.handle(msgspec.structs.replace(frame, id="f2"))
    assert (ack.id, ack.created, retry.id, retry.created) == ("f1", True, "f2", False)
    assert ack.message is not None and retry.message == ack.message
    marker = await session.handle(ReadFrame(id="f3", chat_id=chat, seq=1))
    assert marker.read_marker is not None and marker.read_marker.seq == 1
    assert (await session.handle(PingFrame(id="p"))).id == "p"
    await session.close()


async def test_frames_on_a_foreign_chat_get_not_found(world: World) -> None:
    ann, eve = await world.user("ann"), await world.user("eve")
    chat = await world.chat(ann)
    session = world.session(eve)
    await session.open(None)
    with pytest.raises(NotFound):
        await session.handle(SendFrame(id="x", chat_id=chat, body="let me in"))
    with pytest.raises(NotFound):
        await session.handle(ReadFrame(id="y", chat_id=chat, seq=0))
    await session.close()


async def test_a_chat_joined_while_connected_streams_from_the_join(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann)
    await world.send(ann, chat, "before bob")
    session = world.session(bob)
    await session.open(None)
    await world.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    await world.send(ann, chat, "hi bob")
    frames = await frames_until(session, 2)
    assert isinstance(frames[0].record.event, ChatMemberAdded)
    assert bodies(frames) == ["hi bob"]
    await session.close()


async def test_a_removed_member_gets_the_removal_and_then_nothing(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    session = world.session(bob)
    await session.open(None)
    await world.service.remove_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    (removal,) = await frames_until(session, 1)
    assert isinstance(removal.record.event, ChatMemberRemoved)
    await world.send(ann, chat, "secret")
    with pytest.raises(TimeoutError):
        await frames_until(session, 1, wait_s=0.3)
    resumed = world.session(bob)
    assert await resumed.open(removal.cursor) == []
    await session.close()
    await resumed.close()


async def test_a_lost_wake_up_is_recovered_from_the_log_in_order(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    session = world.session(bob)
    await session.open(None)
    # A sender whose commits never reach the bus: as if the broker dropped the message.
    silent = ChatService(dataclasses.replace(world.service.deps, committed=_nothing))
    await world.send(ann, chat, "lost on the bus", service=silent)
    await world.send(ann, chat, "arrives")
    assert bodies(await frames_until(session, 2)) == ["lost on the bus", "arrives"]
    await session.close()


async def test_a_repeated_wake_up_delivers_nothing_twice(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    session = world.session(bob)
    await session.open(None)
    await world.send(ann, chat, "once")
    (frame,) = await frames_until(session, 1)
    await world.core.bus.publish([frame.record])  # the relay may publish again after a crash
    assert await asyncio.wait_for(session.next_frames(), 1) == []
    await session.close()


async def _nothing(records: object) -> None:
    return None


async def test_arrivals_beyond_the_backlog_are_read_from_the_log_in_order() -> None:
    # A session holds live arrivals (until attached, or while it reads the log) in a backlog
    # bounded by the page size; beyond it, it forgets them and reads the log instead.
    world = World(memory_core(limits=Limits(max_updates_per_page=2)))
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    session = world.session(bob)
    await session.open(None)
    for body in ("a", "b", "c", "d", "e"):
        await world.send(ann, chat, body)
    assert bodies(await frames_until(session, 5)) == ["a", "b", "c", "d", "e"]
    await world.send(ann, chat, "live")
    assert bodies(await frames_until(session, 1)) == ["live"]
    await session.close()


async def test_a_resume_more_than_a_page_behind_reads_on_without_a_live_event() -> None:
    # `open` returns the first page of what was missed; the rest must follow by itself, not
    # wait for the next message to wake the session (a quiet chat would never send the rest).
    world = World(memory_core(limits=Limits(max_updates_per_page=2)))
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    first = world.session(bob)
    cursor = first.cursor if await first.open(None) == [] else None
    await first.close()
    assert cursor is not None
    for body in ("a", "b", "c", "d", "e"):
        await world.send(ann, chat, body)
    again = world.session(bob)
    page = [f for f in await again.open(cursor) if isinstance(f, EventFrame)]
    assert len(page) == 2  # only a page came with `open`
    rest = await frames_until(again, 3)
    assert bodies(page + rest) == ["a", "b", "c", "d", "e"]
    await again.close()


async def test_an_event_frame_is_spliced_byte_for_byte_like_msgspec(world: World) -> None:
    ann, bob = await world.user("ann"), await world.user("bob")
    chat = await world.chat(ann, bob)
    sessions = [world.session(ann), world.session(bob)]
    for session in sessions:
        await session.open(None)
    await world.send(ann, chat, 'quote " and \\ and é')
    for session in sessions:
        (frame,) = await frames_until(session, 1)
        for _ in range(2):  # encoded, then from the shared encoding of the record
            assert encode_frame(frame) == msgspec.json.encode(frame)
        await session.close()
    assert encode_frame(PingAck) == msgspec.json.encode(PingAck)


PingAck = AckFrame(id="p")


async def test_a_revoked_login_ends_its_connection_and_spares_the_kept_one(world: World) -> None:
    ann = await world.user("ann")
    phone = RealtimeSession(ann, world.service, world.updates, world.core.bus, session_id="s-phone")
    laptop = RealtimeSession(ann, world.service, world.updates, world.core.bus, session_id="s-laptop")
    await phone.open(None)
    await laptop.open(None)
    async with world.service.deps.uow() as uow:
        uow.record(
            SessionsRevoked(
                user_id=ann, session_id=None, kept_session_id="s-laptop", reason="password_changed"
            )
        )
        records = await uow.commit()
    await world.service.deps.committed(records)
    await frames_until(phone, 1)
    await frames_until(laptop, 1)
    assert (phone.ended, laptop.ended) == (True, False)
    await phone.close()
    await laptop.close()
