"""The in-process event bus: one instance, subscribers woken by asyncio queues (or listeners).

Subscriptions are indexed by the keys they watch, so a publish costs the watchers of its keys,
not every open subscription of the process (thousands of idle sockets)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from adapters.subscriptions import QueuedSubscription
from chatcore.domain.events import EventRecord
from chatcore.ports.events import Signal


class MemorySubscription(QueuedSubscription):
    def __init__(self, bus: MemoryEventBus, stream_ids: Iterable[str], max_queued: int) -> None:
        super().__init__(max_queued)
        self._bus = bus
        self.watch(stream_ids)

    def watch(self, stream_ids: Iterable[str]) -> None:
        if self.closed:
            return
        new = set(stream_ids) - self.streams
        self.streams |= new
        for key in new:
            self._bus.watchers.setdefault(key, set()).add(self)

    def unwatch(self, stream_ids: Iterable[str]) -> None:
        gone = self.streams & set(stream_ids)
        self.streams -= gone
        for key in gone:
            watchers = self._bus.watchers.get(key)
            if watchers is not None:
                watchers.discard(self)
                if not watchers:
                    del self._bus.watchers[key]

    async def close(self) -> None:
        if self.closed:
            return
        self.unwatch(set(self.streams))
        self.closed = True
        self._bus.subscriptions.discard(self)
        self.offer_end()


class MemoryEventBus:
    def __init__(self, max_queued: int = 10_000) -> None:
        self.subscriptions: set[MemorySubscription] = set()
        self.watchers: dict[str, set[MemorySubscription]] = {}  # key -> subscriptions watching it
        self._max_queued = max_queued

    async def publish(self, records: Sequence[EventRecord]) -> None:
        for record in records:
            wakes = record.event.wakes
            watchers = self.watchers.get(record.stream_id, ())
            if wakes:  # each subscription gets the record once, whichever keys it watches
                watchers = set(watchers).union(*(self.watchers.get(k, ()) for k in wakes))
            for sub in list(watchers):
                sub.offer(record)

    async def signal(self, stream_id: str, payload: bytes) -> None:
        signal = Signal(stream_id, payload)
        for sub in list(self.watchers.get(stream_id, ())):
            sub.offer_signal(signal)

    def subscribe(self, stream_ids: Iterable[str]) -> MemorySubscription:
        sub = MemorySubscription(self, stream_ids, self._max_queued)
        self.subscriptions.add(sub)
        return sub
