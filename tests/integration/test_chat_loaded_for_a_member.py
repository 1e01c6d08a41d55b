"""A chat loaded for one member (`get_for_member`) in the adapters that narrow its members.

Such a chat lacks the other members, so the adapters refuse to save any change but `last_seq`:
a stray rename or member change must fail loudly, never rewrite the chat with one member.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.memory.store import MemoryStore
from adapters.memory.unit_of_work import MemoryUnitOfWork
from adapters.sqlite import SqliteDatabase, sqlite_uow_factory
from chatcore.domain.chats import Chat, ChatKind, ChatMember
from chatcore.ports.unit_of_work import UnitOfWorkFactory
from chatcore.testing.doubles import FakeClock, SequentialIds

NOW = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
# The last id needs escaping in a JSON path: SQLite takes its whole-document way for it.
MEMBERS = ("u1", "u2", 'odd "id".$[0]')


@pytest.fixture(params=["memory", "sqlite"])
async def uow(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UnitOfWorkFactory]:
    clock, ids = FakeClock(NOW), SequentialIds()
    if request.param == "memory":
        store = MemoryStore()
        yield lambda: MemoryUnitOfWork(store, clock, ids)
        return
    async with SqliteDatabase(tmp_path / "chatcore.db") as db:
        yield sqlite_uow_factory(db, clock, ids)


async def _stored_chat(uow: UnitOfWorkFactory, crowd: int = 0) -> Chat:
    """A chat of MEMBERS and `crowd` more: SQLite reads a large one without decoding its members."""
    chat = Chat("c1", ChatKind.GROUP, NOW, title="t", owner_id="u1")
    chat.members = {m: ChatMember(m, NOW) for m in (*MEMBERS, *(f"f{i}" for i in range(crowd)))}
    async with uow() as unit:
        await unit.chats.add(chat)
        await unit.commit()
    return chat


@pytest.mark.parametrize("crowd", [0, 200])
@pytest.mark.parametrize("member", [*MEMBERS, "stranger"])
async def test_only_the_seq_of_a_narrowed_chat_is_saved(
    uow: UnitOfWorkFactory, member: str, crowd: int
) -> None:
    chat = await _stored_chat(uow, crowd)
    async with uow() as unit:
        mine = await unit.chats.get_for_member("c1", member)
        assert mine is not None and (mine.title, mine.owner_id, mine.created_at) == ("t", "u1", NOW)
        assert mine.members == ({member: chat.members[member]} if member in chat.members else {})
        mine.next_seq()
        await unit.chats.save(mine)
        await unit.commit()
    async with uow() as unit:
        stored = await unit.chats.get("c1")
        assert stored is not None and (stored.last_seq, stored.members) == (1, chat.members)


@pytest.mark.parametrize("crowd", [0, 200])
@pytest.mark.parametrize("change", ["title", "members"])
async def test_any_other_change_to_a_narrowed_chat_is_refused(
    uow: UnitOfWorkFactory, change: str, crowd: int
) -> None:
    chat = await _stored_chat(uow, crowd)
    async with uow() as unit:
        mine = await unit.chats.get_for_member("c1", "u2")
        assert mine is not None
        if change == "title":
            mine.title = "renamed"
        else:
            del mine.members["u2"]
        with pytest.raises(ValueError, match="last_seq"):
            await unit.chats.save(mine)
    async with uow() as unit:
        assert await unit.chats.get("c1") == chat
