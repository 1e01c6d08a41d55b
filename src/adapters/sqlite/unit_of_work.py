"""The SQLite units of work (one transaction: the changes and their events) and the event log.

A write unit is a savepoint in the writer's batch (see `SqliteDatabase`): its statements run
inline while it holds the writer's turn, and `commit()` returns once the batch's COMMIT made
it durable. A read unit reads committed data on the reader connection without the turn.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import msgspec

from adapters.sqlite.database import SqliteDatabase
from adapters.sqlite.repositories import (
    SqliteChatRepository,
    SqliteCredentialRepository,
    SqliteGroupRepository,
    SqliteMessageRepository,
    SqliteReadMarkerRepository,
    SqliteUserRepository,
    Transaction,
    encode,
)
from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.ports.repositories import (
    ChatRepository,
    CredentialRepository,
    GroupRepository,
    MessageRepository,
    ReadMarkerRepository,
    UserRepository,
)
from chatcore.ports.system import Clock, IdGenerator
from chatcore.ports.unit_of_work import UnitOfWorkFactory

_events: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)

# The stream's next seq, taken in the unit's savepoint: gapless, since units take turns and a
# unit rolled back to its savepoint (or a batch whose COMMIT failed) takes its seqs back.
_NEXT_SEQ = (
    "INSERT INTO streams (stream_id, last_seq) VALUES (?, 1) "
    "ON CONFLICT (stream_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq"
)
_INSERT_EVENT = "INSERT INTO events (id, stream_id, seq, occurred_at, data) VALUES (?, ?, ?, ?, ?)"
_COUNT_CHATS = "SELECT count(*) FROM chats WHERE id IN (SELECT value FROM json_each(?))"


class _Repositories:
    """The repositories of a unit of work, over its `run`."""

    def _repositories(self, tx: Transaction) -> None:
        self._chats, self._groups = SqliteChatRepository(tx), SqliteGroupRepository(tx)
        self._messages = SqliteMessageRepository(tx)
        # Typed as the ports: the UnitOfWork protocol's attributes are mutable, hence invariant.
        self.users: UserRepository = SqliteUserRepository(tx)
        self.credentials: CredentialRepository = SqliteCredentialRepository(tx)
        self.groups: GroupRepository = self._groups
        self.chats: ChatRepository = self._chats
        self.messages: MessageRepository = self._messages
        self.read_markers: ReadMarkerRepository = SqliteReadMarkerRepository(tx)

    def _forget(self) -> None:
        self._chats.known_members.clear()
        self._chats.known_docs.clear()
        self._groups.known_members.clear()
        self._messages.chat_ids.clear()


class SqliteUnitOfWork(_Repositories):
    """`async with` takes the database's writer turn; the savepoint starts at the first statement.

    Writers never overlap, so `ConcurrentUpdate` is never raised: what a unit of work read is
    still true when it commits. A unit of work may commit more than once: a commit hands the
    turn on (the batch goes on without it), and the next statement takes the turn again.
    """

    def __init__(self, db: SqliteDatabase, clock: Clock, ids: IdGenerator) -> None:
        self._db, self._clock, self._ids = db, clock, ids
        self._events: list[AnyEvent] = []
        self._active = False
        self._holding = False  # this unit holds the writer's turn
        self._savepoint = False  # this unit's savepoint is open in the batch
        self._repositories(self)

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("this unit of work is already in use")
        await self._db.take_turn()
        self._active, self._holding, self._savepoint = True, True, False
        self._events = []
        self._forget()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._events = []
        self._forget()
        try:
            if self._savepoint:
                self._db.rollback_unit()  # this unit's changes only, not the batch's
        finally:
            self._active, self._savepoint = False, False
            if self._holding:
                self._holding = False
                self._db.end_turn()

    async def _start(self) -> None:
        if not self._holding:  # a second transaction after a commit
            await self._db.take_turn()
            self._holding = True
        await self._db.begin_unit()
        self._savepoint = True

    async def run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        if not self._savepoint:
            await self._start()
        return self._db.run_in_unit(fn)

    def record(self, event: AnyEvent) -> None:
        self._events.append(event)

    async def commit(self) -> list[EventRecord]:
        now = self._clock.now()
        occurred_at = now.isoformat()
        staged = [(self._ids.new_id(), event.stream_id, encode(event)) for event in self._events]
        unchecked = self._messages.chat_ids - self._chats.read_ids()

        def write(conn: sqlite3.Connection) -> list[int]:
            _check_chats_exist(conn, unchecked)
            seqs = []
            for event_id, stream_id, data in staged:
                (seq,) = conn.execute(_NEXT_SEQ, (stream_id,)).fetchone()
                conn.execute(_INSERT_EVENT, (event_id, stream_id, seq, occurred_at, data))
                seqs.append(seq)
            return seqs

        seqs = await self.run(write)
        events, self._events = self._events, []
        durable = self._db.release_unit()
        self._savepoint, self._holding = False, False
        self._forget()  # the turn goes on to others, and other processes may write after the batch
        self._db.end_turn()
        await durable  # the batch's COMMIT: records only for what survives a crash
        return [
            EventRecord(id=event_id, stream_id=stream_id, seq=seq, occurred_at=now, event=event)
            for (event_id, stream_id, _), seq, event in zip(staged, seqs, events, strict=True)
        ]


def _check_chats_exist(conn: sqlite3.Connection, chat_ids: set[str]) -> None:
    """The unit's own check of `messages.chat_id`, a foreign key deferred to COMMIT (a unit may
    add a chat's messages before the chat). A batch's COMMIT checks it for all of its units at
    once, and would fail them all for one unit's orphan: each unit checks its own first."""
    if chat_ids and conn.execute(_COUNT_CHATS, (encode(sorted(chat_ids)),)).fetchone()[0] != len(chat_ids):
        raise sqlite3.IntegrityError("FOREIGN KEY constraint failed")


