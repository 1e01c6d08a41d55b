"""A token-bucket rate limiter in Redis: one atomic Lua script, so every instance shares each bucket.

A bucket is a hash `{prefix}rl:{rule}:{key}` holding `tokens` and `at` (epoch seconds). The
script refills, takes a token or refuses, and sets the key to expire once the bucket would be
full again (a full bucket and a missing one mean the same). Time is the caller's `Clock` when
one is given (tests use a fake clock; instances should run NTP), else Redis `TIME`, one clock
for all instances. redis-py's Script runs EVALSHA and falls back to loading the script.

When Redis cannot be reached the limiter does not fail the request: it decides with a local
in-process bucket (`fallback`) until Redis answers again, so sends keep working through a
broker outage, limited per instance instead of globally. While Redis is away only one request
per `retry_interval_s` asks it again: the others go straight to the fallback, so an outage never
makes every request wait for a connection attempt first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.system import SystemClock
from chatcore.ports.rate_limit import RateDecision, RateLimiter, RateRule
from chatcore.ports.system import Clock

_log = logging.getLogger(__name__)

# KEYS[1] bucket; ARGV: burst, per_second, now (epoch seconds, '' = Redis TIME).
# Returns {allowed (1/0), retry_after_s}.
_BUCKET_SCRIPT = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end
local allowed = 0
local retry_after = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry_after = math.max(1, math.ceil((1 - tokens) / rate))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, retry_after}
"""


class RedisRateLimiter:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "chatcore:",
        clock: Clock | None = None,
        fallback: RateLimiter | None = None,
        retry_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._script = client.register_script(_BUCKET_SCRIPT)
        self._fallback = fallback or MemoryRateLimiter(clock or SystemClock())
        self._degraded = False
        self._retry_interval_s, self._monotonic = retry_interval_s, monotonic
        self._next_probe = 0.0  # while degraded: when a request may ask Redis again
        self._probing = False  # one request is asking Redis whether it is back

    async def hit(self, key: str, rule: RateRule) -> RateDecision:
        if self._degraded and (self._probing or self._monotonic() < self._next_probe):
            return await self._fallback.hit(key, rule)
        now = "" if self._clock is None else repr(self._clock.now().timestamp())
        self._probing = self._degraded
        try:
            allowed, retry_after = await self._script(
                keys=[f"{self._prefix}rl:{rule.name}:{key}"],
                args=[rule.burst, repr(float(rule.per_second)), now],
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if not self._degraded:
                _log.warning("Redis rate limiter unavailable (%s); limiting per instance", exc)
                self._degraded = True
            self._next_probe = self._monotonic() + self._retry_interval_s
            return await self._fallback.hit(key, rule)
        finally:
            self._probing = False
        if self._degraded:
            _log.info("Redis rate limiter back")
            self._degraded = False
        if allowed:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after_s=max(1, math.ceil(float(retry_after))))
