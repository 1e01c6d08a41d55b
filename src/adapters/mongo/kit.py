"""One call to get the whole core running on MongoDB: for embedding and for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from adapters.memory.bus import MemoryEventBus
from adapters.mongo.database import MongoStore, ServerInfo, check_server, connect, init_indexes
from adapters.mongo.documents import to_millis
from adapters.mongo.unit_of_work import MongoEventLog, mongo_uow_factory
from adapters.system import SystemClock, UlidGenerator
from chatcore.application.common import Deps
from chatcore.application.relay import OutboxRelay
from chatcore.application.service import ChatService
from chatcore.domain.events import EventRecord
from chatcore.domain.limits import Limits
from chatcore.ports.events import EventBus
from chatcore.ports.system import Clock, IdGenerator


class MillisecondClock:
    """A clock whose readings MongoDB stores exactly (BSON dates keep milliseconds).

    Without it, a message's `created_at` in the send's reply would carry microseconds that
    a later read of the same message no longer has.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> datetime:
        return to_millis(self._clock.now())


@dataclass
class MongoCore:
    service: ChatService
    store: MongoStore
    log: MongoEventLog
    bus: EventBus
    relay: OutboxRelay
    clock: Clock
    ids: IdGenerator
    server: ServerInfo


@asynccontextmanager
async def mongo_core(
    url: str,
    *,
    database: str | None = None,
    require_replica_set: bool = True,
    create_indexes: bool = True,
    limits: Limits | None = None,
    clock: Clock | None = None,
    ids: IdGenerator | None = None,
    bus: EventBus | None = None,
    server_selection_timeout_ms: int = 2_000,
    timeout_ms: int = 5_000,
) -> AsyncIterator[MongoCore]:
    """The core on the MongoDB database at `url`, checked at start and closed on exit.

    Refuses a standalone server unless `require_replica_set` is False (then it probes that
    transactions really roll back). Ids default to ULIDs; the clock to the system clock at
    millisecond precision.
    """
    clock = MillisecondClock(clock or SystemClock())
    ids = ids or UlidGenerator()
    client = connect(url, server_selection_timeout_ms=server_selection_timeout_ms, timeout_ms=timeout_ms)
    store = MongoStore.open(client, database)
    try:
        server = await check_server(store, require_replica_set=require_replica_set)
        if create_indexes:
            await init_indexes(store)
        log, bus = MongoEventLog(store), bus or MemoryEventBus()
        relay = OutboxRelay(log, bus)

        async def committed(records: Sequence[EventRecord]) -> None:
            await relay.dispatch_pending()

        deps = Deps(
            uow=mongo_uow_factory(store, clock, ids),
            clock=clock,
            ids=ids,
            limits=limits or Limits(),
            committed=committed,
        )
        yield MongoCore(ChatService(deps), store, log, bus, relay, clock, ids, server)
    finally:
        await store.close()
