"""The SQLite unit of work (one transaction: the changes and their events) and the event log."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self

import msgspec

from adapters.sqlite.connection import ensure_transaction, rollback
from adapters.sqlite.database import SqliteDatabase
from adapters.sqlite.repositories import (
    SqliteChatRepository,
    SqliteCredentialRepository,
    SqliteGroupRepository,
    SqliteMessageRepository,
    SqliteReadMarkerRepository,
    SqliteUserRepository,
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

# The stream's next seq, taken in the committing transaction: gapless, since writers take turns
# and a rolled-back transaction takes its seqs back with it.
_NEXT_SEQ = (
    "INSERT INTO streams (stream_id, last_seq) VALUES (?, 1) "
    "ON CONFLICT (stream_id) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq"
)
_INSERT_EVENT = "INSERT INTO events (id, stream_id, seq, occurred_at, data) VALUES (?, ?, ?, ?, ?)"


def _in_transaction[T](fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    ensure_transaction(conn)
    return fn(conn)


class SqliteUnitOfWork:
    """`async with` takes the database's writer turn; the transaction starts at the first statement.

    Writers never overlap, so `ConcurrentUpdate` is never raised: what a unit of work read is
    still true when it commits. A unit of work may commit more than once; each commit ends a
    transaction and the next statement starts another.
    """

    def __init__(self, db: SqliteDatabase, clock: Clock, ids: IdGenerator) -> None:
        self._db, self._clock, self._ids = db, clock, ids
        self._events: list[AnyEvent] = []
        self._active = False
        self._touched = False  # a statement ran since the last commit
        self._chats, self._groups = SqliteChatRepository(self), SqliteGroupRepository(self)
        # Typed as the ports: the UnitOfWork protocol's attributes are mutable, hence invariant.
        self.users: UserRepository = SqliteUserRepository(self)
        self.credentials: CredentialRepository = SqliteCredentialRepository(self)
        self.groups: GroupRepository = self._groups
        self.chats: ChatRepository = self._chats
        self.messages: MessageRepository = SqliteMessageRepository(self)
        self.read_markers: ReadMarkerRepository = SqliteReadMarkerRepository(self)

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("this unit of work is already in use")
        self._lock = self._db.lock  # released even if the database is closed meanwhile
        await self._lock.acquire()
        self._active, self._touched = True, False
        self._events = []
        self._forget()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._events = []
        self._forget()
        try:
            if self._touched and exc_type is None:
                # Left without a commit (a read): end its transaction without waiting for that.
                # The writer runs one call at a time, in order: the rollback runs after this
                # unit's statements and before anything the next holder of the turn runs.
                self._db.queue_on_writer(rollback)
            elif self._touched:
                # Queued behind any statement still running, so it undoes that one too.
                await self._db.on_writer(rollback)
        finally:
            self._active = False
            self._lock.release()

    def _forget(self) -> None:
        self._chats.known_members.clear()
        self._groups.known_members.clear()

    async def run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        self._touched = True
        return await self._db.on_writer(functools.partial(_in_transaction, fn))

    def record(self, event: AnyEvent) -> None:
        self._events.append(event)

    async def commit(self) -> list[EventRecord]:
        now = self._clock.now()
        occurred_at = now.isoformat()
        staged = [(self._ids.new_id(), event.stream_id, encode(event)) for event in self._events]

        def write(conn: sqlite3.Connection) -> list[int]:
            seqs = []
            for event_id, stream_id, data in staged:
                (seq,) = conn.execute(_NEXT_SEQ, (stream_id,)).fetchone()
                conn.execute(_INSERT_EVENT, (event_id, stream_id, seq, occurred_at, data))
                seqs.append(seq)
            conn.execute("COMMIT")  # also checks the deferred foreign keys
            return seqs

        seqs = await self.run(write)
        records = [
            EventRecord(id=event_id, stream_id=stream_id, seq=seq, occurred_at=now, event=event)
            for (event_id, stream_id, _), seq, event in zip(staged, seqs, self._events, strict=True)
        ]
        self._events, self._touched = [], False
        self._forget()  # other processes may write before this unit's next transaction
        return records


def sqlite_uow_factory(db: SqliteDatabase, clock: Clock, ids: IdGenerator) -> UnitOfWorkFactory:
    return lambda: SqliteUnitOfWork(db, clock, ids)


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
