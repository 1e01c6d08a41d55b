"""Redis adapters: live fan-out (Pub/Sub), durable consumers (Streams), rate limits, presence."""

from adapters.redis.bus import RedisEventBus, RedisSubscription
from adapters.redis.connection import redis_client
from adapters.redis.presence import RedisPresence
from adapters.redis.rate_limit import RedisRateLimiter
from adapters.redis.streams import RedisEventStream, StreamConsumer, StreamingBus

__all__ = [
    "RedisEventBus",
    "RedisEventStream",
    "RedisPresence",
    "RedisRateLimiter",
    "RedisSubscription",
    "StreamConsumer",
    "StreamingBus",
    "redis_client",
]
