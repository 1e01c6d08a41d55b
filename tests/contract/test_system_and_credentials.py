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


# The child only writes to a pipe and exits: other threads of the test process do not matter.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_ulid_random_bits_are_never_shared_with_a_forked_child() -> None:
    # The random bits are read from the OS in batches; a child forked with part of a batch
    # unread must not make the ids its parent makes next.
    import os

    ids = UlidGenerator()
    ids.new_id()  # the batch is read, most of it unused
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read_end)
        os.write(write_end, " ".join(ids.new_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    parent = [ids.new_id() for _ in range(5)]
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert {i[10:] for i in child}.isdisjoint(i[10:] for i in parent)  # the 80 random bits
