"""The MongoDB adapter down to the documents: what the storage contract cannot see.

Round trips of the Python types (frozenset, StrEnum, tz-aware datetimes at BSON's millisecond
precision), document shapes, unique keys under concurrency, outbox order, and the indexes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.mongo import (
    INDEXES,
    MongoEventLog,
    MongoStore,
    check_server,
    connect,
    ensure_ttl_index,
    init_indexes,
    mongo_core,
    mongo_uow_factory,
)
from adapters.mongo.documents import to_millis
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.messages import GetMessage, SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.domain.chats import Chat, ChatKind, ChatMember
from chatcore.domain.events import ChatMemberAdded, MessagePosted, ProfileUpdated
from chatcore.domain.groups import Group, GroupMember, Role
from chatcore.domain.messages import Message, MessageEdit
from chatcore.domain.permissions import Permission
from chatcore.domain.users import User
from chatcore.ports.errors import DuplicateKey
from chatcore.ports.unit_of_work import UnitOfWorkFactory
from chatcore.testing.doubles import FakeClock, SequentialIds
from tests.integration.fixtures.mongo import *  # noqa: F403

TEST_BUDGET_S = 30
MICROS = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)


@pytest.fixture
async def store(
    mongo_url: str, mongo_database: str, mongo_require_replica_set: bool
) -> AsyncIterator[MongoStore]:
    store = MongoStore.open(connect(mongo_url), mongo_database)
    await check_server(store, require_replica_set=mongo_require_replica_set)
    await init_indexes(store)
    yield store
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC))


@pytest.fixture
def uow(store: MongoStore, clock: FakeClock) -> UnitOfWorkFactory:
    return mongo_uow_factory(store, clock, SequentialIds())


async def test_group_with_custom_roles_round_trips_types_exactly(
    uow: UnitOfWorkFactory, store: MongoStore
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        paris = timezone(timedelta(hours=2))
        moment = datetime(2026, 3, 1, 14, 0, 0, 5000, tzinfo=paris)  # whole milliseconds
        group = Group("g1", "Team", "desc", "u1", moment)
        group.members = {
            "u1": GroupMember("u1", moment),
            "u.2$": GroupMember("u.2$", moment, {"admin", "r1"}),  # ids unsafe as field names
        }
        group.roles["r1"] = Role("r1", "Mod", 50, frozenset({Permission.DELETE_ANY_MESSAGE}))
        async with uow() as u:
            await u.groups.add(group)
            await u.commit()
        async with uow() as u:
            loaded = await u.groups.get("g1")
        assert loaded == group
        assert loaded is not None
        assert isinstance(loaded.roles["r1"].permissions, frozenset)
        assert all(type(p) is Permission for p in loaded.roles["r1"].permissions)
        assert loaded.members["u.2$"].role_ids == {"admin", "r1"}
        assert loaded.created_at.tzinfo is not None and loaded.created_at.utcoffset() == timedelta(0)
        raw = await store.groups.find_one({"_id": "g1"})
        assert raw is not None and raw["version"] == 1
        assert sorted(m["user_id"] for m in raw["members"]) == ["u.2$", "u1"]  # arrays, not maps


async def test_datetimes_keep_milliseconds_as_bson_dates_do(uow: UnitOfWorkFactory) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        chat = Chat("c1", ChatKind.GROUP, MICROS, title="t", owner_id="u1")
        chat.members = {"u1": ChatMember("u1", MICROS)}
        message = Message(
            "m1", "c1", 1, "u1", "hi", MICROS, edited_at=MICROS, history=[MessageEdit("x", MICROS)]
        )
        chat.last_seq = 1
        async with uow() as u:
            await u.chats.add(chat)
            await u.messages.add(message)
            await u.commit()
        async with uow() as u:
            loaded_chat, loaded = await u.chats.get("c1"), await u.messages.get("c1", 1)
        assert loaded is not None and loaded_chat is not None
        assert loaded.created_at == to_millis(MICROS) and loaded.created_at.tzinfo is UTC
        assert loaded.history[0].replaced_at == to_millis(MICROS)
        assert loaded_chat.kind is ChatKind.GROUP
        assert loaded.client_msg_id is None and loaded.deleted_at is None


async def test_core_clock_is_millisecond_so_replies_match_later_reads(
    mongo_url: str, mongo_database: str, mongo_require_replica_set: bool
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        async with mongo_core(
            mongo_url, database=mongo_database, require_replica_set=mongo_require_replica_set
        ) as core:
            s = core.service
            ann = await s.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
            chat = await s.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
            sent = await s.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body="hi"))
            got = await GetMessage(s.deps)(ann.id, chat.id, sent.message.seq)
            assert got == sent.message


async def test_unique_keys_are_reported_by_name(uow: UnitOfWorkFactory, clock: FakeClock) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        now = clock.now()
        async with uow() as u:
            await u.users.add(User("u1", "ann@example.com", "Ann", now))
            direct, _ = Chat.open_direct(chat_id="d1", opener="u1", other="u2", now=now)
            await u.chats.add(direct)
            await u.messages.add(Message("m1", "d1", 1, "u1", "hi", now, client_msg_id="k"))
            await u.commit()
        cases: list[tuple[str, Any]] = [
            ("email", lambda u: u.users.add(User("u9", "ann@example.com", "Other", now))),
            (
                "direct_key",
                lambda u: u.chats.add(Chat.open_direct(chat_id="d2", opener="u2", other="u1", now=now)[0]),
            ),
            (
                "client_msg_id",
                lambda u: u.messages.add(Message("m2", "d1", 2, "u1", "again", now, client_msg_id="k")),
            ),
        ]
        for key, add in cases:
            with pytest.raises(DuplicateKey) as caught:
                async with uow() as u:
                    await add(u)
                    await u.commit()
            assert caught.value.key == key
        # Group chats have no direct_key and messages without client_msg_id do not collide.
        async with uow() as u:
            for i in (2, 3):
                chat = Chat(f"g{i}", ChatKind.GROUP, now, title="t", owner_id="u1")
                await u.chats.add(chat)
                await u.messages.add(Message(f"n{i}", "d1", i, "u1", "x", now))
            await u.commit()


async def test_the_same_email_added_by_two_clients_at_once_lands_once(
    store: MongoStore, clock: FakeClock, mongo_url: str
) -> None:
    """Neither unit sees the other's insert; the server lets exactly one commit through."""
    async with asyncio.timeout(TEST_BUDGET_S):
        other = MongoStore.open(connect(mongo_url), store.db.name)
        try:
            a = mongo_uow_factory(store, clock, SequentialIds("a"))()
            b = mongo_uow_factory(other, clock, SequentialIds("b"))()
            outcomes: list[str] = []
            async with a, b:
                await a.users.add(User("ua", "same@example.com", "A", clock.now()))
                await a.commit()
                try:
                    await b.users.add(User("ub", "same@example.com", "B", clock.now()))
                    await b.commit()
                    outcomes.append("committed")
                except Exception as error:  # DuplicateKey or ConcurrentUpdate: both rerun the use case
                    outcomes.append(type(error).__name__)
            assert outcomes in (["DuplicateKey"], ["ConcurrentUpdate"])
            assert await store.users.count_documents({"email": "same@example.com"}) == 1
        finally:
            await other.close()