class SqliteReadUnitOfWork(_Repositories):
    """A unit of work that reads committed data and never commits.

    On the reader connection (WAL: it never waits for the writer nor takes its turn), each
    statement sees the latest committed batch. In memory there is no reader connection: it
    holds the writer's turn instead, where no uncommitted change is ever left between units.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._active = False
        self._holding = False
        self._repositories(self)

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("this unit of work is already in use")
        if self._db.reader is None:
            await self._db.take_turn()
            self._holding = True
        self._active = True
        self._forget()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        self._forget()
        if self._holding:
            self._holding = False
            self._db.end_turn()

    async def run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        conn = self._db.reader
        return self._db.call(fn, self._db.writer if conn is None else conn)

    def record(self, event: AnyEvent) -> None:
        raise RuntimeError("a read-only unit of work cannot commit")

    async def commit(self) -> list[EventRecord]:
        raise RuntimeError("a read-only unit of work cannot commit")


def sqlite_uow_factory(db: SqliteDatabase, clock: Clock, ids: IdGenerator) -> UnitOfWorkFactory:
    return lambda: SqliteUnitOfWork(db, clock, ids)


def sqlite_read_uow_factory(db: SqliteDatabase, clock: Clock, ids: IdGenerator) -> UnitOfWorkFactory:
    """Read-only units of work (`Deps.read_uow`); `clock` and `ids` for symmetry with writers."""
    return lambda: SqliteReadUnitOfWork(db)


_RECORD_COLUMNS = "id, stream_id, seq, occurred_at, data"


def _record(row: tuple[str, str, int, str, str]) -> EventRecord:
    event_id, stream_id, seq, occurred_at, data = row
    return EventRecord(
        id=event_id,
        stream_id=stream_id,
        seq=seq,
        occurred_at=datetime.fromisoformat(occurred_at),
        event=_events.decode(data),
    )


class SqliteEventLog:
    """Reads on the reader connection (committed data, never waiting for writers)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def read(self, stream_id: str, *, after_seq: int, limit: int) -> list[EventRecord]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM events "  # noqa: S608 (fixed text)
                "WHERE stream_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (stream_id, after_seq, limit),
            ).fetchall()
        )
        return [_record(row) for row in rows]

    async def read_back(self, stream_id: str, *, before_seq: int, limit: int) -> list[EventRecord]:
        """Records of the stream below `before_seq`, newest first."""
        if limit <= 0:
            return []
        rows = await self._db.read(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM events "  # noqa: S608 (fixed text)
                "WHERE stream_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (stream_id, before_seq, limit),
            ).fetchall()
        )
        return [_record(row) for row in rows]

    async def last_seq(self, stream_id: str) -> int:
        row = await self._db.read(
            lambda c: c.execute("SELECT last_seq FROM streams WHERE stream_id = ?", (stream_id,)).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def undispatched(self, limit: int) -> list[EventRecord]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            lambda c: c.execute(
                f"SELECT {_RECORD_COLUMNS} FROM events "  # noqa: S608 (fixed text)
                "WHERE dispatched = 0 ORDER BY pos LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [_record(row) for row in rows]

    async def mark_dispatched(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        ids = encode(list(event_ids))
        # Not fsynced: a mark lost to a power cut only republishes, and consumers dedupe.
        await self._db.write(
            lambda c: c.execute(
                "UPDATE events SET dispatched = 1 "
                "WHERE id IN (SELECT value FROM json_each(?)) AND dispatched = 0",
                (ids,),
            ),
            durable=False,
        )
