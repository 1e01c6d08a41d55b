"""The MongoDB client, its collections, the start-up check and the indexes (`chatcore init-db`).

Fail fast: server selection and every operation have short, explicit budgets (CSOT
`timeoutMS`), so a dead database surfaces as StoreUnavailable in seconds, never as a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from adapters.mongo.errors import MongoSetupError, translated

Doc = dict[str, Any]

DEFAULT_DATABASE = "chatcore"


def connect(
    url: str,
    *,
    server_selection_timeout_ms: int = 2_000,
    timeout_ms: int = 5_000,
    connect_timeout_ms: int = 2_000,
    max_pool_size: int = 100,
    app_name: str = "chatcore",
) -> AsyncMongoClient[Doc]:
    """A client that gives up quickly: no call waits more than `timeout_ms` for the server.

    Dates come back timezone-aware in UTC. Nothing connects until the first operation.
    """
    return AsyncMongoClient(
        url,
        tz_aware=True,
        tzinfo=UTC,
        serverSelectionTimeoutMS=server_selection_timeout_ms,
        timeoutMS=timeout_ms,
        connectTimeoutMS=connect_timeout_ms,
        maxPoolSize=max_pool_size,
        appname=app_name,
    )


class KeyedLocks:
    """In-process locks by key, dropped when nobody holds or waits on them.

    Only a liveness aid: units of work in one process that want the same chat queue here
    instead of failing each other's optimistic check. Correctness never depends on them.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def get(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock


@dataclass
class MongoStore:
    """One database's collections, shared by every unit of work and the event log."""

    client: AsyncMongoClient[Doc]
    db: AsyncDatabase[Doc]
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    # Jitter before a lost race is reported, so that losers do not collide again in lockstep.
    conflict_backoff_s: float = 0.02
    # How long a unit waits for another unit of this process holding the same chat or group.
    lock_wait_s: float = 5.0

    @classmethod
    def open(cls, client: AsyncMongoClient[Doc], database: str | None = None) -> MongoStore:
        return cls(client, client[database or DEFAULT_DATABASE])

    def __getitem__(self, name: str) -> AsyncCollection[Doc]:
        return self.db[name]

    @property
    def users(self) -> AsyncCollection[Doc]:
        return self.db["users"]

    @property
    def credentials(self) -> AsyncCollection[Doc]:
        return self.db["credentials"]

    @property
    def groups(self) -> AsyncCollection[Doc]:
        return self.db["groups"]

    @property
    def chats(self) -> AsyncCollection[Doc]:
        return self.db["chats"]

    @property
    def messages(self) -> AsyncCollection[Doc]:
        return self.db["messages"]

    @property
    def read_markers(self) -> AsyncCollection[Doc]:
        return self.db["read_markers"]

    @property
    def events(self) -> AsyncCollection[Doc]:
        return self.db["events"]

    @property
    def streams(self) -> AsyncCollection[Doc]:
        return self.db["streams"]

    async def close(self) -> None:
        await self.client.close()


# -- start-up check ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version: str
    replica_set: str | None
    sharded: bool
    transactions_probed: bool


STANDALONE_MESSAGE = (
    "MongoDB at this URL is a standalone server: chatcore writes each change and its events in "
    "one multi-document transaction, which needs a replica set (a single-node one will do: start "
    "mongod with --replSet rs0 and run rs.initiate()) or a sharded cluster."
)


async def check_server(store: MongoStore, *, require_replica_set: bool = True) -> ServerInfo:
    """Refuse a server that cannot run chatcore's transactions; raise StoreUnavailable if unreachable.

    A replica set or mongos passes on its `hello`. A standalone server is refused unless
    `require_replica_set` is False (wire-compatible test servers such as mongoeco report no
    replica set); then transactions are probed instead: a write inside an aborted transaction
    must leave nothing behind, or the server is refused all the same.
    """
    with translated():
        hello: Doc = await store.client.admin.command("hello")
        build: Doc = await store.client.admin.command("buildInfo")
    replica_set = hello.get("setName")
    sharded = hello.get("msg") == "isdbgrid"
    version = str(build.get("version", "?"))
    if replica_set is not None or sharded:
        return ServerInfo(version, replica_set, sharded, transactions_probed=False)
    if require_replica_set:
        raise MongoSetupError(STANDALONE_MESSAGE)
    await probe_transactions(store)
    return ServerInfo(version, None, False, transactions_probed=True)


