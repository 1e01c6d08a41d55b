"""Which adapters each contract suite runs against. An adapter joins by adding one entry here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from adapters.memory.store import MemoryStore
from adapters.memory.unit_of_work import MemoryEventLog, MemoryUnitOfWork
from adapters.sqlite import SqliteDatabase, SqliteEventLog, sqlite_uow_factory
from chatcore.testing.contracts import StorageUnderTest
from chatcore.testing.doubles import FakeClock, SequentialIds
from tests.integration.fixtures.mongo import mongo_require_replica_set, mongo_storage, mongo_url  # noqa: F401

StorageFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[StorageUnderTest]]


@asynccontextmanager
async def memory_storage(request: pytest.FixtureRequest) -> AsyncIterator[StorageUnderTest]:
    store, clock, ids = MemoryStore(), FakeClock(), SequentialIds()
    yield StorageUnderTest(
        uow=lambda: MemoryUnitOfWork(store, clock, ids), log=MemoryEventLog(store), clock=clock, ids=ids
    )


@asynccontextmanager
async def sqlite_storage(request: pytest.FixtureRequest) -> AsyncIterator[StorageUnderTest]:
    clock, ids = FakeClock(), SequentialIds()
    async with SqliteDatabase(request.getfixturevalue("tmp_path") / "chatcore.db") as db:
        yield StorageUnderTest(
            uow=sqlite_uow_factory(db, clock, ids), log=SqliteEventLog(db), clock=clock, ids=ids
        )


STORAGE_ADAPTERS: dict[str, StorageFactory] = {
    "memory": memory_storage,
    "mongo": mongo_storage,
    "sqlite": sqlite_storage,
}


@pytest.fixture(params=sorted(STORAGE_ADAPTERS))
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[StorageUnderTest]:
    async with STORAGE_ADAPTERS[request.param](request) as under_test:
        yield under_test
