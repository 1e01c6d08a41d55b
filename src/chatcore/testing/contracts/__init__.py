"""Contract suites: one per port, run against every adapter of that port.

Each suite is a class whose async test methods take one fixture. To run a suite against an
adapter (yours included), subclass it in a test module under a `Test*` name and provide the
fixture; chatcore's own `tests/contract/` does this for every bundled adapter:

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self) -> AsyncIterator[StorageUnderTest]:
            yield StorageUnderTest(uow=..., log=..., clock=FakeClock(), ids=SequentialIds())
"""

from chatcore.testing.contracts.bus import EventBusContract
from chatcore.testing.contracts.mail import MailerContract, MailerUnderTest
from chatcore.testing.contracts.rate_limit import LimiterUnderTest, RateLimiterContract
from chatcore.testing.contracts.security import (
    FailureCounterContract,
    FailuresUnderTest,
    OneTimeTokenStoreContract,
    OneTimeTokensUnderTest,
    SessionStoreContract,
    SessionsUnderTest,
)
from chatcore.testing.contracts.storage import StorageContract, StorageUnderTest
from chatcore.testing.contracts.system import (
    ClockContract,
    IdGeneratorContract,
    PasswordHasherContract,
    TokenIssuerContract,
)

__all__ = [
    "ClockContract",
    "EventBusContract",
    "FailureCounterContract",
    "FailuresUnderTest",
    "IdGeneratorContract",
    "LimiterUnderTest",
    "MailerContract",
    "MailerUnderTest",
    "OneTimeTokenStoreContract",
    "OneTimeTokensUnderTest",
    "PasswordHasherContract",
    "RateLimiterContract",
    "SessionStoreContract",
    "SessionsUnderTest",
    "StorageContract",
    "StorageUnderTest",
    "TokenIssuerContract",
]