async def probe_transactions(store: MongoStore) -> None:
    """Write inside a transaction, abort it, and check that the write is gone."""
    probe = store["_chatcore_probe"]
    probe_id = uuid.uuid4().hex
    try:
        with translated():
            async with store.client.start_session() as session:
                await session.start_transaction()
                try:
                    await probe.insert_one({"_id": probe_id}, session=session)
                    inside = await probe.find_one({"_id": probe_id}, session=session)
                    outside = await probe.find_one({"_id": probe_id})
                finally:
                    await session.abort_transaction()
            after = await probe.find_one({"_id": probe_id})
    except PyMongoError as error:
        raise MongoSetupError(f"the server refused a transaction: {error}") from error
    if inside is None or outside is not None or after is not None:
        raise MongoSetupError(
            "the server accepted a transaction but did not isolate or roll it back: "
            f"seen inside={inside is not None}, outside before abort={outside is not None}, "
            f"after abort={after is not None}"
        )


# -- indexes -----------------------------------------------------------------------------------

# Named, so that duplicate-key errors can say which key was taken (errors.KEY_OF_INDEX).
INDEXES: dict[str, list[IndexModel]] = {
    "users": [IndexModel([("email", ASCENDING)], name="users_email", unique=True)],
    "groups": [IndexModel([("members.user_id", ASCENDING)], name="groups_members")],
    "chats": [
        IndexModel(
            [("direct_key", ASCENDING)],
            name="chats_direct_key",
            unique=True,
            partialFilterExpression={"direct_key": {"$exists": True}},
        ),
        IndexModel([("members.user_id", ASCENDING)], name="chats_members"),
        IndexModel([("group_id", ASCENDING)], name="chats_group"),
    ],
    # Shard key candidate: {chat_id: 1}; both unique indexes start with it, as sharding requires.
    "messages": [
        IndexModel([("chat_id", ASCENDING), ("seq", ASCENDING)], name="messages_chat_seq", unique=True),
        IndexModel(
            [("chat_id", ASCENDING), ("author_id", ASCENDING), ("client_msg_id", ASCENDING)],
            name="messages_client_msg_id",
            unique=True,
            partialFilterExpression={"client_msg_id": {"$exists": True}},
        ),
    ],
    "read_markers": [IndexModel([("chat_id", ASCENDING), ("user_id", ASCENDING)], name="markers_chat_user")],
    # Shard key candidate: {stream_id: 1}.
    "events": [
        IndexModel([("stream_id", ASCENDING), ("seq", ASCENDING)], name="events_stream_seq", unique=True),
        IndexModel(
            [("position", ASCENDING), ("stream_id", ASCENDING), ("seq", ASCENDING)],
            name="events_undispatched",
            partialFilterExpression={"dispatched": False},
        ),
    ],
}


async def init_indexes(store: MongoStore) -> dict[str, list[str]]:
    """Create every index chatcore's queries rely on (idempotent); returns names per collection."""
    created: dict[str, list[str]] = {}
    with translated():
        for collection, models in INDEXES.items():
            created[collection] = await store[collection].create_indexes(models)
    from adapters.mongo.security import init_security_indexes  # here: it imports this module

    created.update(await init_security_indexes(store))
    return created


def ttl_index(field_name: str, *, name: str | None = None, expire_after_s: int = 0) -> IndexModel:
    """A TTL index for one-time tokens and sessions (owned by those stores).

    With the default `expire_after_s=0`, each document is removed once the BSON date in
    `field_name` (its `expires_at`) has passed. MongoDB's TTL monitor runs about once a
    minute, so readers must still check expiry themselves.
    """
    return IndexModel(
        [(field_name, ASCENDING)], name=name or f"ttl_{field_name}", expireAfterSeconds=expire_after_s
    )


async def ensure_ttl_index(collection: AsyncCollection[Doc], field_name: str = "expires_at") -> str:
    """Create `ttl_index(field_name)` on `collection`; returns the index name."""
    with translated():
        (name,) = await collection.create_indexes([ttl_index(field_name)])
    return name


@contextlib.asynccontextmanager
async def open_store(
    url: str,
    *,
    database: str | None = None,
    require_replica_set: bool = True,
    create_indexes: bool = False,
    server_selection_timeout_ms: int = 2_000,
    timeout_ms: int = 5_000,
) -> AsyncIterator[MongoStore]:
    """A checked store, closed on exit: the composition root's one call."""
    client = connect(url, server_selection_timeout_ms=server_selection_timeout_ms, timeout_ms=timeout_ms)
    store = MongoStore.open(client, database)
    try:
        await check_server(store, require_replica_set=require_replica_set)
        if create_indexes:
            await init_indexes(store)
        yield store
    finally:
        await store.close()
