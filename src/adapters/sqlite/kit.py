"""One call to get the whole core running on a SQLite file: for embedding and for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from adapters.memory.bus import MemoryEventBus
from adapters.sqlite.connection import Synchronous
from adapters.sqlite.database import SqliteDatabase
from adapters.sqlite.unit_of_work import SqliteEventLog, sqlite_read_uow_factory, sqlite_uow_factory
from adapters.system import SystemClock, UlidGenerator
from chatcore.application.common import Deps
from chatcore.application.relay import OutboxRelay
from chatcore.application.service import ChatService
from chatcore.domain.events import EventRecord
from chatcore.domain.limits import Limits
from chatcore.ports.events import EventBus
from chatcore.ports.system import Clock, IdGenerator


@dataclass
class SqliteCore:
    service: ChatService
    db: SqliteDatabase
    log: SqliteEventLog
    bus: EventBus
    relay: OutboxRelay
    clock: Clock
    ids: IdGenerator


@asynccontextmanager
async def sqlite_core(
    path: str | Path,
    *,
    limits: Limits | None = None,
    clock: Clock | None = None,
    ids: IdGenerator | None = None,
    bus: EventBus | None = None,
    synchronous: Synchronous = "FULL",
) -> AsyncIterator[SqliteCore]:
    """The core on the database at `path` (created and migrated if needed), closed on exit.

    Ids default to ULIDs, not sequential test ids: the data outlives the process.
    """
    clock = clock or SystemClock()
    ids = ids or UlidGenerator()
    async with SqliteDatabase(path, synchronous=synchronous) as db:
        log, bus = SqliteEventLog(db), bus or MemoryEventBus()
        relay = OutboxRelay(log, bus)

        async def committed(records: Sequence[EventRecord]) -> None:
            await relay.dispatch_pending()

        deps = Deps(
            uow=sqlite_uow_factory(db, clock, ids),
            read_uow=sqlite_read_uow_factory(db, clock, ids),  # reads never queue behind a commit
            clock=clock,
            ids=ids,
            limits=limits or Limits(),
            committed=committed,
        )
        yield SqliteCore(ChatService(deps), db, log, bus, relay, clock, ids)
