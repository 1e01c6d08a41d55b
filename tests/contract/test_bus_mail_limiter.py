"""The bus, mailer and rate limiter contracts, run against every adapter of each port."""

from __future__ import annotations

import pytest

from adapters.memory.bus import MemoryEventBus
from adapters.memory.mail import MemoryMailer
from adapters.memory.rate_limit import MemoryRateLimiter
from chatcore.ports.events import EventBus
from chatcore.ports.mail import Mail
from chatcore.testing.contracts import (
    EventBusContract,
    LimiterUnderTest,
    MailerContract,
    MailerUnderTest,
    RateLimiterContract,
)
from chatcore.testing.doubles import FakeClock


@pytest.fixture(params=["memory"])
async def bus(request: pytest.FixtureRequest) -> EventBus:
    return MemoryEventBus()


@pytest.fixture(params=["memory"])
async def mail(request: pytest.FixtureRequest) -> MailerUnderTest:
    mailer = MemoryMailer()

    async def delivered() -> list[Mail]:
        return list(mailer.sent)

    return MailerUnderTest(mailer=mailer, delivered=delivered)


@pytest.fixture(params=["memory"])
async def limiter(request: pytest.FixtureRequest) -> LimiterUnderTest:
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    return LimiterUnderTest(limiter=MemoryRateLimiter(clock), advance=advance)


class TestEventBus(EventBusContract):
    pass


class TestMailer(MailerContract):
    pass


class TestRateLimiter(RateLimiterContract):
    pass
