"""Presence and typing in Redis: expiring keys, shared by every instance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapters.redis import RedisPresence, redis_client
from tests.integration.fixtures.redis import *  # noqa: F403  (the redis fixtures)

pytestmark = pytest.mark.slow


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = redis_client(redis_url)
    yield redis
    await redis.aclose()


async def test_a_touched_user_is_online_until_the_ttl(client: Redis, redis_prefix: str) -> None:
    presence = RedisPresence(client, prefix=redis_prefix, online_ttl_s=60)
    await presence.touch("u1")
    assert await presence.is_online("u1")
    assert not await presence.is_online("u2")
    assert await presence.online_among(["u1", "u2"]) == {"u1"}
    assert 0 < await client.ttl(f"{redis_prefix}online:u1") <= 60
    await presence.go_offline("u1")
    assert not await presence.is_online("u1")


async def test_typing_expires_by_itself(client: Redis, redis_prefix: str) -> None:
    presence = RedisPresence(client, prefix=redis_prefix, typing_ttl_s=1)
    async with asyncio.timeout(10):
        await presence.start_typing("c1", "u1")
        await presence.start_typing("c1", "u2")
        await presence.start_typing("c2", "u3")
        assert await presence.typing_in("c1") == {"u1", "u2"}
        await presence.stop_typing("c1", "u2")
        assert await presence.typing_in("c1") == {"u1"}
        await asyncio.sleep(1.2)  # Redis's clock expires the keys; nothing to fake here
        assert await presence.typing_in("c1") == set()
        assert await presence.typing_in("c2") == set()
