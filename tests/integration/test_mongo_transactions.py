"""MongoDB transactions on the wire server: the outbox's premise, checked first.

If a transaction aborted half-way left anything behind, the change-plus-event atomicity of
the unit of work would be a fiction and the adapter would need single-document atomicity.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pymongo import AsyncMongoClient

from adapters.mongo import MongoEventLog, MongoStore, check_server, connect, init_indexes, mongo_uow_factory
from adapters.mongo.unit_of_work import MongoUnitOfWork
from chatcore.domain.events import EventRecord, ProfileUpdated
from chatcore.domain.users import User
from chatcore.testing.doubles import FakeClock, SequentialIds
from tests.integration.fixtures.mongo import *  # noqa: F403

TEST_BUDGET_S = 30


@pytest.fixture
async def store(
    mongo_url: str, mongo_database: str, mongo_require_replica_set: bool
) -> AsyncIterator[MongoStore]:
    store = MongoStore.open(connect(mongo_url), mongo_database)
    await check_server(store, require_replica_set=mongo_require_replica_set)
    await init_indexes(store)
    yield store
    await store.close()


async def test_raw_transaction_aborted_half_way_leaves_neither_document(store: MongoStore) -> None:
    """The driver-level premise: two collections written in one transaction, then aborted."""
    async with asyncio.timeout(TEST_BUDGET_S):
        client: AsyncMongoClient[dict[str, object]] = store.client
        async with client.start_session() as session:
            await session.start_transaction()
            await store.users.insert_one({"_id": "u1", "email": "a@example.com"}, session=session)
            await store.events.insert_one({"_id": "e1", "stream_id": "u1", "seq": 1}, session=session)
            assert await store.users.find_one({"_id": "u1"}, session=session) is not None
            assert await store.users.find_one({"_id": "u1"}) is None  # isolated until commit
            await session.abort_transaction()
        assert await store.users.find_one({"_id": "u1"}) is None
        assert await store.events.find_one({"_id": "e1"}) is None


class _FailingAfterChange(MongoUnitOfWork):
    """Fails after the change and the stream counter are written, before the events are."""

    async def commit(self) -> list[EventRecord]:
        session = await self._write_session()
        await self.store.streams.insert_one({"_id": "u1", "seq": 1}, session=session)
        raise RuntimeError("the process died half-way through the commit")


async def test_unit_of_work_failing_half_way_writes_neither_change_nor_event(store: MongoStore) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        clock, ids = FakeClock(), SequentialIds()
        user = User("u1", "ann@example.com", "Ann", clock.now())
        with pytest.raises(RuntimeError, match="half-way"):
            async with _FailingAfterChange(store, clock, ids) as uow:
                await uow.users.add(user)
                uow.record(ProfileUpdated(user_id="u1", display_name="Ann", bio=""))
                await uow.commit()
        log = MongoEventLog(store)
        async with mongo_uow_factory(store, clock, ids)() as uow:
            assert await uow.users.get("u1") is None
        assert await log.last_seq("u1") == 0
        assert await log.undispatched(10) == []
        assert await store.users.count_documents({}) == 0
        assert await store.streams.count_documents({}) == 0
        assert await store.events.count_documents({}) == 0


async def test_commit_writes_change_and_event_together(store: MongoStore) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        clock, ids = FakeClock(), SequentialIds()
        async with mongo_uow_factory(store, clock, ids)() as uow:
            await uow.users.add(User("u1", "ann@example.com", "Ann", clock.now()))
            uow.record(ProfileUpdated(user_id="u1", display_name="Ann", bio=""))
            records = await uow.commit()
        assert [(r.stream_id, r.seq) for r in records] == [("u1", 1)]
        assert await store.users.count_documents({}) == 1
        assert await MongoEventLog(store).read("u1", after_seq=0, limit=10) == records
