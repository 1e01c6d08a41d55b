"""The bus, mailer and rate limiter contracts, run against every adapter of each port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.bus import MemoryEventBus
from adapters.memory.mail import MemoryMailer
from adapters.memory.rate_limit import MemoryRateLimiter
from adapters.redis import RedisEventBus, RedisRateLimiter, redis_client
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
from tests.integration.fixtures.redis import redis_prefix, redis_session_server, redis_url  # noqa: F401


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "redis":
        redis_bus = RedisEventBus(
            request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix")
        )
        await redis_bus.start()
        yield redis_bus
        await redis_bus.close()
        return
    yield MemoryEventBus()


@pytest.fixture(params=["memory", "smtp", "folder"])
async def mail(request: pytest.FixtureRequest) -> AsyncIterator[MailerUnderTest]:
    if request.param == "smtp":
        from adapters.smtp import SmtpMailer, parse_smtp_url
        from tests.integration.fixtures.smtp import SmtpTestServer

        with SmtpTestServer() as server:

            async def received() -> list[Mail]:
                return server.mails()

            yield MailerUnderTest(mailer=SmtpMailer(parse_smtp_url(server.url)), delivered=received)
        return
    if request.param == "folder":
        from adapters.mail_folder import FolderMailer

        folder = FolderMailer(request.getfixturevalue("tmp_path") / "mail")

        async def written() -> list[Mail]:
            return folder.mails()

        yield MailerUnderTest(mailer=folder, delivered=written)
        return
    mailer = MemoryMailer()

    async def delivered() -> list[Mail]:
        return list(mailer.sent)

    yield MailerUnderTest(mailer=mailer, delivered=delivered)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[LimiterUnderTest]:
    clock = FakeClock()

    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    if request.param == "redis":
        client = redis_client(request.getfixturevalue("redis_url"))
        prefix = request.getfixturevalue("redis_prefix")
        yield LimiterUnderTest(limiter=RedisRateLimiter(client, prefix=prefix, clock=clock), advance=advance)
        await client.aclose()
        return
    yield LimiterUnderTest(limiter=MemoryRateLimiter(clock), advance=advance)


class TestEventBus(EventBusContract):
    pass


class TestMailer(MailerContract):
    pass


class TestRateLimiter(RateLimiterContract):
    pass
