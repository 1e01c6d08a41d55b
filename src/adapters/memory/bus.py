"""The in-process event bus: one instance, subscribers woken by asyncio queues."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from chatcore.domain.events import EventRecord


class MemorySubscription:
    def __init__(self, bus: MemoryEventBus, stream_ids: Iterable[str], max_queued: int) -> None:
        self._bus = bus
        self.streams = set(stream_ids)
        self.queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(max_queued)
        # Set when a record was dropped for a full queue: the reader must catch up from the log.
        self.overflowed = False

    def watch(self, stream_ids: Iterable[str]) -> None:
        self.streams.update(stream_ids)

    def unwatch(self, stream_ids: Iterable[str]) -> None:
        self.streams.difference_update(stream_ids)

    def offer(self, record: EventRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.overflowed = True

    async def __aiter__(self) -> AsyncIterator[EventRecord]:
        while (record := await self.queue.get()) is not None:
            yield record

    async def close(self) -> None:
        self._bus.subscriptions.discard(self)
        self.offer_end()

    def offer_end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)


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

    def subscribe(self, stream_ids: Iterable[str]) -> MemorySubscription:
        sub = MemorySubscription(self, stream_ids, self._max_queued)
        self.subscriptions.add(sub)
        return sub
