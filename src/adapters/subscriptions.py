"""A subscriber's bounded queue, shared by the bus adapters: records in arrival order, and a gap
marker whenever some had to be dropped, so the reader knows to catch up from the log.

A subscription that `listen`s has no queue any more: each item goes straight to its callback,
in arrival order, and nothing can overflow (the listener bounds what it keeps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from chatcore.domain.events import EventRecord
from chatcore.ports.events import GAP, BusGap, Signal

_log = logging.getLogger(__name__)

Item = EventRecord | BusGap | Signal | None
Listener = Callable[[Item], None]


class QueuedSubscription:
    def __init__(self, max_queued: int) -> None:
        self.streams: set[str] = set()
        self._max_queued = max_queued
        self._queue: asyncio.Queue[Item] | None = None  # made on first use: a listener needs none
        self.overflowed = False  # ever dropped a record (kept for diagnostics)
        self._gap_pending = False
        self.closed = False
        self._ended = False  # the end marker was read: iteration is over
        self._listener: Listener | None = None

    @property
    def queue(self) -> asyncio.Queue[Item]:
        if self._queue is None:
            self._queue = asyncio.Queue(self._max_queued)
        return self._queue

    def _hand(self, item: Item) -> None:
        assert self._listener is not None
        try:
            self._listener(item)
        except Exception:  # one subscriber's failure must not stop the bus's delivery to others
            _log.exception("a subscription listener failed")

    def offer(self, record: EventRecord) -> None:
        if self._listener is not None:
            self._hand(record)
            return
        try:
            self.queue.put_nowait(record)
        except asyncio.QueueFull:
            self.overflowed = True
            self._gap_pending = True

    def offer_signal(self, signal: Signal) -> None:
        """Ephemeral: a full queue drops it, and no gap is owed (the log never had it)."""
        if self._listener is not None:
            self._hand(signal)
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(signal)

    def signal_gap(self) -> None:
        """Records may have been lost elsewhere (a reconnect): wake the reader with a gap."""
        if self._listener is not None:
            self._hand(GAP)
            return
        self._gap_pending = True
        # A full queue means the reader is behind anyway: the pending flag yields the gap.
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(GAP)

    def offer_end(self) -> None:
        if self._listener is not None:
            if not self._ended:
                self._ended = True
                self._hand(None)
            return
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    def listen(self, on_item: Listener) -> None:
        pending: list[Item] = [GAP] if self._gap_pending else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        self._gap_pending, self._queue = False, None
        self._listener = on_item
        for item in pending:
            if item is None:
                self.offer_end()
                return
            self._hand(item)

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
