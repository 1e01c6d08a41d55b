"""An in-process token-bucket rate limiter (one instance only; Redis shares buckets)."""

from __future__ import annotations

import math

from chatcore.ports.rate_limit import RateDecision, RateRule
from chatcore.ports.system import Clock


class MemoryRateLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at epoch seconds)

    async def hit(self, key: str, rule: RateRule) -> RateDecision:
        now = self._clock.now().timestamp()
        bucket_key = f"{rule.name}:{key}"
        tokens, at = self._buckets.get(bucket_key, (float(rule.burst), now))
        tokens = min(float(rule.burst), tokens + (now - at) * rule.per_second)
        if tokens >= 1.0:
            self._buckets[bucket_key] = (tokens - 1.0, now)
            return RateDecision(allowed=True)
        self._buckets[bucket_key] = (tokens, now)
        return RateDecision(allowed=False, retry_after_s=max(1, math.ceil((1.0 - tokens) / rule.per_second)))