async def test_outbox_keeps_commit_order_within_each_stream(
    store: MongoStore, uow: UnitOfWorkFactory, clock: FakeClock
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        log = MongoEventLog(store)
        all_records = []
        for round_ in range(3):
            async with uow() as u:
                u.record(ProfileUpdated(user_id="u1", display_name=f"n{round_}", bio=""))
                u.record(ChatMemberAdded(chat_id="c1", user_id=f"x{round_}", by="u1"))
                all_records += await u.commit()
            if round_ == 1:
                clock.set(clock.now() - timedelta(minutes=5))  # a writer whose clock runs behind
        pending = await log.undispatched(100)
        assert sorted(r.id for r in pending) == sorted(r.id for r in all_records)
        for stream in ("u1", "c1"):
            assert [r.seq for r in pending if r.stream_id == stream] == [1, 2, 3]
        await log.mark_dispatched([r.id for r in pending[:4]])
        await log.mark_dispatched([r.id for r in pending[:4]])  # idempotent
        assert await log.undispatched(100) == pending[4:]
        await log.mark_dispatched([])
        assert await log.last_seq("c1") == 3
        assert (
            await log.read_back("c1", before_seq=10, limit=2)
            == [r for r in reversed(all_records) if r.stream_id == "c1"][:2]
        )
        event = (await log.read("c1", after_seq=0, limit=1))[0]
        assert event.occurred_at.tzinfo is UTC


async def test_message_pages_and_unread_counts_follow_the_seq_index(
    store: MongoStore, uow: UnitOfWorkFactory, clock: FakeClock
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        now = clock.now()
        async with uow() as u:
            for seq in range(1, 8):
                author = "u1" if seq % 2 else "u2"
                await u.messages.add(Message(f"m{seq}", "c1", seq, author, f"b{seq}", now))
                await u.messages.add(Message(f"o{seq}", "c2", seq, "u2", "other chat", now))
            await u.commit()
        async with uow() as u:
            gone = await u.messages.get("c1", 4)
            assert gone is not None
            gone.deleted_at, gone.body = now, ""
            await u.messages.save(gone)
            await u.commit()
        async with uow() as u:
            seqs = [m.seq for m in await u.messages.list("c1", after=None, before=None, limit=3)]
            assert seqs == [1, 2, 3]
            assert [m.seq for m in await u.messages.list("c1", after=5, before=None, limit=10)] == [6, 7]
            assert [m.seq for m in await u.messages.list("c1", after=None, before=6, limit=2)] == [4, 5]
            assert await u.messages.list("c1", after=0, before=None, limit=0) == []
            assert await u.messages.count_unread("c1", "u1", 0) == 2  # 2 and 6; 4 is deleted
            assert await u.messages.count_unread("c1", "u2", 3) == 2  # 5 and 7
            last = await u.messages.last("c1")
            assert last is not None and last.seq == 7


async def test_indexes_exist_and_serve_the_hot_queries(store: MongoStore) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        for collection, models in INDEXES.items():
            info = await store[collection].index_information()
            for model in models:
                assert model.document["name"] in info, (collection, model.document["name"])
        assert await init_indexes(store)  # idempotent
        tokens = store["one_time_tokens"]
        name = await ensure_ttl_index(tokens)
        assert (await tokens.index_information())[name]["expireAfterSeconds"] == 0
        plans = {
            "history": store.messages.find({"chat_id": "c1", "seq": {"$gt": 5}}).sort(
                [("chat_id", 1), ("seq", 1)]
            ),
            "chats of a user": store.chats.find({"members.user_id": "u1"}),
            "outbox": store.events.find({"dispatched": False}).sort(
                [("position", 1), ("stream_id", 1), ("seq", 1)]
            ),
        }
        for query, cursor in plans.items():
            explained = await cursor.explain()
            winning = explained.get("queryPlanner", {}).get("winningPlan")
            if winning is not None:  # MongoDB's explain format: the plan must use an index
                assert "COLLSCAN" not in str(winning), (query, winning)
            else:  # mongoeco explains its own way and does not plan with indexes (see report)
                assert explained.get("ok") == 1.0 and explained.get("indexes"), query


async def test_reads_inside_a_unit_see_its_own_writes(uow: UnitOfWorkFactory, clock: FakeClock) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        async with uow() as u:
            await u.users.add(User("u1", "ann@example.com", "Ann", clock.now()))
            assert await u.users.get_by_email("ann@example.com") is not None
            chat, _ = Chat.create_group_chat(
                chat_id="c1",
                creator="u1",
                title="t",
                member_ids=[],
                group=None,
                now=clock.now(),
                limits=_limits(),
            )
            await u.chats.add(chat)
            assert [c.id for c in await u.chats.list_for_user("u1")] == ["c1"]
        async with uow() as u:  # never committed
            assert await u.users.get("u1") is None


def _limits() -> Any:
    from chatcore.domain.limits import Limits

    return Limits()


def test_posted_event_type_round_trips() -> None:
    from adapters.mongo.documents import event_doc, record_from
    from chatcore.domain.events import EventRecord

    record = EventRecord(
        id="e1",
        stream_id="c1",
        seq=1,
        occurred_at=to_millis(MICROS),
        event=MessagePosted(
            chat_id="c1",
            message_id="m1",
            seq=1,
            author_id="u1",
            body="hi",
            reply_to=None,
            client_msg_id="k",
            created_at=to_millis(MICROS),
        ),
    )
    doc = event_doc(record, record.occurred_at)
    assert doc["event"]["type"] == "message.posted"
    assert record_from(doc) == record


async def test_a_chat_loaded_for_one_member_reads_one_member_and_saves_only_its_seq(
    uow: UnitOfWorkFactory, store: MongoStore, clock: FakeClock
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        chat, _ = Chat.create_group_chat(
            chat_id="big",
            creator="u0",
            title="t",
            member_ids=[f"u{i}" for i in range(1, 300)],
            group=None,
            now=clock.now(),
            limits=_limits(),
        )
        async with uow() as u:
            await u.chats.add(chat)
            await u.commit()
        async with uow() as u:
            mine = await u.chats.get_for_member("big", "u7")
            assert mine is not None and list(mine.members) == ["u7"]  # one member crossed the wire
            mine.title = "renamed"
            with pytest.raises(ValueError, match="last_seq"):
                await u.chats.save(mine)
        async with uow() as u:
            mine = await u.chats.get_for_member("big", "u7")
            assert mine is not None
            mine.next_seq()
            await u.chats.save(mine)
            await u.commit()
        stored = await store.chats.find_one({"_id": "big"})
        assert stored is not None and stored["last_seq"] == 1 and stored["title"] == "t"
        assert len(stored["members"]) == 300
