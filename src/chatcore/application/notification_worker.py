"""The notification worker: feeds committed records to the NotificationHandler, in order, and
mails due digests on a timer. Transport-agnostic; `run_notification_worker` is what
`chatcore worker` calls.

Where records come from (the durable consumer):

- Embedded (SQLite or memory, one machine): an `EventFeed` numbers every committed record of
  every stream in commit order. The worker keeps one position, "notifications", in the
  DigestSchedule and advances it after each batch. The event log's per-stream reads cannot be
  this feed: a worker keeping per-stream positions never hears of a stream created while it
  was away. A crash re-reads at most one batch, and the handler skips records it finished.
  The bus is only a wake-up (`wake()`, e.g. from `Deps.committed`); without it the worker polls
  every `poll_interval_s`, which is also how a worker in another process on the same SQLite
  file learns of new records.
- Production (Redis): the relay appends every record to a Redis stream and a consumer group
  reads it (`adapters.redis.streams.StreamConsumer`, with XAUTOCLAIM and dead letters). Pass it
  as `consumer` with `handler.handle` as its handler; the worker then only runs the digest timer
  beside it. Several worker processes may run: records and digests are claimed in the schedule.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, Protocol

from chatcore.application.notifications import NotificationHandler
from chatcore.ports.notifications import DigestSchedule, EventFeed, FeedEntry
from chatcore.ports.system import Clock

log = logging.getLogger("chatcore.notifications.worker")

CONSUMER = "notifications"


class RecordConsumer(Protocol):
    """Something that reads records and hands them to the handler itself (a Redis stream group)."""

    async def run(self, stop: asyncio.Event | None = None) -> None: ...


class NotificationWorker:
    """Reads the feed from its stored position and runs due digests; `run()` loops until stopped."""

    def __init__(
        self,
        handler: NotificationHandler,
        *,
        schedule: DigestSchedule,
        clock: Clock,
        feed: EventFeed | None = None,
        consumer_name: str = CONSUMER,
        batch_size: int = 200,
        poll_interval_s: float = 5.0,
        max_attempts: int = 5,
        start_at: Literal["end", "beginning"] = "end",
    ) -> None:
        if batch_size < 1 or poll_interval_s <= 0 or max_attempts < 1:
            raise ValueError("batch_size, poll_interval_s and max_attempts must be positive")
        self._handler = handler
        self._schedule = schedule
        self._clock = clock
        self._feed = feed
        self._consumer = consumer_name
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._max_attempts = max_attempts
        self._start_at = start_at
        self._failures: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()

    def wake(self) -> None:
        """Read the feed now rather than at the next poll (call after a commit)."""
        self._wakeup.set()

    async def pump(self) -> int:
        """Handle every record committed since the stored position; returns how many."""
        if self._feed is None:
            return 0
        async with self._lock:  # one pass at a time keeps the order
            position = await self._schedule.position(self._consumer)
            if position is None:
                # A new worker starts at the end, as a new stream group does ("$"): it does not
                # mail about history. "beginning" replays the whole log (tests, recovery).
                position = 0 if self._start_at == "beginning" else await self._feed.head()
                await self._schedule.set_position(self._consumer, position)
            handled = 0
            while entries := await self._feed.read_after(position, limit=self._batch_size):
                try:
                    for entry in entries:
                        await self._handle(entry.record.id, entry)
                        position = entry.position
                        handled += 1
                finally:
                    await self._schedule.set_position(self._consumer, position)
            return handled

    async def _handle(self, record_id: str, entry: FeedEntry) -> None:
        try:
            await self._handler.handle(entry.record)
        except Exception:
            failures = self._failures.get(record_id, 0) + 1
            if failures < self._max_attempts:
                self._failures[record_id] = failures
                raise
            # A poison record must not stop every later mail: give up on it, loudly.
            self._failures.pop(record_id, None)
            log.exception("record %s skipped after %d failed attempts", record_id, failures)
            return
        self._failures.pop(record_id, None)

    async def tick(self) -> int:
        """Mail the digests due now; returns how many mails went out."""
        return await self._handler.run_due(self._clock.now())

    async def _seconds_to_next_due(self) -> float:
        due = await self._schedule.next_due()
        if due is None:
            return self._poll_interval_s
        wait = (due - self._clock.now()).total_seconds()
        return max(0.0, min(self._poll_interval_s, wait))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Pump and tick until `stop` is set (or the task is cancelled), riding out failures."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            self._wakeup.clear()
            try:
                await self.pump()
                await self.tick()
                delay = await self._seconds_to_next_due()
                failures = 0
            except Exception:
                failures += 1
                delay = min(self._poll_interval_s * 6, 0.5 * 2 ** min(failures, 6))
                log.exception("notification worker pass failed; trying again in %.1f s", delay)
            await _wait_any(self._wakeup, stop, seconds=delay)


async def _wait_any(*events: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_notification_worker(
    worker: NotificationWorker,
    *,
    consumer: RecordConsumer | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the notification worker until `stop` is set: the CLI's `chatcore worker` entry.

    Embedded: build the worker with a `feed`, pass no `consumer`. With Redis: build it without a
    feed and pass the stream `consumer` whose handler is `handler.handle`; both then run here.
    """
    stop = stop or asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(worker.run(stop))
        if consumer is not None:
            tasks.create_task(consumer.run(stop))
