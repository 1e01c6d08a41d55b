"""One call to get the whole core running in memory: for tests and quick embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.memory.bus import MemoryEventBus
from adapters.memory.store import MemoryStore
from adapters.memory.unit_of_work import MemoryEventLog, MemoryUnitOfWork
from chatcore.application.common import Deps
from chatcore.application.relay import OutboxRelay
from chatcore.application.service import ChatService
from chatcore.domain.events import EventRecord
from chatcore.domain.limits import Limits
from chatcore.ports.events import EventBus
from chatcore.ports.system import Clock, IdGenerator
from chatcore.testing.doubles import FakeClock, SequentialIds


@dataclass
class MemoryCore:
    service: ChatService
    store: MemoryStore
    log: MemoryEventLog
    bus: EventBus
    relay: OutboxRelay
    clock: Clock
    ids: IdGenerator


def memory_core(
    *,
    limits: Limits | None = None,
    clock: Clock | None = None,
    ids: IdGenerator | None = None,
    bus: EventBus | None = None,
) -> MemoryCore:
    store = MemoryStore()
    clock = clock or FakeClock()
    ids = ids or SequentialIds()
    log, bus = MemoryEventLog(store), bus or MemoryEventBus()
    relay = OutboxRelay(log, bus)

    async def committed(records: Sequence[EventRecord]) -> None:
        await relay.dispatch_pending()

    deps = Deps(
        uow=lambda: MemoryUnitOfWork(store, clock, ids),
        clock=clock,
        ids=ids,
        limits=limits or Limits(),
        committed=committed,
    )
    return MemoryCore(ChatService(deps), store, log, bus, relay, clock, ids)
