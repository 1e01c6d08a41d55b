"""Presence: kept alive by touches, expired by the server, shown to chat members only."""

from __future__ import annotations

import pytest

from adapters.memory.kit import memory_core
from adapters.memory.presence import MemoryPresence
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.presence import GetChatPresence
from chatcore.application.profiles import CreateUserCommand
from chatcore.domain.errors import NotFound
from chatcore.testing.doubles import FakeClock


async def test_a_user_is_online_until_the_ttl_passes_without_a_touch() -> None:
    clock = FakeClock()
    core = memory_core(clock=clock)
    presence = MemoryPresence(clock, online_ttl_s=60)
    ann, bob, eve = [
        (await core.service.create_user(CreateUserCommand(email=f"{n}@example.com", display_name=n))).id
        for n in ("ann", "bob", "eve")
    ]
    chat = await core.service.create_group_chat(
        CreateGroupChatCommand(actor=ann, title="t", member_ids=[bob])
    )
    see = GetChatPresence(core.service.deps, presence)

    await presence.touch(bob)
    await presence.touch(eve)  # online, but not in the chat: not shown there
    assert (await see(ann, chat.id)).online == [bob]
    clock.advance(59)
    assert (await see(ann, chat.id)).online == [bob]
    clock.advance(2)
    assert (await see(ann, chat.id)).online == []
    with pytest.raises(NotFound):
        await see(eve, chat.id)
