"""The Redis event bus against a real redis-server: fan-out between instances, and surviving restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.redis import RedisEventBus, RedisSubscription, redis_client
from chatcore.domain.events import ChatMemberAdded, EventRecord
from chatcore.ports.events import GAP, BusGap
from chatcore.testing.contracts.bus import record, take
from tests.integration.fixtures.redis import *  # noqa: F403  (the redis fixtures)
from tests.integration.fixtures.redis import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
async def two_buses(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[RedisEventBus, RedisEventBus]]:
    """Two instances, each with its own clients, as two server processes would have."""
    a = RedisEventBus(redis_url, prefix=redis_prefix)
    b = RedisEventBus(redis_url, prefix=redis_prefix)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def test_a_subscriber_on_one_instance_receives_what_another_publishes(
    two_buses: tuple[RedisEventBus, RedisEventBus],
) -> None:
    a, b = two_buses
    async with asyncio.timeout(10):
        sub = b.subscribe(["chat-1"])
        await b.wait_connected(5)
        await a.publish([record("chat-1", 1), record("chat-2", 1), record("chat-1", 2)])
        assert [r.id for r in await take(sub, 2)] == ["chat-1-1", "chat-1-2"]
        await sub.close()


async def test_a_record_watched_through_two_keys_arrives_once(redis_url: str, redis_prefix: str) -> None:
    bus = RedisEventBus(redis_url, prefix=redis_prefix)
    await bus.start()
    try:
        async with asyncio.timeout(10):
            added = EventRecord(
                id="c9-1",
                stream_id="c9",
                seq=1,
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                event=ChatMemberAdded(chat_id="c9", user_id="u7", by="u1"),
            )
            both = bus.subscribe(["c9", "u7"])
            only_user = bus.subscribe(["u7"])
            await bus.publish([added, record("c9", 2)])
            assert [r.id for r in await take(both, 2)] == ["c9-1", "c9-2"]
            assert [r.id for r in await take(only_user, 1)] == ["c9-1"]
            await asyncio.sleep(0.1)  # a duplicate would have arrived by now
            assert both.queue.empty()
    finally:
        await bus.close()


async def test_channels_are_reference_counted_across_local_subscriptions(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RedisEventBus(redis_url, prefix=redis_prefix)
    client = redis_client(redis_url)
    await bus.start()
    channel = f"{redis_prefix}s:shared"

    async def subscribers() -> int:
        await asyncio.sleep(0.05)  # let the bus's writer send (UN)SUBSCRIBE
        [(_, count)] = await client.pubsub_numsub(channel)
        return int(count)

    try:
        async with asyncio.timeout(10):
            first, second = bus.subscribe(["shared"]), bus.subscribe(["shared"])
            await bus.wait_connected(5)
            assert await subscribers() == 1  # one connection per process, whatever the local count
            await first.close()
            assert await subscribers() == 1
            second.unwatch(["shared"])
            assert await subscribers() == 0
    finally:
        await bus.close()
        await client.aclose()


async def test_a_full_queue_drops_records_and_flags_the_subscription(
    redis_url: str, redis_prefix: str
) -> None:
    bus = RedisEventBus(redis_url, prefix=redis_prefix, max_queued=2)
    await bus.start()
    try:
        async with asyncio.timeout(10):
            sub = bus.subscribe(["s"])
            await bus.publish([record("s", seq) for seq in range(1, 6)])
            for _ in range(500):  # wait for the records to arrive, reading none of them
                if sub.overflowed:
                    break
                await asyncio.sleep(0.01)
            assert sub.overflowed
            assert [r.seq for r in await take(sub, 2)] == [1, 2]
    finally:
        await bus.close()


async def test_closing_the_bus_ends_every_subscription(redis_url: str, redis_prefix: str) -> None:
    bus = RedisEventBus(redis_url, prefix=redis_prefix)
    await bus.start()
    sub = bus.subscribe(["s"])
    await bus.close()
    async with asyncio.timeout(5):
        assert [r async for r in sub] == []


async def _take_until(sub: RedisSubscription, seq: int) -> list[EventRecord | BusGap]:
    got: list[EventRecord | BusGap] = []
    async with asyncio.timeout(10):
        async for r in sub:
            got.append(r)
            if isinstance(r, EventRecord) and r.seq == seq:
                break
    return got


async def _publish_until_accepted(bus: RedisEventBus, records: list[EventRecord], within_s: float) -> None:
    """What the outbox relay does: retry a publish that fails while Redis comes back."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await bus.publish(records)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_fan_out_resumes_after_a_redis_restart_without_restarting_the_app(
    redis_server: RedisServer,
) -> None:
    prefix = "r2:"
    a = RedisEventBus(redis_server.url, prefix=prefix)  # production backoff: 0.1 s doubling to 5 s
    b = RedisEventBus(redis_server.url, prefix=prefix)
    await a.start()
    await b.start()
    resynced = asyncio.Event()
    try:
        async with asyncio.timeout(28):
            before = b.subscribe(["chat-1"], on_resync=resynced.set)
            await b.wait_connected(5)
            await a.publish([record("chat-1", 1)])
            assert [r.seq for r in await take(before, 1)] == [1]

            redis_server.stop()
            await asyncio.sleep(3)
            during = b.subscribe(["chat-2"])  # subscribed while Redis is away
            assert not b.connected
            redis_server.start()
            restarted = time.monotonic()

            await asyncio.sleep(1)  # R2: post one message on instance A 1 s after the restart
            await _publish_until_accepted(a, [record("chat-1", 2)], within_s=5)
            # B reconnects and resubscribes by itself, then tells its subscriptions to catch up
            # from the log: a record published before it was back (Pub/Sub keeps nothing) comes
            # from there; everything published afterwards arrives live.
            await asyncio.wait_for(resynced.wait(), 10)
            resubscribe_s = time.monotonic() - restarted
            await a.publish([record("chat-1", 3), record("chat-2", 1)])
            # The reconnect reaches the reader in-band, as a gap, before what arrives live.
            after_restart = await _take_until(before, 3)
            assert after_restart[0] is GAP
            assert [r.seq for r in after_restart if isinstance(r, EventRecord)] in ([2, 3], [3])
            assert [r.seq for r in await take(during, 1)] == [1]
            arrived_s = time.monotonic() - restarted
            assert arrived_s <= 10
            assert before.resyncs == 1 and before.overflowed
            assert during.resyncs == 1
            assert b.reconnects == 1 and b.connected
            print(f"resubscribed {resubscribe_s:.2f} s after restart; live record {arrived_s:.2f} s")
    finally:
        await a.close()
        await b.close()


def test_reconnect_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    bus = RedisEventBus("redis://127.0.0.1:1/0", backoff_initial_s=0.1, backoff_max_s=5.0)  # never started
    for failures, ceiling in [(1, 0.1), (2, 0.2), (4, 0.8), (7, 5.0), (30, 5.0)]:
        delays = [bus.reconnect_delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered: instances do not reconnect in lockstep
