"""The outbox relay: publishes committed events from the log to the bus, at least once."""

from __future__ import annotations

import asyncio

from chatcore.ports.events import EventBus
from chatcore.ports.unit_of_work import EventLog


class OutboxRelay:
    """Reads undispatched records, publishes them, then marks them dispatched.

    A crash between publish and mark republishes the batch: consumers dedupe by (stream, seq).
    """

    def __init__(self, log: EventLog, bus: EventBus, batch_size: int = 500) -> None:
        self._log, self._bus, self._batch_size = log, bus, batch_size
        self._lock = asyncio.Lock()

    async def dispatch_pending(self) -> int:
        """Publish everything pending now; returns how many records went out."""
        total = 0
        async with self._lock:  # one pass at a time keeps per-stream order
            while batch := await self._log.undispatched(self._batch_size):
                await self._bus.publish(batch)
                await self._log.mark_dispatched([r.id for r in batch])
                total += len(batch)
                if len(batch) < self._batch_size:
                    # The log is drained as of that read: one read fewer per pass. What commits
                    # later has its own call (each commit asks for a pass) and waits on the lock.
                    break
        return total
