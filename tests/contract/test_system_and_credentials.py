"""Clock, id, password-hashing and token contracts, run against every adapter of each port."""

from __future__ import annotations

import pytest

from adapters.security.argon2_hasher import Argon2PasswordHasher
from adapters.security.jwt_tokens import JwtTokenIssuer
from adapters.system import SystemClock, UlidGenerator
from chatcore.ports.security import PasswordHasher, TokenIssuer
from chatcore.ports.system import Clock, IdGenerator
from chatcore.testing.contracts import (
    ClockContract,
    IdGeneratorContract,
    PasswordHasherContract,
    TokenIssuerContract,
)
from chatcore.testing.doubles import FakeClock, SequentialIds


@pytest.fixture(params=["system", "fake"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return SystemClock() if request.param == "system" else FakeClock()


@pytest.fixture(params=["ulid", "sequential"])
def ids(request: pytest.FixtureRequest) -> IdGenerator:
    return UlidGenerator() if request.param == "ulid" else SequentialIds()


@pytest.fixture(params=["argon2id"])
def hasher(request: pytest.FixtureRequest) -> PasswordHasher:
    return Argon2PasswordHasher.cheapest()  # the contract, not the cost: production cost is tested apart


def _jwt(key: bytes) -> JwtTokenIssuer:
    return JwtTokenIssuer(keys={"k1": key}, active_kid="k1", issuer="https://chat.example")


@pytest.fixture(params=["jwt"])
def issuer(request: pytest.FixtureRequest) -> TokenIssuer:
    return _jwt(b"k" * 32)


@pytest.fixture
def other_issuer() -> TokenIssuer:
    return _jwt(b"o" * 32)


class TestClock(ClockContract):
    pass


class TestIds(IdGeneratorContract):
    pass


class TestPasswordHasher(PasswordHasherContract):
    pass


class TestTokenIssuer(TokenIssuerContract):
    pass
