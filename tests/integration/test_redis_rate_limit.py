"""The Redis rate limiter against a real redis-server: one bucket for every instance, atomically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapters.redis import RedisRateLimiter, redis_client
from chatcore.ports.rate_limit import RateRule
from chatcore.testing.doubles import FakeClock
from tests.integration.fixtures.redis import *  # noqa: F403  (the redis fixtures)
from tests.integration.fixtures.redis import RedisServer

pytestmark = pytest.mark.slow

SEND = RateRule(name="send", burst=3, per_second=0.5)


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    a, b = redis_client(redis_url), redis_client(redis_url)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_two_instances_share_one_bucket(two_clients: tuple[Redis, Redis], redis_prefix: str) -> None:
    a, b = (RedisRateLimiter(c, prefix=redis_prefix) for c in two_clients)  # Redis TIME: one clock
    async with asyncio.timeout(10):
        assert (await a.hit("u1", SEND)).allowed
        assert (await b.hit("u1", SEND)).allowed
        assert (await a.hit("u1", SEND)).allowed
        refused = await b.hit("u1", SEND)
        assert not refused.allowed and refused.retry_after_s >= 1
        assert not (await a.hit("u1", SEND)).allowed
        assert (await b.hit("u2", SEND)).allowed


async def test_concurrent_hits_from_two_instances_never_exceed_the_burst(
    two_clients: tuple[Redis, Redis], redis_prefix: str
) -> None:
    a, b = (RedisRateLimiter(c, prefix=redis_prefix) for c in two_clients)
    rule = RateRule(name="burst10", burst=10, per_second=0.001)
    async with asyncio.timeout(10):
        decisions = await asyncio.gather(*(lim.hit("k", rule) for lim in (a, b) * 30))
    assert sum(d.allowed for d in decisions) == 10


async def test_redis_time_refills_the_bucket(two_clients: tuple[Redis, Redis], redis_prefix: str) -> None:
    limiter = RedisRateLimiter(two_clients[0], prefix=redis_prefix)
    fast = RateRule(name="fast", burst=1, per_second=20.0)
    async with asyncio.timeout(10):
        assert (await limiter.hit("u", fast)).allowed
        assert not (await limiter.hit("u", fast)).allowed
        await asyncio.sleep(0.1)  # Redis's own clock: 20 tokens/s refills one in 50 ms
        assert (await limiter.hit("u", fast)).allowed


async def test_buckets_expire_once_they_would_be_full(
    two_clients: tuple[Redis, Redis], redis_prefix: str
) -> None:
    client = two_clients[0]
    limiter = RedisRateLimiter(client, prefix=redis_prefix, clock=FakeClock())
    await limiter.hit("u1", SEND)
    ttl_ms = await client.pttl(f"{redis_prefix}rl:send:u1")
    assert 0 < ttl_ms <= 1 / SEND.per_second * 1000 + 1000  # one token to refill at 0.5/s, + 1 s


async def test_limits_per_instance_while_redis_is_down(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url, socket_timeout_s=0.5, connect_timeout_s=0.5)
    limiter = RedisRateLimiter(client, prefix="down:", retry_interval_s=0)  # ask Redis every time
    rule = RateRule(name="send", burst=2, per_second=0.001)
    try:
        async with asyncio.timeout(20):
            assert (await limiter.hit("u1", rule)).allowed
            redis_server.stop()
            # No error reaches the caller: the local fallback bucket decides.
            assert [(await limiter.hit("u1", rule)).allowed for _ in range(3)] == [True, True, False]
            redis_server.start()
            assert (await limiter.hit("u9", rule)).allowed
            assert await client.exists("down:rl:send:u9")  # back on the shared bucket
    finally:
        await client.aclose()


async def test_while_redis_is_down_only_one_request_per_interval_asks_it(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url, socket_timeout_s=0.5, connect_timeout_s=0.5)
    ticks = [0.0]
    limiter = RedisRateLimiter(client, prefix="probe:", retry_interval_s=1.0, monotonic=lambda: ticks[0])
    rule = RateRule(name="send", burst=1, per_second=0.001)
    try:
        async with asyncio.timeout(20):
            redis_server.stop()
            assert (await limiter.hit("u1", rule)).allowed  # Redis refused: the local bucket's token
            redis_server.start()
            # Within the interval Redis is not asked, though it is back: the local bucket is empty.
            assert not (await limiter.hit("u1", rule)).allowed
            assert not await client.exists("probe:rl:send:u1")
            ticks[0] = 1.5  # the interval is over: this request asks Redis, whose bucket is full
            assert (await limiter.hit("u1", rule)).allowed
            assert await client.exists("probe:rl:send:u1")
    finally:
        await client.aclose()
