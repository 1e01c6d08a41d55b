"""The in-process event bus: one instance, subscribers woken by asyncio queues."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from adapters.subscriptions import QueuedSubscription
from chatcore.domain.events import EventRecord
from chatcore.ports.events import Signal


class MemorySubscription(QueuedSubscription):
    def __init__(self, bus: MemoryEventBus, stream_ids: Iterable[str], max_queued: int) -> None:
        super().__init__(max_queued)
        self._bus = bus
        self.streams = set(stream_ids)

    def watch(self, stream_ids: Iterable[str]) -> None:
        self.streams.update(stream_ids)

    def unwatch(self, stream_ids: Iterable[str]) -> None:
        self.streams.difference_update(stream_ids)

    async def close(self) -> None:
        self._bus.subscriptions.discard(self)
        self.offer_end()


class MemoryEventBus:
    def __init__(self, max_queued: int = 10_000) -> None:
        self.subscriptions: set[MemorySubscription] = set()
        self._max_queued = max_queued

    async def publish(self, records: Sequence[EventRecord]) -> None:
        for record in records:
            keys = {record.stream_id, *record.event.wakes}
            for sub in list(self.subscriptions):
                if not keys.isdisjoint(sub.streams):
                    sub.offer(record)

    async def signal(self, stream_id: str, payload: bytes) -> None:
        signal = Signal(stream_id, payload)
        for sub in list(self.subscriptions):
            if stream_id in sub.streams:
                sub.offer_signal(signal)

    def subscribe(self, stream_ids: Iterable[str]) -> MemorySubscription:
        sub = MemorySubscription(self, stream_ids, self._max_queued)
        self.subscriptions.add(sub)
        return sub
