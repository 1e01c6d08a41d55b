"""The rate limiter contract: token buckets with a burst, a refill rate and separate keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chatcore.ports.rate_limit import RateLimiter, RateRule


@dataclass
class LimiterUnderTest:
    limiter: RateLimiter
    # Moves the limiter's notion of time forward by this many seconds.
    advance: Callable[[float], Awaitable[None]]


RULE = RateRule(name="send", burst=3, per_second=1.0)


class RateLimiterContract:
    """Provide a `limiter` fixture yielding a LimiterUnderTest."""

    async def test_burst_then_refused_with_retry_after(self, limiter: LimiterUnderTest) -> None:
        decisions = [await limiter.limiter.hit("u1", RULE) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert decisions[-1].retry_after_s >= 1

    async def test_tokens_refill_over_time(self, limiter: LimiterUnderTest) -> None:
        for _ in range(3):
            await limiter.limiter.hit("u1", RULE)
        assert not (await limiter.limiter.hit("u1", RULE)).allowed
        await limiter.advance(1.1)
        assert (await limiter.limiter.hit("u1", RULE)).allowed
        assert not (await limiter.limiter.hit("u1", RULE)).allowed

    async def test_keys_and_rules_have_separate_buckets(self, limiter: LimiterUnderTest) -> None:
        for _ in range(3):
            await limiter.limiter.hit("u1", RULE)
        assert (await limiter.limiter.hit("u2", RULE)).allowed
        other_rule = RateRule(name="login", burst=1, per_second=0.01)
        assert (await limiter.limiter.hit("u1", other_rule)).allowed
