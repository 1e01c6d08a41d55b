"""The resumable cursor and long-polling, on the memory adapters."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import zlib

import msgspec
import pytest

from adapters.memory.kit import MemoryCore, memory_core
from chatcore.application.chats import ChatMemberCommand, CreateGroupChatCommand
from chatcore.application.messages import SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.updates import CursorCodec, GetUpdates, UpdatesPage, WaitForUpdates
from chatcore.domain.errors import InvalidInput, LimitExceeded
from chatcore.domain.events import ChatMemberAdded, ChatMemberRemoved, MessagePosted


class Updates:
    def __init__(self, core: MemoryCore) -> None:
        self.core = core
        self.codec = CursorCodec(b"k" * 32, core.service.deps.limits.max_cursor_chars)
        self.get = GetUpdates(core.service.deps, core.log, self.codec)
        self.wait = WaitForUpdates(core.service.deps, self.get, core.bus)

    async def user(self, name: str) -> str:
        return (
            await self.core.service.create_user(
                CreateUserCommand(email=f"{name}@example.com", display_name=name)
            )
        ).id

    async def chat(self, owner: str, *members: str) -> str:
        return (
            await self.core.service.create_group_chat(
                CreateGroupChatCommand(actor=owner, title="t", member_ids=list(members))
            )
        ).id

    async def send(self, actor: str, chat: str, body: str) -> None:
        await self.core.service.send_message(SendMessageCommand(actor=actor, chat_id=chat, body=body))


def bodies(page: UpdatesPage) -> list[str]:
    return [r.event.body for r in page.events if isinstance(r.event, MessagePosted)]


@pytest.fixture
def up() -> Updates:
    return Updates(memory_core())


async def test_a_new_cursor_starts_now_and_then_yields_each_later_event_once(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    await up.send(ann, chat, "before")
    start = await up.get(bob, None)
    assert start.events == []
    await up.send(ann, chat, "one")
    await up.send(bob, chat, "two")
    page = await up.get(bob, start.cursor)
    assert bodies(page) == ["one", "two"]
    assert (await up.get(bob, page.cursor)).events == []
    again = await up.get(bob, start.cursor)  # an old cursor replays from where it stood
    assert bodies(again) == ["one", "two"]


async def test_reconnect_with_cursor_gets_missed_events_in_order_across_pages(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chats = [await up.chat(ann, bob) for _ in range(3)]
    cursor = (await up.get(bob, None)).cursor
    for i in range(30):
        await up.send(ann, chats[i % 3], f"m{i}")
    seen: dict[str, list[int]] = {c: [] for c in chats}
    while True:
        page = await up.get(bob, cursor, limit=7)
        assert len(page.events) <= 7
        for record in page.events:
            seen[record.stream_id].append(record.seq)
        cursor = page.cursor
        if not page.has_more:
            break
    for chat in chats:
        last = await up.core.log.last_seq(chat)
        assert seen[chat] == list(range(last - 9, last + 1))  # the 10 messages of each chat, no gap


async def test_a_chat_joined_later_starts_at_the_join(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann)
    await up.send(ann, chat, "private history")
    cursor = (await up.get(bob, None)).cursor
    await up.core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    await up.send(ann, chat, "welcome")
    page = await up.get(bob, cursor)
    assert isinstance(page.events[0].event, ChatMemberAdded)
    assert bodies(page) == ["welcome"]


async def test_a_removed_member_gets_the_removal_and_nothing_after(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor
    await up.send(ann, chat, "last you see")
    await up.core.service.remove_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    await up.send(ann, chat, "secret")
    page = await up.get(bob, cursor)
    assert bodies(page) == ["last you see"]
    assert isinstance(page.events[-1].event, ChatMemberRemoved)
    await up.send(ann, chat, "more secret")
    assert (await up.get(bob, page.cursor)).events == []


async def test_a_cursor_of_another_user_or_tampered_is_refused(up: Updates) -> None:
    ann, eve = await up.user("ann"), await up.user("eve")
    cursor = (await up.get(ann, None)).cursor
    for forged in (cursor, cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"), "not-a-cursor", ""):
        user = eve if forged == cursor else ann
        with pytest.raises(InvalidInput) as caught:
            await up.get(user, forged)
        assert caught.value.field == "cursor"
    with pytest.raises(LimitExceeded):
        await up.get(ann, "A" * (up.core.service.deps.limits.max_cursor_chars + 1))


async def test_events_pruned_from_the_log_ask_for_a_resync(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor
    for body in ("a", "b", "c"):
        await up.send(ann, chat, body)
    # Retention dropped the first of the missed events.
    first = next(r for r in up.core.store.log if isinstance(r.event, MessagePosted))
    up.core.store.log.remove(first)
    page = await up.get(bob, cursor)
    assert page.resync_required == [chat]
    assert page.events == []
    assert (await up.get(bob, page.cursor)).resync_required == []


async def test_long_poll_answers_early_on_an_event_and_empty_at_the_timeout(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor

    started = time.monotonic()
    empty = await up.wait(bob, cursor, timeout_s=0.2)
    assert empty.events == []
    assert 0.15 <= time.monotonic() - started < 2

    waiting = asyncio.create_task(up.wait(bob, cursor, timeout_s=10))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await up.send(ann, chat, "wake up")
    page = await asyncio.wait_for(waiting, 2)
    assert bodies(page) == ["wake up"]


async def test_long_poll_wakes_when_the_user_is_added_to_a_new_chat(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann)
    cursor = (await up.get(bob, None)).cursor
    waiting = asyncio.create_task(up.wait(bob, cursor, timeout_s=10))
    await asyncio.sleep(0.05)
    await up.core.service.add_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    page = await asyncio.wait_for(waiting, 2)
    assert [type(r.event) for r in page.events] == [ChatMemberAdded]


async def test_long_poll_timeout_is_bounded_by_the_setting(up: Updates) -> None:
    ann = await up.user("ann")
    with pytest.raises(InvalidInput) as caught:
        await up.wait(ann, None, timeout_s=up.core.service.deps.limits.max_long_poll_s + 1)
    assert caught.value.field == "timeout"


async def test_a_page_cut_short_after_a_removal_never_resumes_inside_that_chat(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor
    await up.core.service.remove_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    for body in ("secret 1", "secret 2", "secret 3"):
        await up.send(ann, chat, body)
    delivered = []
    for _ in range(5):
        page = await up.get(bob, cursor, limit=1)
        delivered += page.events
        cursor = page.cursor
    assert [type(r.event) for r in delivered] == [ChatMemberRemoved]


def _legacy_cursor(key: bytes, user: str, positions: dict[str, int]) -> str:
    """A cursor as version 1 wrote it (HMAC-SHA256 over zlib): issued before an upgrade."""
    body = zlib.compress(msgspec.json.encode([1, positions]), 6)
    mac = hmac.new(key, user.encode() + b"\0" + body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + body).rstrip(b"=").decode()


def test_cursor_round_trips_small_and_large_and_reads_version_1(up: Updates) -> None:
    small = {"u1": 3, "c1": -7}
    large = {f"01JD3K5Q8Z9V1XW2Y3Z4A5B{i:03d}": i for i in range(200)}  # deflated above 512 bytes
    for positions in (small, large, {}):
        assert up.codec.decode("u1", up.codec.encode("u1", positions)) == positions
    assert len(up.codec.encode("u1", large)) < len(msgspec.json.encode(large)) * 4 // 3
    assert up.codec.decode("u1", _legacy_cursor(b"k" * 32, "u1", small)) == small
    with pytest.raises(InvalidInput):  # bound to its user, whichever version
        up.codec.decode("u2", _legacy_cursor(b"k" * 32, "u1", small))
    with pytest.raises(InvalidInput):  # another key
        up.codec.decode("u1", _legacy_cursor(b"x" * 32, "u1", small))


def test_an_unknown_cursor_format_is_invalid_input_not_a_crash(up: Updates) -> None:
    token = up.codec.encode("u1", {"c": 1})
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for form in (0, 1, 4, 255):  # a format byte nobody wrote, with the rest intact
        raw[0] = form
        forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        with pytest.raises(InvalidInput) as caught:
            up.codec.decode("u1", forged)
        assert caught.value.field == "cursor"


class _CountingLog:
    """The memory log, counting reads: a live wake-up must not need one."""

    def __init__(self, inner: object) -> None:
        self._inner, self.reads = inner, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def read(self, *args: object, **kwargs: object) -> object:
        self.reads += 1
        return await self._inner.read(*args, **kwargs)  # type: ignore[attr-defined]


async def test_long_poll_answers_the_next_event_from_the_bus_without_reading_the_log() -> None:
    core = memory_core()
    up = Updates(core)
    log = _CountingLog(core.log)
    wait = WaitForUpdates(core.service.deps, GetUpdates(core.service.deps, log, up.codec), core.bus)  # type: ignore[arg-type]
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor
    waiting = asyncio.create_task(wait(bob, cursor, timeout_s=10))
    await asyncio.sleep(0.05)
    reads = log.reads  # the initial read of each stream
    await up.send(ann, chat, "live")
    page = await asyncio.wait_for(waiting, 2)
    assert bodies(page) == ["live"] and log.reads == reads
    await up.send(ann, chat, "next")
    assert bodies(await up.get(bob, page.cursor)) == ["next"]  # the page's cursor is exact


async def test_long_poll_of_a_removal_shuts_the_chat_out_of_the_cursor(up: Updates) -> None:
    ann, bob = await up.user("ann"), await up.user("bob")
    chat = await up.chat(ann, bob)
    cursor = (await up.get(bob, None)).cursor
    waiting = asyncio.create_task(up.wait(bob, cursor, timeout_s=10))
    await asyncio.sleep(0.05)
    await up.core.service.remove_chat_member(ChatMemberCommand(actor=ann, chat_id=chat, user_id=bob))
    page = await asyncio.wait_for(waiting, 2)
    assert [type(r.event) for r in page.events] == [ChatMemberRemoved]
    await up.send(ann, chat, "secret")
    assert (await up.wait(bob, page.cursor, timeout_s=0.2)).events == []
