"""Durable consumers over Redis Streams: reclaimed after a crash, handled once, poison dead-lettered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.memory.store import MemoryStore
from adapters.memory.unit_of_work import MemoryEventLog, MemoryUnitOfWork
from adapters.redis import RedisEventBus, RedisEventStream, StreamConsumer, StreamingBus, redis_client
from chatcore.application.relay import OutboxRelay
from chatcore.domain.events import EventRecord, ProfileUpdated
from chatcore.testing.contracts.bus import record, take
from chatcore.testing.doubles import FakeClock, SequentialIds
from tests.integration.fixtures.redis import *  # noqa: F403  (the redis fixtures)

pytestmark = pytest.mark.slow

GROUP = "mailer"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = redis_client(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def stream(client: Redis, redis_prefix: str) -> RedisEventStream:
    return RedisEventStream(client, prefix=redis_prefix, max_len=10_000)


class Recorder:
    """A handler that remembers what it handled and can be told to fail for some events."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.handled: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self._failing = failing

    async def __call__(self, record: EventRecord) -> None:
        self.attempts[record.id] += 1
        if record.id in self._failing:
            raise RuntimeError(f"cannot handle {record.id}")
        self.handled[record.id] += 1


def consumer(stream: RedisEventStream, name: str, handler: Recorder, **options: float) -> StreamConsumer:
    return StreamConsumer(
        stream,
        group=GROUP,
        consumer=name,
        handler=handler,
        min_idle_s=options.get("min_idle_s", 1.0),
        max_deliveries=int(options.get("max_deliveries", 5)),
        block_s=0.1,
    )


async def settle(consumers: list[StreamConsumer], until: object, timeout_s: float) -> None:
    assert callable(until)
    async with asyncio.timeout(timeout_s):
        while not until():
            for c in consumers:
                await c.run_once()


async def pending(client: Redis, stream: RedisEventStream) -> int:
    summary = await client.xpending(stream.name, GROUP)
    return int(summary["pending"])


async def dead_letters(client: Redis, stream: RedisEventStream) -> list[dict[bytes, bytes]]:
    entries: Any = await client.xrange(stream.dead_letter_name)
    return [fields for _id, fields in entries]


async def test_the_outbox_relay_feeds_the_stream_and_the_live_bus(
    redis_url: str, redis_prefix: str, client: Redis, stream: RedisEventStream
) -> None:
    store = MemoryStore()
    for n in range(3):
        async with MemoryUnitOfWork(store, FakeClock(), SequentialIds(f"e{n}")) as uow:
            uow.record(ProfileUpdated(user_id="u1", display_name=f"n{n}", bio=""))
            await uow.commit()
    live = RedisEventBus(redis_url, prefix=redis_prefix)
    await live.start()
    handler = Recorder()
    worker = consumer(stream, "w1", handler)
    await worker.ensure_group()
    try:
        async with asyncio.timeout(10):
            sub = live.subscribe(["u1"])
            relay = OutboxRelay(MemoryEventLog(store), StreamingBus(live, stream))
            assert await relay.dispatch_pending() == 3
            assert [r.seq for r in await take(sub, 3)] == [1, 2, 3]
            await settle([worker], lambda: len(handler.handled) == 3, 10)
            assert await pending(client, stream) == 0
    finally:
        await live.close()


async def test_a_dead_consumers_entries_are_reclaimed_and_handled_exactly_once(
    client: Redis, stream: RedisEventStream
) -> None:
    handler = Recorder()
    survivor = consumer(stream, "survivor", handler, min_idle_s=1.0)
    await survivor.ensure_group()
    records = [record("u1", seq) for seq in range(1, 11)]
    await stream.append(records)
    # The first worker reads five entries and dies before acking any of them.
    taken: Any = await client.xreadgroup(GROUP, "killed", {stream.name: ">"}, count=5)
    assert len(taken[0][1]) == 5
    async with asyncio.timeout(20):
        await survivor.run_once(block=False)
        assert len(handler.handled) == 5  # the other five; the dead one's are not idle enough yet
        await settle([survivor], lambda: len(handler.handled) == 10, 10)
    assert handler.handled == Counter({r.id: 1 for r in records})
    assert await pending(client, stream) == 0
    # A relay republishing the same records (after a crash before marking them) changes nothing.
    await stream.append(records[:3])
    await survivor.run_once(block=False)
    assert handler.handled == Counter({r.id: 1 for r in records})
    assert await pending(client, stream) == 0


async def test_two_live_consumers_share_the_work_without_duplicates(
    client: Redis, stream: RedisEventStream
) -> None:
    handler = Recorder()
    workers = [consumer(stream, f"w{i}", handler) for i in range(2)]
    await workers[0].ensure_group()
    records = [record(f"u{n % 4}", n) for n in range(1, 41)]
    await stream.append(records)
    async with asyncio.timeout(10):
        await asyncio.gather(*(w.run_once(block=False) for w in workers))
        await settle(workers, lambda: len(handler.handled) == 40, 10)
    assert handler.handled == Counter({r.id: 1 for r in records})


async def test_a_poison_entry_is_dead_lettered_after_n_deliveries(
    client: Redis, stream: RedisEventStream
) -> None:
    poison = record("u1", 2)
    handler = Recorder(failing=frozenset({poison.id}))
    worker = consumer(stream, "w1", handler, min_idle_s=0.2, max_deliveries=3)
    await worker.ensure_group()
    await stream.append([record("u1", 1), poison, record("u1", 3)])
    async with asyncio.timeout(15):
        await settle([worker], lambda: handler.attempts[poison.id] >= 3 and len(handler.handled) == 2, 10)
        await asyncio.sleep(0.3)
        await worker.run_once(block=False)  # nothing left to redeliver
    assert handler.attempts[poison.id] == 3
    assert handler.handled == Counter({"u1-1": 1, "u1-3": 1})
    assert await pending(client, stream) == 0
    [fields] = await dead_letters(client, stream)
    assert fields[b"id"] == poison.id.encode()
    assert fields[b"deliveries"] == b"3"
    assert fields[b"group"] == GROUP.encode()
    assert b"cannot handle" in fields[b"error"]


async def test_an_undecodable_entry_goes_straight_to_the_dead_letter_stream(
    client: Redis, stream: RedisEventStream
) -> None:
    handler = Recorder()
    worker = consumer(stream, "w1", handler)
    await worker.ensure_group()
    await client.xadd(stream.name, {"id": "bad", "record": b"{not json"})
    async with asyncio.timeout(10):
        await worker.run_once(block=False)
    assert handler.attempts == Counter()
    assert await pending(client, stream) == 0
    [fields] = await dead_letters(client, stream)
    assert fields[b"deliveries"] == b"1" and fields[b"error"].startswith(b"undecodable")


async def test_the_stream_is_capped(client: Redis, redis_prefix: str) -> None:
    capped = RedisEventStream(client, prefix=redis_prefix, max_len=100)
    await capped.append([record("u1", seq) for seq in range(1, 1001)])
    assert 100 <= await client.xlen(capped.name) < 1000  # MAXLEN ~ trims whole nodes
