"""Group commit on the SQLite writer: units of work share one COMMIT (one fsync) per batch.

Each test lines units up behind the writer's turn (the first holds it until released), so that
they form one batch, then checks what each unit, a reader, and another connection see.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.sqlite import SqliteDatabase, SqliteEventLog, sqlite_read_uow_factory, sqlite_uow_factory
from adapters.sqlite.unit_of_work import SqliteUnitOfWork
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.common import Deps
from chatcore.application.messages import SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.service import ChatService
from chatcore.domain.chats import Chat, ChatKind, ChatMember
from chatcore.domain.events import ProfileUpdated
from chatcore.domain.limits import Limits
from chatcore.domain.messages import Message
from chatcore.domain.users import User
from chatcore.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory
from chatcore.testing.doubles import FakeClock, SequentialIds

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

Work = Callable[[UnitOfWork], Awaitable[None]]


class Storage(msgspec.Struct):
    db: SqliteDatabase
    uow: UnitOfWorkFactory
    read_uow: UnitOfWorkFactory
    log: SqliteEventLog
    clock: FakeClock
    ids: SequentialIds
    path: Path


def _storage(db: SqliteDatabase, clock: FakeClock, ids: SequentialIds, path: Path) -> Storage:
    return Storage(
        db,
        sqlite_uow_factory(db, clock, ids),
        sqlite_read_uow_factory(db, clock, ids),
        SqliteEventLog(db),
        clock,
        ids,
        path,
    )


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    clock, ids, path = FakeClock(NOW), SequentialIds(), tmp_path / "chatcore.db"
    async with SqliteDatabase(path) as db:
        yield _storage(db, clock, ids, path)


def _rows(path: Path, sql: str) -> list[Any]:
    """Read the file as another process would: committed data only."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _user(user_id: str) -> User:
    return User(user_id, f"{user_id}@example.com", user_id, NOW)


async def _add_user(uow: UnitOfWork, user_id: str) -> None:
    await uow.users.add(_user(user_id))
    uow.record(ProfileUpdated(user_id="log", display_name=user_id, bio=""))  # one shared stream


