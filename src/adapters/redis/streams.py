"""Durable consumers over Redis Streams: at-least-once delivery with consumer groups.

The outbox relay appends each committed record to one stream (`{prefix}events`, `XADD` with
an approximate `MAXLEN`) through `StreamingBus`, which also does the live Pub/Sub fan-out;
the record is encoded once for both. Workers read it with `StreamConsumer`:

- `XREADGROUP` hands each new entry to one consumer of the group; the entry is acked
  (`XACK`) only after the handler succeeded, so a crash leaves it in the group's pending list;
- entries pending for longer than `min_idle_s` (a dead or stuck consumer's) are taken over
  with `XAUTOCLAIM` (60 s in production; about 1 s in tests), which also counts deliveries;
- an entry delivered `max_deliveries` times without success (or that cannot be decoded) is
  copied to the dead-letter stream `{stream}:dead` with its delivery count and error, then acked;
- handlers run at most once per event id per group in the normal case: a processed-ids marker
  `{prefix}done:{group}:{event id}` with a TTL is written with the ack and checked first.
  Two consumers can still run one entry concurrently if a handler outlives `min_idle_s`, so
  handlers must be idempotent by event id themselves; the marker keeps redeliveries cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from adapters.redis.bus import RedisEventBus, RedisSubscription, ResyncCallback
from adapters.redis.codec import decode_record, encode_record, event_type
from chatcore.domain.events import EventRecord

_log = logging.getLogger(__name__)

Handler = Callable[[EventRecord], Awaitable[None]]


class RedisEventStream:
    """The durable stream of committed records that worker consumer groups read."""

    def __init__(self, client: Redis, *, prefix: str = "chatcore:", max_len: int = 1_000_000) -> None:
        self.client = client
        self.prefix = prefix
        self.name = f"{prefix}events"
        self.dead_letter_name = f"{self.name}:dead"
        self._max_len = max_len

    async def append(self, records: Sequence[EventRecord]) -> None:
        await self.append_encoded([(r, encode_record(r)) for r in records])

    async def append_encoded(self, encoded: Sequence[tuple[EventRecord, bytes]]) -> None:
        if not encoded:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for record, payload in encoded:
                fields: dict[Any, Any] = {
                    "id": record.id,
                    "stream_id": record.stream_id,
                    "type": event_type(record),
                    "record": payload,
                }
                pipe.xadd(self.name, fields, maxlen=self._max_len, approximate=True)
            await pipe.execute()


class StreamingBus:
    """The bus the outbox relay uses in production: append to the stream, then fan out live.

    The stream comes first: it is what durable consumers rely on. If either step fails the relay
    republishes the batch later, and every consumer dedupes by event id or (stream, seq).
    """

    def __init__(self, live: RedisEventBus, stream: RedisEventStream) -> None:
        self.live, self.stream = live, stream

    async def publish(self, records: Sequence[EventRecord]) -> None:
        encoded = [(r, encode_record(r)) for r in records]
        await self.stream.append_encoded(encoded)
        await self.live.publish_encoded(encoded)

    async def signal(self, stream_id: str, payload: bytes) -> None:
        await self.live.signal(stream_id, payload)  # ephemeral: live only, never in the stream

    def subscribe(
        self, stream_ids: Iterable[str], *, on_resync: ResyncCallback | None = None
    ) -> RedisSubscription:
        return self.live.subscribe(stream_ids, on_resync=on_resync)


class StreamConsumer:
    """One consumer of a group reading `RedisEventStream`; run several, in several processes."""

    def __init__(
        self,
        stream: RedisEventStream,
        *,
        group: str,
        consumer: str,
        handler: Handler,
        min_idle_s: float = 60.0,
        max_deliveries: int = 5,
        batch_size: int = 100,
        block_s: float = 2.0,
        processed_ttl_s: int = 7 * 24 * 3600,
        start_id: str = "$",
    ) -> None:
        self._stream = stream
        self._client = stream.client
        self.group, self.consumer = group, consumer
        self._handler = handler
        self._min_idle_ms = int(min_idle_s * 1000)
        self._max_deliveries = max_deliveries
        self._batch_size = batch_size
        self._block_ms = int(block_s * 1000)
        self._processed_ttl_s = processed_ttl_s
        self._start_id = start_id  # where a new group starts: "$" = only what comes next
        self._done_prefix = f"{stream.prefix}done:{group}:"
        self._claim_cursor = "0-0"

    async def ensure_group(self) -> None:
        try:
            await self._client.xgroup_create(self._stream.name, self.group, id=self._start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set (or the task is cancelled), riding out Redis outages."""
        stop = stop or asyncio.Event()
        failures = 0
        while not stop.is_set():
            try:
                await self.ensure_group()
                while not stop.is_set():
                    await self.run_once()
                    failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                delay = min(5.0, 0.1 * 2 ** (failures - 1))
                _log.warning("stream consumer %s: %s; retrying in %.1f s", self.consumer, exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay / 2 + random.uniform(0, delay / 2)):
                        await stop.wait()

    async def run_once(self, block: bool = True) -> int:
        """Reclaim stuck entries, then read new ones; returns how many entries were settled."""
        settled = await self.reclaim()
        response: Any = await self._client.xreadgroup(
            self.group,
            self.consumer,
            {self._stream.name: ">"},
            count=self._batch_size,
            block=self._block_ms if block and not settled else None,
        )
        for _name, entries in response or []:
            for entry_id, fields in entries:
                settled += await self._process(entry_id, fields, deliveries=1)
        return settled

    async def reclaim(self) -> int:
        """Take over entries idle for `min_idle_s` in any consumer's pending list, and handle them."""
        next_cursor, entries, *_deleted = await self._client.xautoclaim(
            self._stream.name,
            self.group,
            self.consumer,
            self._min_idle_ms,
            start_id=self._claim_cursor,
            count=self._batch_size,
        )
        self._claim_cursor = _text(next_cursor)
        settled = 0
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending (Redis < 7 reports these)
                await self._client.xack(self._stream.name, self.group, entry_id)
                continue
            settled += await self._process(entry_id, fields, deliveries=await self._deliveries(entry_id))
        return settled

    async def _deliveries(self, entry_id: Any) -> int:
        pending = await self._client.xpending_range(
            self._stream.name, self.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _process(self, entry_id: Any, fields: dict[Any, Any], deliveries: int) -> int:
        """Handle one entry; returns 1 when it left the pending list (acked or dead-lettered)."""
        try:
            record = decode_record(fields[b"record"])
        except Exception as exc:
            await self._dead_letter(entry_id, fields, deliveries, f"undecodable: {exc}")
            return 1
        if deliveries > self._max_deliveries:
            await self._dead_letter(entry_id, fields, deliveries, "too many deliveries")
            return 1
        done_key = self._done_prefix + record.id
        if await self._client.exists(done_key):
            await self._client.xack(self._stream.name, self.group, entry_id)
            return 1
        try:
            await self._handler(record)
        except Exception as exc:
            if deliveries >= self._max_deliveries:
                await self._dead_letter(entry_id, fields, deliveries, repr(exc))
                return 1
            # Left pending: XAUTOCLAIM hands it out again once it has been idle for min_idle_s.
            _log.warning("handler failed for %s (delivery %d): %r", record.id, deliveries, exc)
            return 0
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(done_key, 1, ex=self._processed_ttl_s)
            pipe.xack(self._stream.name, self.group, entry_id)
            await pipe.execute()
        return 1

    async def _dead_letter(self, entry_id: Any, fields: dict[Any, Any], deliveries: int, error: str) -> None:
        _log.error("dead-lettering %s after %d deliveries: %s", _text(entry_id), deliveries, error)
        dead = {
            **fields,
            b"source_entry": entry_id,
            b"group": self.group,
            b"deliveries": deliveries,
            b"error": error[:1000],
        }
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xadd(self._stream.dead_letter_name, dead)
            pipe.xack(self._stream.name, self.group, entry_id)
            await pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
