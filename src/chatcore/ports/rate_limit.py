"""Rate limiting: token buckets keyed by whatever the caller chooses (user, IP, email)."""

from __future__ import annotations

from typing import Protocol

import msgspec


class RateRule(msgspec.Struct, frozen=True, kw_only=True):
    """A token bucket: `burst` tokens at most, refilled at `per_second`."""

    name: str
    burst: int
    per_second: float


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    retry_after_s: int = 0


class RateLimiter(Protocol):
    async def hit(self, key: str, rule: RateRule) -> RateDecision:
        """Take one token from the bucket `rule.name:key`."""
        ...
