"""The storage contract: repositories, unit of work and event log behave as the memory adapter does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.common import Deps
from chatcore.application.messages import ListMessagesQuery, SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.service import ChatService
from chatcore.domain.chats import Chat, direct_key
from chatcore.domain.events import ChatMemberAdded, MessagePosted, ProfileUpdated
from chatcore.domain.groups import ADMIN_ROLE_ID, Group
from chatcore.domain.limits import Limits
from chatcore.domain.messages import Message, MessageEdit, ReadMarker
from chatcore.domain.permissions import Permission
from chatcore.domain.users import PasswordCredential, User
from chatcore.ports.errors import DuplicateKey
from chatcore.ports.system import IdGenerator
from chatcore.ports.unit_of_work import EventLog, UnitOfWorkFactory
from chatcore.testing.doubles import FakeClock, SequentialIds


@dataclass
class StorageUnderTest:
    uow: UnitOfWorkFactory
    log: EventLog
    clock: FakeClock = field(default_factory=FakeClock)
    ids: IdGenerator = field(default_factory=SequentialIds)

    def service(self, limits: Limits | None = None) -> ChatService:
        return ChatService(Deps(uow=self.uow, clock=self.clock, ids=self.ids, limits=limits or Limits()))


def _user(storage: StorageUnderTest, email: str) -> User:
    return User(storage.ids.new_id(), email, email.split("@")[0], storage.clock.now())


def _group_chat(storage: StorageUnderTest, owner: str, *members: str, group_id: str | None = None) -> Chat:
    chat, _ = Chat.create_group_chat(
        chat_id=storage.ids.new_id(),
        creator=owner,
        title="chat",
        member_ids=list(members),
        group=None,
        now=storage.clock.now(),
        limits=Limits(),
    )
    chat.group_id = group_id
    return chat


def _message(chat: Chat, author: str, body: str, now: datetime, client_msg_id: str | None = None) -> Message:
    return Message(
        f"m-{chat.id}-{chat.next_seq()}", chat.id, chat.last_seq, author, body, now, None, client_msg_id
    )


def _seqs(page: list[Message]) -> list[int]:
    return [m.seq for m in page]


class StorageContract:
    """Every storage adapter (memory, sqlite, mongo, yours) passes this suite unchanged."""

    # -- users and credentials --------------------------------------------------------------

    async def test_user_round_trip_and_lookup_by_email(self, storage: StorageUnderTest) -> None:
        user = _user(storage, "ann@example.com")
        user.bio = "line one\nline two"
        async with storage.uow() as uow:
            await uow.users.add(user)
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.users.get(user.id) == user
            assert await uow.users.get_by_email("ann@example.com") == user
            assert await uow.users.get_by_email("bob@example.com") is None
            assert await uow.users.get("nope") is None
            assert await uow.users.get_many([user.id, "nope"]) == [user]

    async def test_duplicate_email_is_refused_and_writes_nothing(self, storage: StorageUnderTest) -> None:
        async with storage.uow() as uow:
            await uow.users.add(_user(storage, "ann@example.com"))
            await uow.commit()
        second = _user(storage, "ann@example.com")
        with pytest.raises(DuplicateKey) as caught:
            async with storage.uow() as uow:
                await uow.users.add(second)
                uow.record(ProfileUpdated(user_id=second.id, display_name="x", bio=""))
                await uow.commit()
        assert caught.value.key == "email"
        async with storage.uow() as uow:
            assert await uow.users.get(second.id) is None
        assert await storage.log.last_seq(second.id) == 0

    async def test_user_save_and_credentials(self, storage: StorageUnderTest) -> None:
        user = _user(storage, "ann@example.com")
        async with storage.uow() as uow:
            await uow.users.add(user)
            await uow.credentials.save(PasswordCredential(user.id, "$argon2id$hash", storage.clock.now()))
            await uow.commit()
        user.display_name, user.email_verified = "Ann B", True
        async with storage.uow() as uow:
            await uow.users.save(user)
            await uow.credentials.save(PasswordCredential(user.id, "$argon2id$other", storage.clock.now()))
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.users.get(user.id) == user
            credential = await uow.credentials.get(user.id)
            assert credential is not None and credential.password_hash == "$argon2id$other"
            assert await uow.credentials.get("nope") is None

    # -- groups -----------------------------------------------------------------------------

    async def test_group_round_trip_with_roles_and_members(self, storage: StorageUnderTest) -> None:
        now, limits = storage.clock.now(), Limits()
        group, _ = Group.create(
            group_id="g1", name="Team", description="", owner_id="u1", now=now, limits=limits
        )
        group.add_member("u1", "u2", now, limits)
        group.define_role(
            "u1",
            role_id="r1",
            name="Moderator",
            rank=50,
            permissions=frozenset({Permission.DELETE_ANY_MESSAGE, Permission.SEND_MESSAGES}),
            limits=limits,
        )
        group.assign_role("u1", "u2", "r1")
        group.assign_role("u1", "u2", ADMIN_ROLE_ID)
        async with storage.uow() as uow:
            await uow.groups.add(group)
            await uow.commit()
        async with storage.uow() as uow:
            loaded = await uow.groups.get("g1")
            assert loaded == group
            assert loaded is not None and loaded.rank_of("u2") == group.rank_of("u2")
            assert [g.id for g in await uow.groups.list_for_user("u2")] == ["g1"]
            assert await uow.groups.list_for_user("u3") == []
            assert await uow.groups.ids_for_user("u2") == ["g1"]
            assert await uow.groups.ids_for_user("u3") == []
            await uow.groups.delete("g1")
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.groups.get("g1") is None
            assert await uow.groups.list_for_user("u2") == []

    # -- chats ------------------------------------------------------------------------------

    async def test_chat_round_trip_and_membership_queries(self, storage: StorageUnderTest) -> None:
        chat = _group_chat(storage, "u1", "u2", group_id="g1")
        other = _group_chat(storage, "u2")
        async with storage.uow() as uow:
            await uow.chats.add(chat)
            await uow.chats.add(other)
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.chats.get(chat.id) == chat
            assert {c.id for c in await uow.chats.list_for_user("u2")} == {chat.id, other.id}
            assert [c.id for c in await uow.chats.list_for_user("u1")] == [chat.id]
            assert [c.id for c in await uow.chats.list_by_group("g1")] == [chat.id]
        chat.leave("u2")
        async with storage.uow() as uow:
            await uow.chats.save(chat)
            await uow.commit()
        async with storage.uow() as uow:
            assert [c.id for c in await uow.chats.list_for_user("u2")] == [other.id]

    async def test_chat_ids_for_user_match_the_chats_listed(self, storage: StorageUnderTest) -> None:
        chats = [_group_chat(storage, "u1", "u2"), _group_chat(storage, "u2"), _group_chat(storage, "u3")]
        async with storage.uow() as uow:
            for chat in chats:
                await uow.chats.add(chat)
            assert await uow.chats.ids_for_user("u1") == [chats[0].id]  # the unit's own writes
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.chats.ids_for_user("u2") == sorted(c.id for c in chats[:2])
        chats[0].leave("u2")
        async with storage.uow() as uow:
            await uow.chats.save(chats[0])
            for user in ("u1", "u2", "u3", "u4"):
                listed = [c.id for c in await uow.chats.list_for_user(user)]
                assert await uow.chats.ids_for_user(user) == listed
            assert await uow.chats.ids_for_user("u2") == [chats[1].id]

    async def test_a_group_loaded_for_a_member_has_that_member_and_every_role(
        self, storage: StorageUnderTest
    ) -> None:
        now, limits = storage.clock.now(), Limits()
        group, _ = Group.create(
            group_id="g1", name="Team", description="d", owner_id="u1", now=now, limits=limits
        )
        for i in range(300):  # a document large enough for an adapter to narrow it
            group.add_member("u1", f"m{i}", now, limits)
        group.define_role(
            "u1",
            role_id="r1",
            name="Moderator",
            rank=50,
            permissions=frozenset({Permission.DELETE_ANY_MESSAGE}),
            limits=limits,
        )
        group.assign_role("u1", "m7", "r1")
        async with storage.uow() as uow:
            await uow.groups.add(group)
            await uow.commit()
        async with storage.uow() as uow:
            mine = await uow.groups.get_for_member("g1", "m7")
            stranger = await uow.groups.get_for_member("g1", "nobody")
            assert await uow.groups.get_for_member("no-such-group", "m7") is None
            assert mine is not None and stranger is not None
            assert (mine.is_member("m7"), stranger.is_member("nobody")) == (True, False)
            assert mine.members["m7"] == group.members["m7"] and mine.roles == group.roles
            assert (mine.name, mine.description, mine.owner_id, mine.created_at) == (
                group.name, group.description, group.owner_id, group.created_at,
            )  # fmt: skip
            assert mine.rank_of("m7") == group.rank_of("m7") == 50
            mine.members.clear()
            with pytest.raises(ValueError, match="cannot be saved"):
                await uow.groups.save(mine)
        async with storage.uow() as uow:
            assert await uow.groups.get("g1") == group

    async def test_a_chat_loaded_for_a_member_saves_its_seq_and_keeps_every_member(
        self, storage: StorageUnderTest
    ) -> None:
        chat = _group_chat(storage, "u1", *(f"m{i}" for i in range(50)), group_id="g1")
        async with storage.uow() as uow:
            await uow.chats.add(chat)
            await uow.commit()
        async with storage.uow() as uow:
            mine = await uow.chats.get_for_member(chat.id, "m7")
            stranger = await uow.chats.get_for_member(chat.id, "nobody")
            assert await uow.chats.get_for_member("no-such-chat", "m7") is None
            assert mine is not None and stranger is not None
            assert (mine.is_member("m7"), stranger.is_member("nobody")) == (True, False)
            assert mine.members["m7"] == chat.members["m7"]
            assert (mine.id, mine.kind, mine.title, mine.owner_id, mine.group_id, mine.created_at) == (
                chat.id, chat.kind, chat.title, chat.owner_id, chat.group_id, chat.created_at,
            )  # fmt: skip
            assert mine.next_seq() == 1
            await uow.chats.save(mine)
            await uow.commit()
        async with storage.uow() as uow:
            stored = await uow.chats.get(chat.id)
            assert stored is not None and stored.last_seq == 1 and stored.members == chat.members
            assert (await uow.chats.get_for_member(chat.id, "u1")).last_seq == 1  # type: ignore[union-attr]

    async def test_one_direct_chat_per_pair(self, storage: StorageUnderTest) -> None:
        now = storage.clock.now()
        first, _ = Chat.open_direct(chat_id="d1", opener="u1", other="u2", now=now)
        again, _ = Chat.open_direct(chat_id="d2", opener="u2", other="u1", now=now)
        async with storage.uow() as uow:
            await uow.chats.add(first)
            await uow.commit()
        with pytest.raises(DuplicateKey) as caught:
            async with storage.uow() as uow:
                await uow.chats.add(again)
                await uow.commit()
        assert caught.value.key == "direct_key"
        async with storage.uow() as uow:
            assert await uow.chats.get("d2") is None
            assert await uow.chats.get_direct(direct_key("u2", "u1")) == first

    # -- messages ---------------------------------------------------------------------------

    async def _chat_with_messages(self, storage: StorageUnderTest, count: int) -> Chat:
        chat = _group_chat(storage, "u1", "u2")
        async with storage.uow() as uow:
            for i in range(count):
                author = "u1" if i % 2 == 0 else "u2"
                await uow.messages.add(
                    _message(chat, author, f"body {i + 1}", storage.clock.now(), f"c{i + 1}")
                )
            await uow.chats.add(chat)
            await uow.commit()
        return chat

    async def test_message_pages_in_both_directions(self, storage: StorageUnderTest) -> None:
        chat = await self._chat_with_messages(storage, 10)
        async with storage.uow() as uow:
            assert _seqs(await uow.messages.list(chat.id, after=0, before=None, limit=3)) == [1, 2, 3]
            assert _seqs(await uow.messages.list(chat.id, after=8, before=None, limit=5)) == [9, 10]
            assert _seqs(await uow.messages.list(chat.id, after=None, before=11, limit=3)) == [8, 9, 10]
            assert _seqs(await uow.messages.list(chat.id, after=None, before=3, limit=5)) == [1, 2]
            assert await uow.messages.list(chat.id, after=10, before=None, limit=5) == []
            last = await uow.messages.last(chat.id)
            assert last is not None and (last.seq, last.body) == (10, "body 10")
            assert await uow.messages.last("nochat") is None

    async def test_message_edit_and_tombstone_round_trip(self, storage: StorageUnderTest) -> None:
        chat = await self._chat_with_messages(storage, 2)
        async with storage.uow() as uow:
            message = await uow.messages.get(chat.id, 1)
            assert message is not None
            message.history.append(MessageEdit(message.body, storage.clock.now()))
            message.body, message.edited_at = "edited", storage.clock.now() + timedelta(seconds=1)
            await uow.messages.save(message)
            gone = await uow.messages.get(chat.id, 2)
            assert gone is not None
            gone.body, gone.deleted_at, gone.deleted_by = "", storage.clock.now(), "u2"
            await uow.messages.save(gone)
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.messages.get(chat.id, 1) == message
            assert await uow.messages.get(chat.id, 2) == gone
            assert await uow.messages.get(chat.id, 3) is None

    async def test_client_msg_id_is_unique_per_chat_and_author(self, storage: StorageUnderTest) -> None:
        chat = await self._chat_with_messages(storage, 1)
        async with storage.uow() as uow:
            found = await uow.messages.get_by_client_id(chat.id, "u1", "c1")
            assert found is not None and found.seq == 1
            assert await uow.messages.get_by_client_id(chat.id, "u2", "c1") is None
        with pytest.raises(DuplicateKey) as caught:
            async with storage.uow() as uow:
                await uow.messages.add(_message(chat, "u1", "again", storage.clock.now(), "c1"))
                await uow.chats.save(chat)
                await uow.commit()
        assert caught.value.key == "client_msg_id"
        async with storage.uow() as uow:
            assert await uow.messages.get(chat.id, 2) is None
            stored = await uow.chats.get(chat.id)
            assert stored is not None and stored.last_seq == 1

    async def test_unread_count_skips_own_and_deleted(self, storage: StorageUnderTest) -> None:
        chat = await self._chat_with_messages(storage, 6)  # u1 wrote 1,3,5; u2 wrote 2,4,6
        async with storage.uow() as uow:
            four = await uow.messages.get(chat.id, 4)
            assert four is not None
            four.deleted_at = storage.clock.now()
            await uow.messages.save(four)
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.messages.count_unread(chat.id, "u1", 0) == 2  # 2 and 6
            assert await uow.messages.count_unread(chat.id, "u1", 5) == 1
            assert await uow.messages.count_unread(chat.id, "u2", 0) == 3
            assert await uow.messages.count_unread(chat.id, "u2", 6) == 0

    async def test_read_markers(self, storage: StorageUnderTest) -> None:
        async with storage.uow() as uow:
            assert await uow.read_markers.get("c1", "u1") is None
            await uow.read_markers.save(ReadMarker("c1", "u1", 3))
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.read_markers.get("c1", "u1") == ReadMarker("c1", "u1", 3)
            await uow.read_markers.save(ReadMarker("c1", "u1", 5))
            await uow.commit()
        async with storage.uow() as uow:
            assert await uow.read_markers.get("c1", "u1") == ReadMarker("c1", "u1", 5)
            assert await uow.read_markers.get("c1", "u2") is None

    # -- unit of work and event log ---------------------------------------------------------

    async def test_commit_writes_change_and_events_with_gapless_stream_seqs(
        self, storage: StorageUnderTest
    ) -> None:
        chat = _group_chat(storage, "u1")
        async with storage.uow() as uow:
            await uow.chats.add(chat)
            uow.record(ChatMemberAdded(chat_id=chat.id, user_id="u2", by="u1"))
            uow.record(ChatMemberAdded(chat_id=chat.id, user_id="u3", by="u1"))
            uow.record(ProfileUpdated(user_id="u1", display_name="A", bio=""))
            records = await uow.commit()
        assert [(r.stream_id, r.seq) for r in records] == [(chat.id, 1), (chat.id, 2), ("u1", 1)]
        assert all(r.occurred_at == storage.clock.now() for r in records)
        assert len({r.id for r in records}) == 3
        assert await storage.log.read(chat.id, after_seq=0, limit=10) == records[:2]
        assert await storage.log.read(chat.id, after_seq=1, limit=10) == records[1:2]
        assert await storage.log.read(chat.id, after_seq=0, limit=1) == records[:1]
        assert await storage.log.read_back(chat.id, before_seq=3, limit=10) == records[1::-1]
        assert await storage.log.read_back(chat.id, before_seq=2, limit=10) == records[:1]
        assert await storage.log.read_back(chat.id, before_seq=3, limit=1) == records[1:2]
        assert await storage.log.last_seq(chat.id) == 2
        assert await storage.log.last_seq("nothing") == 0

    async def test_exit_without_commit_writes_nothing(self, storage: StorageUnderTest) -> None:
        user = _user(storage, "ann@example.com")
        with pytest.raises(RuntimeError):
            async with storage.uow() as uow:
                await uow.users.add(user)
                uow.record(ProfileUpdated(user_id=user.id, display_name="A", bio=""))
                raise RuntimeError("the use case failed half-way")
        async with storage.uow() as uow:
            await uow.users.add(_user(storage, "bob@example.com"))  # never committed either
        async with storage.uow() as uow:
            assert await uow.users.get(user.id) is None
            assert await uow.users.get_by_email("bob@example.com") is None
        assert await storage.log.last_seq(user.id) == 0
        assert await storage.log.undispatched(10) == []

    async def test_outbox_hands_out_each_record_until_dispatched(self, storage: StorageUnderTest) -> None:
        async with storage.uow() as uow:
            for name in ("a", "b", "c"):
                uow.record(ProfileUpdated(user_id="u1", display_name=name, bio=""))
            records = await uow.commit()
        assert await storage.log.undispatched(10) == records
        assert await storage.log.undispatched(2) == records[:2]
        await storage.log.mark_dispatched([records[0].id])
        assert await storage.log.undispatched(10) == records[1:]
        await storage.log.mark_dispatched([r.id for r in records])
        assert await storage.log.undispatched(10) == []

    # -- the use cases on this storage ------------------------------------------------------

    async def test_concurrent_sends_get_seqs_one_to_n(self, storage: StorageUnderTest) -> None:
        service = storage.service()
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        results = await asyncio.gather(
            *(
                service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}"))
                for i in range(20)
            )
        )
        assert sorted(r.message.seq for r in results) == list(range(1, 21))
        page = await service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id, limit=50))
        assert [m.seq for m in page.messages] == list(range(1, 21))
        posted = [
            r
            for r in await storage.log.read(chat.id, after_seq=0, limit=100)
            if isinstance(r.event, MessagePosted)
        ]
        assert [r.event.seq for r in posted if isinstance(r.event, MessagePosted)] == list(range(1, 21))

    async def test_concurrent_duplicate_sends_store_one_message(self, storage: StorageUnderTest) -> None:
        service = storage.service()
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        send = SendMessageCommand(actor=ann.id, chat_id=chat.id, body="once", client_msg_id="k1")
        results = await asyncio.gather(*(service.send_message(send) for _ in range(10)))
        assert {r.message.id for r in results} == {results[0].message.id}
        assert sum(r.created for r in results) == 1
        stored = await service.get_chat(ann.id, chat.id)
        assert stored.last_seq == 1