class Line:
    """Units of work queued behind the writer's turn, released one by one."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.tasks: list[asyncio.Task[Any]] = []

    async def unit(self, work: Work, *, commit: bool = True, hold: asyncio.Event | None = None) -> None:
        """Start a unit that does `work` once it holds the turn, waits for `hold`, then commits
        (or leaves without committing); returns once it holds the turn or is queued for it."""
        entered = asyncio.Event()

        async def run() -> Any:
            async with self.storage.uow() as uow:
                await work(uow)
                entered.set()
                if hold is not None:
                    await hold.wait()
                return await uow.commit() if commit else None

        waiting = self.storage.db.waiting
        self.tasks.append(asyncio.create_task(run()))
        async with asyncio.timeout(5):
            # Polled: being queued for the turn has no event to wait for.
            while not entered.is_set() and self.storage.db.waiting == waiting:  # noqa: ASYNC110
                await asyncio.sleep(0)

    async def outcomes(self) -> list[Any]:
        async with asyncio.timeout(10):
            return await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_many_concurrent_sends_are_durable_gapless_and_share_commits(storage: Storage) -> None:
    service = ChatService(Deps(uow=storage.uow, clock=storage.clock, ids=storage.ids, limits=Limits()))
    ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
    chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
    before = dataclasses.replace(storage.db.stats)  # a copy
    sent = await asyncio.gather(
        *(
            service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}"))
            for i in range(200)
        )
    )
    assert sorted(s.message.seq for s in sent) == list(range(1, 201))
    # Acknowledged means committed: another connection sees every one of them.
    assert _rows(storage.path, "SELECT count(*) FROM messages") == [(200,)]
    seqs = _rows(storage.path, f"SELECT seq FROM events WHERE stream_id = '{chat.id}' ORDER BY pos")  # noqa: S608
    assert [s for (s,) in seqs] == list(range(1, len(seqs) + 1))
    commits, units = storage.db.stats.commits - before.commits, storage.db.stats.units - before.units
    assert units == 200
    assert commits < units / 4  # they shared commits


async def test_a_unit_failing_mid_batch_leaves_the_others_committed(storage: Storage) -> None:
    line, hold, commits = Line(storage), asyncio.Event(), storage.db.stats.commits

    async def fail(uow: UnitOfWork) -> None:
        await _add_user(uow, "b")
        raise RuntimeError("half-way")

    await line.unit(lambda uow: _add_user(uow, "a"), hold=hold)
    await line.unit(fail)
    await line.unit(lambda uow: _add_user(uow, "c"))
    hold.set()
    a, b, c = await line.outcomes()
    assert isinstance(b, RuntimeError)
    assert [r.seq for r in a] == [1] and [r.seq for r in c] == [2]  # b gave its seq back
    assert _rows(storage.path, "SELECT id FROM users ORDER BY id") == [("a",), ("c",)]
    assert storage.db.stats.commits == commits + 1  # a and c in one batch


async def test_units_leaving_without_commit_undo_only_their_own_changes(storage: Storage) -> None:
    line, hold = Line(storage), asyncio.Event()
    await line.unit(lambda uow: _add_user(uow, "a"), hold=hold)
    await line.unit(lambda uow: _add_user(uow, "b"), commit=False)
    await line.unit(lambda uow: _add_user(uow, "c"))
    hold.set()
    a, b, c = await line.outcomes()
    assert b is None and [r.seq for r in a] == [1] and [r.seq for r in c] == [2]
    assert _rows(storage.path, "SELECT id FROM users ORDER BY id") == [("a",), ("c",)]
    assert [r.seq for r in await storage.log.read("log", after_seq=0, limit=10)] == [1, 2]


async def test_a_failed_batch_commit_fails_every_unit_of_the_batch(storage: Storage) -> None:
    line, hold = Line(storage), asyncio.Event()

    async def orphan(uow: UnitOfWork) -> None:
        # Raw SQL past the repositories' own check: a violation of the deferred foreign key
        # that only the batch's COMMIT finds.
        assert isinstance(uow, SqliteUnitOfWork)
        await uow.run(
            lambda c: c.execute(
                "INSERT INTO messages (chat_id, seq, author_id, data) VALUES ('nochat', 1, 'b', '{}')"
            )
        )

    await line.unit(lambda uow: _add_user(uow, "a"), hold=hold)
    await line.unit(orphan)
    await line.unit(lambda uow: _add_user(uow, "c"))
    hold.set()
    outcomes = await line.outcomes()
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert _rows(storage.path, "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events)") == [
        (0, 0)
    ]
    async with storage.uow() as uow:  # the writer goes on, and the failed batch's seqs are free
        await _add_user(uow, "d")
        assert [r.seq for r in await uow.commit()] == [1]


def _chat(chat_id: str) -> Chat:
    chat = Chat(chat_id, ChatKind.GROUP, NOW, title="t", owner_id="a")
    chat.members = {"a": ChatMember("a", NOW)}
    return chat


async def _message_to(uow: UnitOfWork, chat_id: str) -> None:
    await uow.messages.add(Message(f"{chat_id}-1", chat_id, 1, "a", "hi", NOW))


async def test_a_message_to_a_missing_chat_fails_its_own_unit_not_the_batch(storage: Storage) -> None:
    line, hold = Line(storage), asyncio.Event()

    async def message_then_chat(uow: UnitOfWork) -> None:
        await _message_to(uow, "c2")  # before its chat, in the same unit: allowed
        await uow.chats.add(_chat("c2"))

    await line.unit(lambda uow: uow.chats.add(_chat("c1")), hold=hold)
    await line.unit(lambda uow: _message_to(uow, "nochat"))
    await line.unit(message_then_chat)
    await line.unit(lambda uow: _message_to(uow, "c1"))  # a chat committed earlier in the batch
    hold.set()
    first, orphan, second, third = await line.outcomes()
    assert isinstance(orphan, sqlite3.IntegrityError), orphan
    assert first == second == third == []
    assert _rows(storage.path, "SELECT chat_id FROM messages ORDER BY chat_id") == [("c1",), ("c2",)]


async def test_a_reader_sees_a_batch_only_once_it_is_committed(storage: Storage) -> None:
    line, first, second = Line(storage), asyncio.Event(), asyncio.Event()
    await line.unit(lambda uow: _add_user(uow, "a"), hold=first)
    await line.unit(lambda uow: _add_user(uow, "b"), hold=second)
    first.set()  # a commits into the batch and hands the turn to b, which holds it
    async with asyncio.timeout(5):
        while storage.db.waiting:  # noqa: ASYNC110 (polled, as in Line.unit)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
    assert not line.tasks[0].done()  # a waits for the batch's COMMIT
    async with asyncio.timeout(1):  # the read unit does not wait for the writer's turn
        async with storage.read_uow() as reader:
            assert await reader.users.get("a") is None
        assert await storage.log.last_seq("log") == 0
    assert _rows(storage.path, "SELECT count(*) FROM users") == [(0,)]
    second.set()
    await line.outcomes()
    async with storage.read_uow() as reader:
        assert [u.id for u in await reader.users.get_many(["a", "b"])] == ["a", "b"]


async def test_a_read_unit_of_work_cannot_commit(storage: Storage) -> None:
    async with storage.read_uow() as reader:
        with pytest.raises(RuntimeError, match="a read-only unit of work cannot commit"):
            reader.record(ProfileUpdated(user_id="u", display_name="x", bio=""))
        with pytest.raises(RuntimeError, match="a read-only unit of work cannot commit"):
            await reader.commit()


async def test_in_memory_a_read_unit_shares_the_writer_and_sees_commits_only() -> None:
    clock, ids = FakeClock(NOW), SequentialIds()
    async with SqliteDatabase(":memory:") as db:
        storage = _storage(db, clock, ids, Path(":memory:"))
        line, hold = Line(storage), asyncio.Event()
        await line.unit(lambda uow: _add_user(uow, "a"), hold=hold)

        async def read() -> list[str]:
            async with storage.read_uow() as reader:
                return [u.id for u in await reader.users.get_many(["a", "b"])]

        reading = asyncio.create_task(read())
        await line.unit(lambda uow: _add_user(uow, "b"), commit=False)
        hold.set()
        await line.outcomes()
        assert await reading == ["a"]  # after a's commit, never b's uncommitted change
        assert db.stats.commits == db.stats.units


async def test_a_unit_cancelled_while_its_batch_commits_fails_no_other_unit(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each unit waits for the batch's one outcome. A unit whose caller goes away meanwhile
    # (a disconnect, a timeout) must not cancel that outcome for the units beside it: their
    # changes commit, and they must hear so, not a CancelledError of someone else's.
    import adapters.sqlite.database as database

    committing, go_on = asyncio.Event(), threading.Event()
    real_commit, loop = database._commit, asyncio.get_running_loop()

    def slow_commit(conn: sqlite3.Connection, **kwargs: Any) -> None:
        loop.call_soon_threadsafe(committing.set)
        go_on.wait(5)  # the fsync of a busy disk
        real_commit(conn, **kwargs)

    monkeypatch.setattr(database, "_commit", slow_commit)
    line, hold = Line(storage), asyncio.Event()
    for user in ("a", "b", "c"):
        await line.unit(lambda uow, user=user: _add_user(uow, user), hold=hold if user == "a" else None)
    hold.set()
    await asyncio.wait_for(committing.wait(), 5)
    line.tasks[1].cancel()
    go_on.set()
    outcomes = await line.outcomes()
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert [[r.seq for r in o] for o in (outcomes[0], outcomes[2])] == [[1], [3]]
    assert _rows(storage.path, "SELECT id FROM users ORDER BY id") == [("a",), ("b",), ("c",)]


async def test_a_waiter_cancelled_as_the_turn_ends_leaves_no_batch_open(storage: Storage) -> None:
    # B waits for the turn and is cancelled (its request timed out) in the loop step in which
    # A ends its turn: B is still queued but will not take the turn, so A's batch must commit
    # now, not stay open with A waiting and the file's write lock held.
    db = storage.db
    await db.take_turn()
    await db.begin_unit()
    db.run_in_unit(lambda c: c.execute("INSERT INTO users (id, email, data) VALUES ('a', 'a@x', '{}')"))
    waiting = asyncio.create_task(db.take_turn())
    await asyncio.sleep(0)
    assert db.waiting == 1
    waiting.cancel()
    done = db.release_unit()
    db.end_turn()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    async with asyncio.timeout(5):
        await done
    assert _rows(storage.path, "SELECT id FROM users") == [("a",)]
