"""A subscriber's bounded queue, shared by the bus adapters: records in arrival order, and a gap
marker whenever some had to be dropped, so the reader knows to catch up from the log."""

from __future__ import annotations

import asyncio
import contextlib

from chatcore.domain.events import EventRecord
from chatcore.ports.events import GAP, BusGap, Signal


class QueuedSubscription:
    def __init__(self, max_queued: int) -> None:
        self.streams: set[str] = set()
        self.queue: asyncio.Queue[EventRecord | BusGap | Signal | None] = asyncio.Queue(max_queued)
        self.overflowed = False  # ever dropped a record (kept for diagnostics)
        self._gap_pending = False
        self.closed = False
        self._ended = False  # the end marker was read: iteration is over

    def offer(self, record: EventRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.overflowed = True
            self._gap_pending = True

    def offer_signal(self, signal: Signal) -> None:
        """Ephemeral: a full queue drops it, and no gap is owed (the log never had it)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(signal)

    def signal_gap(self) -> None:
        """Records may have been lost elsewhere (a reconnect): wake the reader with a gap."""
        self._gap_pending = True
        # A full queue means the reader is behind anyway: the pending flag yields the gap.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(GAP)

    def offer_end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def ready(self) -> None:
        return None

    def __aiter__(self) -> QueuedSubscription:
        return self

    async def __anext__(self) -> EventRecord | BusGap | Signal:
        """The next item. A plain coroutine over the queue, so a reader may cancel a wait
        (a timeout) and call again without losing its place or ending the subscription."""
        while not self._ended:
            if self._gap_pending:
                self._gap_pending = False
                return GAP
            item = await self.queue.get()
            if item is None:
                self._ended = True
            elif isinstance(item, BusGap):
                if self._gap_pending:  # not yet reported
                    self._gap_pending = False
                    return GAP
            else:
                return item
        raise StopAsyncIteration
