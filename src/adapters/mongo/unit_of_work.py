"""The MongoDB unit of work (one multi-document transaction: the changes and their events) and the log.

Concurrency is optimistic. Each aggregate document carries a `version`; a write is
conditional on the version this unit read, so when two units read the same chat (the same
`last_seq`) only one commit can land and the other raises ConcurrentUpdate, which the use case
answers by running again on fresh state. The transaction makes the rest atomic: message,
chat and events commit together or not at all, and a rolled-back commit takes its stream
seqs back with it, so seqs stay gapless and unique across any number of processes.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

import pymongo
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from adapters.mongo import documents as d
from adapters.mongo.database import MongoStore
from adapters.mongo.errors import translated
from adapters.mongo.repositories import (
    MongoChatRepository,
    MongoCredentialRepository,
    MongoGroupRepository,
    MongoMessageRepository,
    MongoReadMarkerRepository,
    MongoUserRepository,
)
from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.ports.errors import ConcurrentUpdate
from chatcore.ports.repositories import (
    ChatRepository,
    CredentialRepository,
    GroupRepository,
    MessageRepository,
    ReadMarkerRepository,
    UserRepository,
)
from chatcore.ports.system import Clock, IdGenerator
from chatcore.ports.unit_of_work import UnitOfWorkFactory

Doc = dict[str, Any]
Sort = list[tuple[str, int]]

_ABSENT = 0  # the version of a document read as missing; stored documents start at 1
_ABORT_BUDGET_S = 1.0  # rolling back is best effort: the server drops the transaction anyway


class MongoUnitOfWork:
    def __init__(self, store: MongoStore, clock: Clock, ids: IdGenerator) -> None:
        self.store, self._clock, self._ids = store, clock, ids
        self._events: list[AnyEvent] = []
        self._session: AsyncClientSession | None = None
        self._versions: dict[tuple[str, str], int] = {}
        self._lock: asyncio.Lock | None = None
        self._commit_failed = False
        self._active = False
        self._deadline: float | None = None  # loop time by which the unit must be done
        self._budget_scope: AbstractContextManager[object] | None = None
        # Typed as the ports: the UnitOfWork protocol's attributes are mutable, hence invariant.
        self.users: UserRepository = MongoUserRepository(self)
        self.credentials: CredentialRepository = MongoCredentialRepository(self)
        self.groups: GroupRepository = MongoGroupRepository(self)
        self.chats: ChatRepository = MongoChatRepository(self)
        self.messages: MessageRepository = MongoMessageRepository(self)
        self.read_markers: ReadMarkerRepository = MongoReadMarkerRepository(self)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("this unit of work is already in use")
        self._active = True
        self._events, self._versions = [], {}
        # One deadline for the whole unit, the wait for the per-chat lock included: during an
        # outage a send queued behind another answers within the database budget too, instead
        # of waiting for the lock and then getting a budget of its own for every call.
        budget = self.store.client.options.timeout
        self._deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        self._budget_scope = None if budget is None else pymongo.timeout(budget)
        if self._budget_scope is not None:
            self._budget_scope.__enter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._events, self._versions = [], {}
        scope, self._budget_scope = self._budget_scope, None
        if scope is not None:
            scope.__exit__(None, None, None)  # the abort below has a budget of its own
        try:
            await self._end_transaction()
        finally:
            self._release_lock()
            self._active = False
        if isinstance(exc, ConcurrentUpdate) and self.store.conflict_backoff_s > 0:
            # The use case reruns at once; a little jitter stops the losers colliding in lockstep.
            await asyncio.sleep(random.uniform(0, self.store.conflict_backoff_s))

    async def _end_transaction(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        commit_failed, self._commit_failed = self._commit_failed, False
        try:
            with pymongo.timeout(_ABORT_BUDGET_S):
                if session.in_transaction:
                    await session.abort_transaction()
                elif commit_failed:
                    # The driver counts a failed commit as finished, but mongoeco keeps that
                    # transaction open on the (pooled, reused) server session, failing every
                    # later transaction on it; MongoDB answers this with a harmless error.
                    await self.store.client.admin.command("abortTransaction", session=session)
        except PyMongoError:
            pass  # an unreachable server forgets the transaction by itself
        finally:
            await session.end_session()

    async def lock(self, key: str) -> None:
        """Queue behind other units of this process that hold `key` (the first one asked for only).

        Holding at most one lock per unit means no unit ever waits while holding one: no deadlock.
        """
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        if self._lock is None:
            lock = self.store.locks.get(key)
            wait_s = self.store.lock_wait_s
            if self._deadline is not None:
                wait_s = max(0.0, min(wait_s, self._deadline - asyncio.get_running_loop().time()))
            try:
                await asyncio.wait_for(lock.acquire(), wait_s)
            except TimeoutError:
                return  # go on unqueued: the version checks still decide who wins
            self._lock = lock

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # -- reads and writes for the repositories ----------------------------------------------

    @property
    def session(self) -> AsyncClientSession | None:
        """The open transaction's session, if any: reads through it see this unit's writes."""
        return self._session

    async def _write_session(self) -> AsyncClientSession:
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        if self._session is None:
            session = self.store.client.start_session()
            try:
                await session.start_transaction(
                    read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
                )
            except BaseException:
                await session.end_session()
                raise
            self._session = session
        return self._session

    def _remember(self, collection: str, doc_id: str, version: int) -> None:
        self._versions.setdefault((collection, doc_id), version)

    async def find_one(
        self,
        coll: AsyncCollection[Doc],
        query: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
    ) -> Doc | None:
        """One document (its version remembered; a `projection` must keep the version field)."""
        with translated():
            doc = await coll.find_one(query, projection, session=self._session)
        if doc is not None:
            self._remember(coll.name, doc["_id"], int(doc.get(d.VERSION, _ABSENT)))
        elif set(query) == {"_id"}:
            self._remember(coll.name, query["_id"], _ABSENT)
        return doc

    async def find(
        self,
        coll: AsyncCollection[Doc],
        query: Mapping[str, Any],
        *,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[Doc]:
        with translated():
            docs = await coll.find(query, sort=sort, limit=limit, session=self._session).to_list()
        for doc in docs:
            self._remember(coll.name, doc["_id"], int(doc.get(d.VERSION, _ABSENT)))
        return docs

    async def _version(self, coll: AsyncCollection[Doc], doc_id: str, session: AsyncClientSession) -> int:
        known = self._versions.get((coll.name, doc_id))
        if known is not None:
            return known
        # A blind write (nothing read first): take the version as it is now, in the transaction.
        with translated():
            current = await coll.find_one({"_id": doc_id}, {d.VERSION: 1}, session=session)
        return _ABSENT if current is None else int(current.get(d.VERSION, 1))

    async def write(self, coll: AsyncCollection[Doc], doc: Doc, *, new: bool = False) -> None:
        """Insert or replace `doc`, if its stored version is still the one this unit read."""
        session = await self._write_session()
        doc_id = doc["_id"]
        version = _ABSENT if new else await self._version(coll, doc_id, session)
        with translated():
            if version == _ABSENT:
                # A concurrent insert of the same _id fails as a duplicate: a lost race.
                await coll.insert_one({**doc, d.VERSION: 1}, session=session)
            else:
                result = await coll.replace_one(
                    {"_id": doc_id, d.VERSION: version}, {**doc, d.VERSION: version + 1}, session=session
                )
                if result.matched_count != 1:
                    raise ConcurrentUpdate(f"{coll.name} {doc_id} changed since it was read")
        self._versions[(coll.name, doc_id)] = version + 1

    async def update(self, coll: AsyncCollection[Doc], doc_id: str, fields: Mapping[str, Any]) -> None:
        """Set `fields` of a stored document, if its version is still the one this unit read."""
        session = await self._write_session()
        version = await self._version(coll, doc_id, session)
        with translated():
            result = await coll.update_one(
                {"_id": doc_id, d.VERSION: version},
                {"$set": {**fields, d.VERSION: version + 1}},
                session=session,
            )
        if result.matched_count != 1:
            raise ConcurrentUpdate(f"{coll.name} {doc_id} changed since it was read")
        self._versions[(coll.name, doc_id)] = version + 1

    async def delete(self, coll: AsyncCollection[Doc], doc_id: str) -> None:
        session = await self._write_session()
        version = await self._version(coll, doc_id, session)
        if version == _ABSENT:
            return
        with translated():
            result = await coll.delete_one({"_id": doc_id, d.VERSION: version}, session=session)
        if result.deleted_count != 1:
            raise ConcurrentUpdate(f"{coll.name} {doc_id} changed since it was read")
        self._versions[(coll.name, doc_id)] = _ABSENT

    # -- the outbox -------------------------------------------------------------------------

    def record(self, event: AnyEvent) -> None:
        self._events.append(event)

    async def commit(self) -> list[EventRecord]:
        """Take each stream's next seqs, write the events, and commit everything at once.

        Stream counters live in `streams`; bumping one inside the transaction makes two
        commits to the same stream conflict, so seqs are gapless. The counter also keeps the
        stream's latest outbox `position` ($max with now): positions never go backwards within
        a stream even when the writers' clocks disagree, so the relay keeps per-stream order.
        """
        if not self._active:
            raise RuntimeError("a unit of work is used inside `async with` only")
        events, now = self._events, self._clock.now()
        if not events and self._session is None:
            self._release_lock()
            return []
        session = await self._write_session()
        records: list[EventRecord] = []
        docs: list[Doc] = []
        with translated():
            next_seq: dict[str, int] = {}
            position: dict[str, Any] = {}
            for stream_id, count in Counter(e.stream_id for e in events).items():
                counter = await self.store.streams.find_one_and_update(
                    {"_id": stream_id},
                    {"$inc": {"seq": count}, "$max": {"position": now}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
                assert counter is not None  # upserted
                next_seq[stream_id] = int(counter["seq"]) - count + 1
                position[stream_id] = counter["position"]
            for event in events:
                seq = next_seq[event.stream_id]
                next_seq[event.stream_id] = seq + 1
                record = EventRecord(
                    id=self._ids.new_id(), stream_id=event.stream_id, seq=seq, occurred_at=now, event=event
                )
                records.append(record)
                docs.append(d.event_doc(record, position[event.stream_id]))
            if docs:
                await self.store.events.insert_many(docs, ordered=True, session=session)
            self._commit_failed = True
            await session.commit_transaction()
            self._commit_failed = False
        self._session = None
        await session.end_session()
        self._events = []
        self._release_lock()  # other processes may write before this unit's next transaction
        return records


def mongo_uow_factory(store: MongoStore, clock: Clock, ids: IdGenerator) -> UnitOfWorkFactory:
    return lambda: MongoUnitOfWork(store, clock, ids)


class MongoEventLog:
    """Reads committed records on the (stream_id, seq) index; the outbox on a partial index."""

    def __init__(self, store: MongoStore) -> None:
        self._store = store

    async def _records(self, query: Mapping[str, Any], sort: Sort, limit: int) -> list[EventRecord]:
        if limit <= 0:
            return []
        with translated():
            docs = await self._store.events.find(query, sort=sort, limit=limit).to_list()
        return [d.record_from(doc) for doc in docs]

    async def read(self, stream_id: str, *, after_seq: int, limit: int) -> list[EventRecord]:
        return await self._records(
            {"stream_id": stream_id, "seq": {"$gt": after_seq}},
            [("stream_id", ASCENDING), ("seq", ASCENDING)],
            limit,
        )

    async def read_back(self, stream_id: str, *, before_seq: int, limit: int) -> list[EventRecord]:
        """Records of the stream below `before_seq`, newest first."""
        return await self._records(
            {"stream_id": stream_id, "seq": {"$lt": before_seq}},
            [("stream_id", ASCENDING), ("seq", DESCENDING)],
            limit,
        )

    async def last_seq(self, stream_id: str) -> int:
        with translated():
            counter = await self._store.streams.find_one({"_id": stream_id})
        return 0 if counter is None else int(counter["seq"])

    async def undispatched(self, limit: int) -> list[EventRecord]:
        """Oldest first by outbox position, then stream and seq (see MongoUnitOfWork.commit)."""
        return await self._records(
            {"dispatched": False},
            [("position", ASCENDING), ("stream_id", ASCENDING), ("seq", ASCENDING)],
            limit,
        )

    async def mark_dispatched(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        with translated():
            await self._store.events.update_many(
                {"_id": {"$in": list(event_ids)}, "dispatched": False}, {"$set": {"dispatched": True}}
            )
