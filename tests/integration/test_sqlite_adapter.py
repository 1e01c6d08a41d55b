"""The SQLite adapter on real database files: what the storage contract cannot see.

Round trips down to the Python types, failed commits leaving nothing, restarts, migrations,
query plans, concurrent writers, and the use cases run side by side with the memory adapter.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.kit import memory_core
from adapters.memory.store import MemoryStore
from adapters.memory.unit_of_work import MemoryUnitOfWork
from adapters.sqlite import (
    LATEST_VERSION,
    SchemaError,
    SqliteDatabase,
    SqliteEventLog,
    migrate,
    sqlite_uow_factory,
)
from adapters.sqlite.kit import sqlite_core
from adapters.sqlite.migrations import MIGRATIONS, Migration, apply_migrations
from chatcore.application.chats import (
    ChatMemberCommand,
    CreateGroupChatCommand,
    OpenDirectChatCommand,
    RenameChatCommand,
)
from chatcore.application.common import Deps
from chatcore.application.groups import (
    CreateGroupCommand,
    DefineRoleCommand,
    GroupMemberCommand,
    RoleAssignmentCommand,
)
from chatcore.application.messages import (
    EditMessageCommand,
    ListMessagesQuery,
    MarkReadCommand,
    SendMessageCommand,
)
from chatcore.application.profiles import CreateUserCommand, UpdateProfileCommand
from chatcore.application.service import ChatService
from chatcore.domain.chats import Chat, ChatKind, ChatMember
from chatcore.domain.events import ChatMemberAdded, EventRecord, MessagePosted, ProfileUpdated, RoleDefined
from chatcore.domain.groups import ADMIN_ROLE_ID, Group, Role
from chatcore.domain.limits import Limits
from chatcore.domain.messages import Message, MessageEdit, ReadMarker
from chatcore.domain.permissions import Permission
from chatcore.domain.users import PasswordCredential, User
from chatcore.ports.errors import DuplicateKey, StoreUnavailable
from chatcore.ports.unit_of_work import EventLog, UnitOfWork, UnitOfWorkFactory
from chatcore.testing.doubles import FakeClock, SequentialIds

NOW = datetime(2026, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


class Storage(msgspec.Struct):
    db: SqliteDatabase
    uow: UnitOfWorkFactory
    log: SqliteEventLog
    clock: FakeClock
    ids: SequentialIds


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "chatcore.db"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[Storage]:
    clock, ids = FakeClock(NOW), SequentialIds()
    async with SqliteDatabase(db_path) as db:
        yield Storage(db, sqlite_uow_factory(db, clock, ids), SqliteEventLog(db), clock, ids)


def _service(storage: Storage, limits: Limits | None = None) -> ChatService:
    return ChatService(Deps(uow=storage.uow, clock=storage.clock, ids=storage.ids, limits=limits or Limits()))


def _chat(chat_id: str, *members: str, group_id: str | None = None) -> Chat:
    chat = Chat(chat_id, ChatKind.GROUP, NOW, title="t", owner_id=members[0], group_id=group_id)
    chat.members = {m: ChatMember(m, NOW) for m in members}
    return chat


def _message(chat: Chat, author: str, client_msg_id: str | None = None) -> Message:
    seq = chat.next_seq()
    return Message(f"{chat.id}-m{seq}", chat.id, seq, author, f"body {seq}", NOW, client_msg_id=client_msg_id)


async def _commit(storage: Storage, work: Callable[[UnitOfWork], Awaitable[Any]]) -> list[EventRecord]:
    async with storage.uow() as uow:
        await work(uow)
        return await uow.commit()


def _rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Read the file directly, as another process would: only committed data."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# -- round trips ----------------------------------------------------------------------------


async def test_every_aggregate_round_trips_with_its_python_types(storage: Storage) -> None:
    limits = Limits()
    user = User("u1", "ann@example.com", "Ann ✓", NOW, bio='quotes " and \\ and\nlines', email_verified=True)
    other_zone = datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    credential = PasswordCredential("u1", "$argon2id$v=19$m=65536$abc", other_zone)
    group, _ = Group.create(
        group_id="g1", name="Team", description="d", owner_id="u1", now=NOW, limits=limits
    )
    group.add_member("u1", "u2", NOW, limits)
    group.define_role(
        "u1",
        role_id="r1",
        name="Mod",
        rank=50,
        permissions=frozenset({Permission.DELETE_ANY_MESSAGE, Permission.SEND_MESSAGES}),
        limits=limits,
    )
    group.assign_role("u1", "u2", "r1")
    group.assign_role("u1", "u2", ADMIN_ROLE_ID)
    chat = _chat("c1", "u3", "u1", "u2", group_id="g1")  # join order, not sorted order
    first, second = _message(chat, "u1", "k1"), _message(chat, "u2")
    first.reply_to, first.edited_at = None, NOW + timedelta(seconds=5)
    first.history = [MessageEdit("v1", NOW), MessageEdit("v2", NOW + timedelta(seconds=1))]
    second.reply_to = 1
    second.body, second.deleted_at, second.deleted_by = "", NOW, "u1"

    async def write(uow: UnitOfWork) -> None:
        await uow.users.add(user)
        await uow.credentials.save(credential)
        await uow.groups.add(group)
        await uow.chats.add(chat)
        await uow.messages.add(first)
        await uow.messages.add(second)
        await uow.read_markers.save(ReadMarker("c1", "u2", 2))

    await _commit(storage, write)
    async with storage.uow() as uow:
        assert await uow.users.get("u1") == user
        assert await uow.credentials.get("u1") == credential
        loaded_group = await uow.groups.get("g1")
        loaded_chat = await uow.chats.get("c1")
        assert await uow.messages.get("c1", 1) == first
        assert await uow.messages.get("c1", 2) == second
        assert await uow.read_markers.get("c1", "u2") == ReadMarker("c1", "u2", 2)
    assert loaded_group == group
    assert loaded_group is not None and loaded_chat is not None
    role = loaded_group.roles["r1"]
    assert isinstance(role, Role) and isinstance(role.permissions, frozenset)
    assert all(type(p) is Permission for p in role.permissions)
    assert isinstance(loaded_group.members["u2"].role_ids, set)
    assert loaded_group.members["u2"].role_ids == {"r1", ADMIN_ROLE_ID}
    assert loaded_group.rank_of("u2") == group.rank_of("u2")
    assert loaded_chat == chat
    assert loaded_chat.kind is ChatKind.GROUP
    assert list(loaded_chat.members) == ["u3", "u1", "u2"]
    assert loaded_chat.last_seq == 2
    loaded_credential = await _credential(storage)
    assert loaded_credential.updated_at.utcoffset() == timedelta(hours=5, minutes=30)


async def _credential(storage: Storage) -> PasswordCredential:
    async with storage.uow() as uow:
        credential = await uow.credentials.get("u1")
    assert credential is not None
    return credential


async def test_a_unit_of_work_reads_its_own_writes_and_others_see_them_only_after_commit(
    storage: Storage, db_path: Path
) -> None:
    async with storage.uow() as uow:
        await uow.users.add(User("u1", "ann@example.com", "Ann", NOW))
        assert await uow.users.get_by_email("ann@example.com") is not None
        assert _rows(db_path, "SELECT id FROM users") == []
        await uow.commit()
        assert _rows(db_path, "SELECT id FROM users") == [("u1",)]
        # The same unit of work may go on and commit again.
        await uow.users.add(User("u2", "bob@example.com", "Bob", NOW))
        uow.record(ProfileUpdated(user_id="u2", display_name="Bob", bio=""))
        records = await uow.commit()
    assert [(r.stream_id, r.seq) for r in records] == [("u2", 1)]
    assert _rows(db_path, "SELECT id FROM users ORDER BY id") == [("u1",), ("u2",)]


# -- failures write nothing -----------------------------------------------------------------


async def test_duplicate_keys_write_nothing_not_even_events_or_seqs(storage: Storage, db_path: Path) -> None:
    direct, _ = Chat.open_direct(chat_id="d1", opener="u1", other="u2", now=NOW)
    chat = _chat("c1", "u1")

    async def setup(uow: UnitOfWork) -> None:
        await uow.users.add(User("u1", "ann@example.com", "Ann", NOW))
        await uow.chats.add(direct)
        await uow.messages.add(_message(chat, "u1", "k1"))
        await uow.chats.add(chat)
        uow.record(ChatMemberAdded(chat_id="c1", user_id="u1", by="u1"))

    await _commit(storage, setup)
    tables = ("users", "chats", "messages", "events", "streams")
    before = {t: _rows(db_path, f"SELECT * FROM {t}") for t in tables}  # noqa: S608

    again, _ = Chat.open_direct(chat_id="d2", opener="u2", other="u1", now=NOW)
    attempts: list[tuple[str, Callable[[UnitOfWork], Awaitable[None]]]] = [
        ("email", lambda uow: uow.users.add(User("u9", "ann@example.com", "Other", NOW))),
        ("direct_key", lambda uow: uow.chats.add(again)),
        ("client_msg_id", lambda uow: uow.messages.add(_message(chat, "u1", "k1"))),
    ]
    for key, attempt in attempts:
        with pytest.raises(DuplicateKey) as caught:
            async with storage.uow() as uow:
                await uow.users.add(User(f"x-{key}", f"{key}@example.com", "X", NOW))  # a good change first
                uow.record(ChatMemberAdded(chat_id="c1", user_id="u7", by="u1"))
                await attempt(uow)
                await uow.commit()
        assert caught.value.key == key
    after = {t: _rows(db_path, f"SELECT * FROM {t}") for t in before}  # noqa: S608
    assert after == before
    assert await storage.log.last_seq("c1") == 1
    records = await _commit(
        storage, lambda uow: _record(uow, ChatMemberAdded(chat_id="c1", user_id="u8", by="u1"))
    )
    assert [r.seq for r in records] == [2]  # no seq was consumed by the failed commits


async def _record(uow: UnitOfWork, event: Any) -> None:
    uow.record(event)


async def test_a_taken_message_seq_is_an_error_never_a_silent_overwrite(storage: Storage) -> None:
    chat = _chat("c1", "u1", "u2")
    original = _message(chat, "u1")

    async def setup(uow: UnitOfWork) -> None:
        await uow.chats.add(chat)
        await uow.messages.add(original)

    await _commit(storage, setup)
    clash = Message("other", "c1", 1, "u2", "clash", NOW)
    with pytest.raises(DuplicateKey) as caught:
        await _commit(storage, lambda uow: uow.messages.add(clash))
    assert caught.value.key == "seq"
    async with storage.uow() as uow:
        assert await uow.messages.get("c1", 1) == original


async def test_both_keys_taken_reports_client_msg_id_as_memory_does(storage: Storage) -> None:
    chat = _chat("c1", "u1")
    await _commit(storage, lambda uow: _add_chat_and_messages(uow, chat, [_message(chat, "u1", "k1")]))
    with pytest.raises(DuplicateKey) as caught:
        await _commit(
            storage, lambda uow: uow.messages.add(Message("m", "c1", 1, "u1", "x", NOW, None, "k1"))
        )
    assert caught.value.key == "client_msg_id"


async def _add_chat_and_messages(uow: UnitOfWork, chat: Chat, messages: list[Message]) -> None:
    await uow.chats.add(chat)
    for message in messages:
        await uow.messages.add(message)


async def test_an_exception_rolls_back_and_the_next_unit_of_work_starts_clean(
    storage: Storage, db_path: Path
) -> None:
    with pytest.raises(RuntimeError):
        async with storage.uow() as uow:
            await uow.users.add(User("u1", "ann@example.com", "Ann", NOW))
            uow.record(ProfileUpdated(user_id="u1", display_name="A", bio=""))
            raise RuntimeError("half-way")
    records = await _commit(
        storage, lambda uow: _record(uow, ProfileUpdated(user_id="u1", display_name="B", bio=""))
    )
    assert [r.seq for r in records] == [1]
    assert _rows(db_path, "SELECT count(*) FROM users") == [(0,)]
    assert _rows(db_path, "SELECT count(*) FROM events") == [(1,)]


async def test_a_cancelled_unit_of_work_writes_nothing_and_frees_the_writer(storage: Storage) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        async with storage.uow() as uow:
            await uow.users.add(User("u1", "ann@example.com", "Ann", NOW))
            started.set()
            await asyncio.sleep(3600)
            await uow.commit()

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        async with storage.uow() as uow:
            assert await uow.users.get("u1") is None


async def test_a_writer_in_another_process_holding_the_lock_too_long_means_unavailable(db_path: Path) -> None:
    clock, ids = FakeClock(NOW), SequentialIds()
    async with SqliteDatabase(db_path, busy_timeout_s=0.1) as db:
        uow = sqlite_uow_factory(db, clock, ids)
        other = sqlite3.connect(db_path, autocommit=True)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable):
                async with uow() as unit:
                    await unit.users.add(User("u1", "ann@example.com", "Ann", NOW))
            other.execute("ROLLBACK")
        finally:
            other.close()
        async with uow() as unit:  # the writer recovered: nothing half-done is left
            await unit.users.add(User("u1", "ann@example.com", "Ann", NOW))
            await unit.commit()


async def test_a_message_whose_chat_was_never_stored_fails_the_commit(
    storage: Storage, db_path: Path
) -> None:
    orphan = Message("m1", "nochat", 1, "u1", "hi", NOW)
    with pytest.raises(sqlite3.IntegrityError):
        await _commit(storage, lambda uow: uow.messages.add(orphan))
    assert _rows(db_path, "SELECT count(*) FROM messages") == [(0,)]


async def test_a_send_updates_the_chats_last_seq_column_not_its_document(
    storage: Storage, db_path: Path
) -> None:
    chat = _chat("c1", "u1", "u2")
    await _commit(storage, lambda uow: uow.chats.add(chat))
    (document,) = _rows(db_path, "SELECT data FROM chats")
    for _ in range(3):

        async def send(uow: UnitOfWork) -> None:
            loaded = await uow.chats.get("c1")
            assert loaded is not None
            await uow.messages.add(_message(loaded, "u1"))
            await uow.chats.save(loaded)

        await _commit(storage, send)
    assert _rows(db_path, "SELECT data, last_seq FROM chats") == [(document[0], 3)]
    async with storage.uow() as uow:
        loaded = await uow.chats.get("c1")
        assert loaded is not None and loaded.last_seq == 3
        assert [c.last_seq for c in await uow.chats.list_for_user("u2")] == [3]
        loaded.title = "renamed"  # any other change rewrites the document, with the current seq
        await uow.chats.save(loaded)
        await uow.commit()
    ((data, last_seq),) = _rows(db_path, "SELECT data, last_seq FROM chats")
    assert msgspec.json.decode(data, type=Chat) == loaded and last_seq == 3
    # Whoever writes chats.last_seq directly (a bulk import) moves the authoritative seq along.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE chats SET last_seq = 10")
    conn.close()
    async with storage.uow() as uow:
        loaded = await uow.chats.get("c1")
        assert loaded is not None and loaded.last_seq == 10


# -- queries --------------------------------------------------------------------------------


async def _history(storage: Storage, count: int) -> Chat:
    chat = _chat("c1", "u1", "u2")
    messages = [_message(chat, "u1" if i % 2 == 0 else "u2") for i in range(count)]
    await _commit(storage, lambda uow: _add_chat_and_messages(uow, chat, messages))
    return chat


async def test_pages_in_both_directions_and_unread_counts(storage: Storage) -> None:
    await _history(storage, 30)  # u1 wrote the odd seqs, u2 the even ones

    async def deleted(uow: UnitOfWork) -> None:
        for seq in (10, 11):
            message = await uow.messages.get("c1", seq)
            assert message is not None
            message.body, message.deleted_at, message.deleted_by = "", NOW, message.author_id
            await uow.messages.save(message)

    await _commit(storage, deleted)
    async with storage.uow() as uow:
        seqs = [m.seq for m in await uow.messages.list("c1", after=None, before=None, limit=4)]
        assert seqs == [1, 2, 3, 4]
        seqs = [m.seq for m in await uow.messages.list("c1", after=25, before=None, limit=10)]
        assert seqs == [26, 27, 28, 29, 30]
        seqs = [m.seq for m in await uow.messages.list("c1", after=None, before=31, limit=3)]
        assert seqs == [28, 29, 30]
        seqs = [m.seq for m in await uow.messages.list("c1", after=None, before=12, limit=3)]
        assert seqs == [9, 10, 11]  # tombstones keep their place
        assert await uow.messages.list("c1", after=None, before=1, limit=3) == []
        assert await uow.messages.list("c1", after=0, before=None, limit=0) == []
        assert await uow.messages.count_unread("c1", "u1", 0) == 14  # 15 even seqs, 10 deleted
        assert await uow.messages.count_unread("c1", "u2", 0) == 14  # 15 odd seqs, 11 deleted
        assert await uow.messages.count_unread("c1", "u2", 20) == 5
        assert await uow.messages.count_unread("c1", "u2", 30) == 0
        assert await uow.messages.count_unread("other", "u2", 0) == 0
        last = await uow.messages.last("c1")
        assert last is not None and last.seq == 30


@pytest.mark.parametrize(
    ("sql", "index"),
    [
        (
            "SELECT count(*) FROM messages WHERE chat_id = ? AND seq > ? AND deleted = 0 AND author_id <> ?",
            "messages_unread",
        ),
        (
            "SELECT data FROM messages WHERE chat_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            "autoindex_messages_1",
        ),
        (
            "SELECT data FROM messages WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            "autoindex_messages_1",
        ),
        (
            "SELECT id, stream_id, seq, occurred_at, data FROM events "
            "WHERE stream_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            "autoindex_events_2",
        ),
        (
            "SELECT id, stream_id, seq, occurred_at, data FROM events "
            "WHERE dispatched = 0 ORDER BY pos LIMIT ?",
            "events_undispatched",  # a partial index: scanning it reads only the pending rows
        ),
        (
            "SELECT c.data, c.last_seq FROM chat_members AS m JOIN chats AS c ON c.id = m.chat_id "
            "WHERE m.user_id = ? ORDER BY m.chat_id",
            "chat_members_by_user",
        ),
        ("SELECT data, last_seq FROM chats WHERE group_id = ? ORDER BY id", "chats_by_group"),
    ],
)
def test_hot_queries_are_index_ranges_never_scans(db_path: Path, sql: str, index: str) -> None:
    migrate(db_path)
    conn = sqlite3.connect(db_path)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1,) * sql.count("?"))]
    finally:
        conn.close()
    partial_scan = f"SCAN events USING INDEX {index}"
    assert not any(step.startswith("SCAN") and step != partial_scan for step in plan), plan
    assert any(index in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


# -- the event log --------------------------------------------------------------------------


async def test_event_seqs_are_gapless_per_stream_across_commits(storage: Storage) -> None:
    for i in range(5):
        events: list[Any] = [
            ChatMemberAdded(chat_id="c1", user_id=f"a{i}", by="u1"),
            ProfileUpdated(user_id="u1", display_name=str(i), bio=""),
            ChatMemberAdded(chat_id="c2", user_id=f"b{i}", by="u1"),
            ChatMemberAdded(chat_id="c1", user_id=f"c{i}", by="u1"),
        ]
        await _commit(storage, functools.partial(_record_many, events=events))
    for stream, count in (("c1", 10), ("c2", 5), ("u1", 5)):
        records = await storage.log.read(stream, after_seq=0, limit=100)
        assert [r.seq for r in records] == list(range(1, count + 1))
        assert await storage.log.last_seq(stream) == count
        back = await storage.log.read_back(stream, before_seq=count + 1, limit=100)
        assert back == records[::-1]
    everything = await storage.log.undispatched(100)
    assert len(everything) == 20
    assert [r.event for r in everything][:4] == [
        ChatMemberAdded(chat_id="c1", user_id="a0", by="u1"),
        ProfileUpdated(user_id="u1", display_name="0", bio=""),
        ChatMemberAdded(chat_id="c2", user_id="b0", by="u1"),
        ChatMemberAdded(chat_id="c1", user_id="c0", by="u1"),
    ]


async def _record_many(uow: UnitOfWork, events: list[Any]) -> None:
    for event in events:
        uow.record(event)


async def test_records_round_trip_with_their_event_types(storage: Storage) -> None:
    storage.clock.set(datetime(2026, 5, 1, 8, 0, 0, 999, tzinfo=UTC))
    event = RoleDefined(
        group_id="g1", role_id="r1", name="Mod", rank=50, permissions=("send_messages",), by="u1"
    )
    posted = MessagePosted(
        chat_id="c1",
        message_id="m1",
        seq=1,
        author_id="u1",
        body="hi",
        reply_to=None,
        client_msg_id=None,
        created_at=NOW,
    )
    records = await _commit(storage, lambda uow: _record_many(uow, [event, posted]))
    assert await storage.log.read("g1", after_seq=0, limit=10) == records[:1]
    (stored,) = await storage.log.read("c1", after_seq=0, limit=10)
    assert stored == records[1]
    assert type(stored.event) is MessagePosted
    assert stored.occurred_at == datetime(2026, 5, 1, 8, 0, 0, 999, tzinfo=UTC)


async def test_undispatched_survives_a_restart_until_marked(db_path: Path) -> None:
    clock = FakeClock(NOW)
    async with SqliteDatabase(db_path) as db:
        uow, log = sqlite_uow_factory(db, clock, SequentialIds("a")), SqliteEventLog(db)
        async with uow() as unit:
            for name in "abcd":
                unit.record(ProfileUpdated(user_id="u1", display_name=name, bio=""))
            records = await unit.commit()
        await log.mark_dispatched([records[0].id, records[2].id, "no-such-id"])
        await log.mark_dispatched([])
    async with SqliteDatabase(db_path) as db:
        log = SqliteEventLog(db)
        assert await log.undispatched(10) == [records[1], records[3]]
        await log.mark_dispatched([records[1].id, records[3].id])
        assert await log.undispatched(10) == []
        assert await log.read("u1", after_seq=0, limit=10) == records


# -- restarts, migrations, durability settings ----------------------------------------------


async def test_data_survives_close_and_reopen_with_the_same_seqs(db_path: Path) -> None:
    clock = FakeClock(NOW)
    async with sqlite_core(db_path, clock=clock, ids=SequentialIds("first")) as core:
        ann = await core.service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await core.service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        for i in range(5):
            await core.service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}"))
        before = await core.service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id))
        assert await core.log.undispatched(10) == []  # the relay ran after each commit
    async with sqlite_core(db_path, clock=clock, ids=SequentialIds("second")) as core:
        after = await core.service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id))
        assert after == before
        assert [m.seq for m in after.messages] == [1, 2, 3, 4, 5]
        sent = await core.service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body="m5"))
        assert sent.message.seq == 6
        posted = [r for r in await core.log.read(chat.id, after_seq=0, limit=100)]
        assert [r.seq for r in posted] == list(range(1, len(posted) + 1))


def test_migrate_creates_the_schema_once_and_is_idempotent(db_path: Path) -> None:
    assert migrate(db_path) == LATEST_VERSION
    assert migrate(db_path) == LATEST_VERSION
    versions = _rows(db_path, "SELECT version, name FROM schema_version")
    assert versions == [(m.version, m.name) for m in MIGRATIONS]
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    tables = {r[0] for r in _rows(db_path, "SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert {"users", "credentials", "groups", "group_members", "chats", "chat_members"} <= tables
    assert {"messages", "read_markers", "streams", "events", "schema_version"} <= tables


def test_a_later_migration_applies_on_top_and_a_failing_one_changes_nothing(db_path: Path) -> None:
    migrate(db_path)
    conn = sqlite3.connect(db_path, autocommit=True)
    try:
        later = [*MIGRATIONS, Migration(LATEST_VERSION + 1, "nicknames", "ALTER TABLE users ADD nick TEXT;")]
        assert apply_migrations(conn, later) == LATEST_VERSION + 1
        broken = [
            *later,
            Migration(LATEST_VERSION + 2, "half", "CREATE TABLE t1 (x INTEGER); CREATE TABLE users (y);"),
        ]
        with pytest.raises(sqlite3.OperationalError):
            apply_migrations(conn, broken)
        assert not conn.in_transaction
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (LATEST_VERSION + 1,)
        assert conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 't1'").fetchone() is None
        # This code knows fewer migrations than the file has: it refuses to touch it.
        with pytest.raises(SchemaError, match="newer"):
            apply_migrations(conn)
    finally:
        conn.close()
    with pytest.raises(SchemaError, match="newer"):
        migrate(db_path)


async def test_open_without_migrating_refuses_an_outdated_file(db_path: Path) -> None:
    db = SqliteDatabase(db_path, migrate=False)
    with pytest.raises(SchemaError, match="init-db"):
        await db.open()
    migrate(db_path)
    async with SqliteDatabase(db_path, migrate=False) as opened:
        assert await SqliteEventLog(opened).last_seq("x") == 0


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_connection_settings(db_path: Path, synchronous: Any, level: int) -> None:
    async with SqliteDatabase(db_path, synchronous=synchronous, busy_timeout_s=2.5) as db:
        settings = await db.read(
            lambda c: [
                c.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
        )
        assert settings == ["wal", level, 1, 2500]
        await SqliteEventLog(db).mark_dispatched(["x"])  # commits without fsync, then restores
        async with db.writer_turn() as conn:
            writer = conn.execute("PRAGMA synchronous").fetchone()[0]
        assert writer == level


async def test_an_in_memory_database_works_on_one_connection() -> None:
    clock, ids = FakeClock(NOW), SequentialIds()
    async with SqliteDatabase(":memory:") as db:
        uow, log = sqlite_uow_factory(db, clock, ids), SqliteEventLog(db)
        async with uow() as unit:
            await unit.users.add(User("u1", "ann@example.com", "Ann", NOW))
            unit.record(ProfileUpdated(user_id="u1", display_name="Ann", bio=""))
            await unit.commit()
        assert await log.last_seq("u1") == 1
        assert len(await log.undispatched(10)) == 1


# -- the use cases on SQLite ----------------------------------------------------------------


async def test_fifty_concurrent_sends_get_seqs_one_to_fifty(storage: Storage) -> None:
    service = _service(storage)
    ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
    bob = await service.create_user(CreateUserCommand(email="bob@example.com", display_name="Bob"))
    chat = await service.create_group_chat(
        CreateGroupChatCommand(actor=ann.id, title="t", member_ids=[bob.id])
    )
    results = await asyncio.gather(
        *(
            service.send_message(
                SendMessageCommand(
                    actor=(ann.id, bob.id)[i % 2], chat_id=chat.id, body=f"m{i}", client_msg_id=f"k{i}"
                )
            )
            for i in range(50)
        )
    )
    assert sorted(r.message.seq for r in results) == list(range(1, 51))
    page = await service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id, limit=100))
    assert [m.seq for m in page.messages] == list(range(1, 51))
    posted = [r.event for r in await storage.log.read(chat.id, after_seq=0, limit=200)]
    assert [e.seq for e in posted if isinstance(e, MessagePosted)] == list(range(1, 51))
    assert (await service.get_chat(ann.id, chat.id)).last_seq == 50


async def test_two_databases_on_one_file_take_turns_like_two_processes(db_path: Path) -> None:
    clock = FakeClock(NOW)
    async with SqliteDatabase(db_path) as one, SqliteDatabase(db_path) as two:
        first = ChatService(
            Deps(sqlite_uow_factory(one, clock, SequentialIds("a")), clock, SequentialIds("x"), Limits())
        )
        second = ChatService(
            Deps(sqlite_uow_factory(two, clock, SequentialIds("b")), clock, SequentialIds("y"), Limits())
        )
        ann = await first.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await first.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        results = await asyncio.gather(
            *(
                (first, second)[i % 2].send_message(
                    SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}")
                )
                for i in range(40)
            )
        )
        assert sorted(r.message.seq for r in results) == list(range(1, 41))
        log = SqliteEventLog(two)
        assert [r.seq for r in await log.read(chat.id, after_seq=0, limit=100)] == list(range(1, 42))


async def _scenario(service: ChatService, log: EventLog, clock: FakeClock) -> list[Any]:
    """A walk through most use cases; returns every answer (or refusal) and the final logs."""
    out: list[Any] = []

    async def step(call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except Exception as error:
            out.append((type(error).__name__, str(error)))
            return None
        out.append(result)
        clock.advance(1)
        return result

    ann = await step(service.create_user(CreateUserCommand(email="Ann@Example.com", display_name="Ann")))
    bob = await step(service.create_user(CreateUserCommand(email="bob@example.com", display_name="Bob")))
    cat = await step(service.create_user(CreateUserCommand(email="cat@example.com", display_name="Cat")))
    await step(service.create_user(CreateUserCommand(email="ann@example.com", display_name="Dup")))
    await step(service.update_my_profile(UpdateProfileCommand(actor=bob.id, bio="hello")))
    group = await step(service.create_group(CreateGroupCommand(actor=ann.id, name="Team")))
    await step(service.add_group_member(GroupMemberCommand(actor=ann.id, group_id=group.id, user_id=bob.id)))
    await step(service.add_group_member(GroupMemberCommand(actor=ann.id, group_id=group.id, user_id=cat.id)))
    role = await step(
        service.define_role(
            DefineRoleCommand(
                actor=ann.id, group_id=group.id, name="Mod", rank=50, permissions=["delete_any_message"]
            )
        )
    )
    role_id = next(r.id for r in role.roles if r.name == "Mod")
    await step(
        service.assign_role(
            RoleAssignmentCommand(actor=ann.id, group_id=group.id, user_id=bob.id, role_id=role_id)
        )
    )
    chat = await step(
        service.create_group_chat(
            CreateGroupChatCommand(actor=ann.id, title="general", member_ids=[bob.id], group_id=group.id)
        )
    )
    await step(service.add_chat_member(ChatMemberCommand(actor=ann.id, chat_id=chat.id, user_id=cat.id)))
    await step(service.rename_chat(RenameChatCommand(actor=ann.id, chat_id=chat.id, title="General")))
    direct, _ = await step(service.open_direct_chat(OpenDirectChatCommand(actor=bob.id, user_id=cat.id)))
    await step(service.open_direct_chat(OpenDirectChatCommand(actor=cat.id, user_id=bob.id)))
    for i, who in enumerate([ann, bob, cat, bob, ann]):
        await step(
            service.send_message(
                SendMessageCommand(actor=who.id, chat_id=chat.id, body=f"hi {i}", client_msg_id=f"k{i}")
            )
        )
    await step(
        service.send_message(
            SendMessageCommand(actor=ann.id, chat_id=chat.id, body="hi 0", client_msg_id="k0")
        )
    )
    await step(
        service.send_message(
            SendMessageCommand(actor=ann.id, chat_id=chat.id, body="other", client_msg_id="k0")
        )
    )
    await step(service.send_message(SendMessageCommand(actor=bob.id, chat_id=direct.id, body="psst")))
    await step(service.edit_message(EditMessageCommand(actor=bob.id, chat_id=chat.id, seq=2, body="edited")))
    await step(
        service.edit_message(EditMessageCommand(actor=ann.id, chat_id=chat.id, seq=2, body="not mine"))
    )
    await step(service.delete_message(bob.id, chat.id, 1))  # Mod may delete any message
    await step(service.delete_message(cat.id, chat.id, 5))
    await step(service.get_edit_history(ann.id, chat.id, 2))
    await step(service.get_message(cat.id, chat.id, 1))
    await step(service.mark_read(MarkReadCommand(actor=cat.id, chat_id=chat.id, seq=2)))
    await step(service.mark_read(MarkReadCommand(actor=cat.id, chat_id=chat.id, seq=1)))
    for who in (ann, bob, cat):
        await step(service.list_my_chats(who.id))
        await step(service.list_my_groups(who.id))
    await step(service.list_messages(ListMessagesQuery(actor=cat.id, chat_id=chat.id, limit=2)))
    await step(service.list_messages(ListMessagesQuery(actor=cat.id, chat_id=chat.id, after=1, limit=2)))
    await step(service.list_messages(ListMessagesQuery(actor=cat.id, chat_id=chat.id, before=3, limit=5)))
    await step(
        service.remove_group_member(GroupMemberCommand(actor=ann.id, group_id=group.id, user_id=cat.id))
    )
    await step(service.leave_chat(cat.id, direct.id))
    await step(service.delete_group(ann.id, group.id))
    await step(service.get_chat(ann.id, chat.id))
    await step(service.list_my_groups(ann.id))
    for stream in sorted({ann.id, bob.id, cat.id, group.id, chat.id, direct.id}):
        out.append(await log.read(stream, after_seq=0, limit=1000))
    return out


async def test_the_use_cases_give_the_same_answers_and_events_as_on_memory(db_path: Path) -> None:
    memory_clock = FakeClock(NOW)
    memory = memory_core(clock=memory_clock, ids=SequentialIds())
    expected = await _scenario(memory.service, memory.log, memory_clock)
    clock = FakeClock(NOW)
    async with sqlite_core(db_path, clock=clock, ids=SequentialIds()) as core:
        got = await _scenario(core.service, core.log, clock)
        assert await core.log.undispatched(10) == []
    assert len(got) == len(expected)
    for index, (mine, reference) in enumerate(zip(got, expected, strict=True)):
        assert mine == reference, f"step {index}"
    refusals = [r for r in expected if isinstance(r, tuple)]
    assert len(refusals) >= 4  # the scenario does exercise the error paths


# -- pages and counts agree with the memory adapter -----------------------------------------

_query = st.one_of(
    st.tuples(st.just("after"), st.integers(0, 45), st.integers(1, 12)),
    st.tuples(st.just("before"), st.integers(0, 45), st.integers(1, 12)),
    st.tuples(st.just("unread"), st.integers(0, 45), st.sampled_from(["u1", "u2", "u3"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    authors=st.lists(st.sampled_from(["u1", "u2", "u3"]), max_size=40),
    deleted=st.sets(st.integers(1, 40)),
    queries=st.lists(_query, min_size=1, max_size=8),
)
def test_pages_and_unread_counts_match_the_memory_adapter(
    authors: list[str], deleted: set[int], queries: list[tuple[str, int, Any]]
) -> None:
    async def answers(uow: UnitOfWorkFactory) -> list[Any]:
        chat = _chat("c1", "u1", "u2", "u3")
        messages = [_message(chat, author) for author in authors]
        for message in messages:
            if message.seq in deleted:
                message.body, message.deleted_at = "", NOW
        async with uow() as unit:
            await _add_chat_and_messages(unit, chat, messages)
            await unit.commit()
        out: list[Any] = []
        async with uow() as unit:
            for kind, value, extra in queries:
                if kind == "unread":
                    out.append(await unit.messages.count_unread("c1", extra, value))
                else:
                    after, before = (value, None) if kind == "after" else (None, value)
                    page = await unit.messages.list("c1", after=after, before=before, limit=extra)
                    out.append([(m.seq, m.author_id, m.is_deleted) for m in page])
        return out

    async def both() -> tuple[list[Any], list[Any]]:
        store, clock, ids = MemoryStore(), FakeClock(NOW), SequentialIds()
        expected = await answers(lambda: MemoryUnitOfWork(store, clock, ids))
        async with SqliteDatabase(":memory:") as db:
            got = await answers(sqlite_uow_factory(db, clock, ids))
        return got, expected

    got, expected = asyncio.run(both())
    assert got == expected
