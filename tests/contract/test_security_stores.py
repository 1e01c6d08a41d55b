"""The auth store contracts (one-time tokens, sessions, failure counters) on memory, sqlite and mongo.

An adapter joins by adding one factory to SECURITY_ADAPTERS. Each factory also says how to dump
everything its stores hold, raw, for the at-rest test (tests/integration/test_security_stores_at_rest.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from adapters.memory.security import MemoryFailureCounter, MemoryOneTimeTokenStore, MemorySessionStore
from adapters.sqlite import SqliteDatabase
from adapters.sqlite.security import SqliteFailureCounter, SqliteOneTimeTokenStore, SqliteSessionStore
from chatcore.ports.security import FailureCounter, OneTimeTokenStore, SessionStore
from chatcore.testing.contracts import (
    FailureCounterContract,
    FailuresUnderTest,
    OneTimeTokenStoreContract,
    OneTimeTokensUnderTest,
    SessionStoreContract,
    SessionsUnderTest,
)


@dataclass
class SecurityStores:
    one_time: OneTimeTokenStore
    sessions: SessionStore
    failures: FailureCounter
    # Everything the stores hold, as the storage has it (rows, documents, file bytes), as text.
    dump: Callable[[], Awaitable[str]]


SecurityFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[SecurityStores]]


@asynccontextmanager
async def memory_security(request: pytest.FixtureRequest) -> AsyncIterator[SecurityStores]:
    one_time, sessions, failures = MemoryOneTimeTokenStore(), MemorySessionStore(), MemoryFailureCounter()

    async def dump() -> str:
        state = [one_time.tokens, sessions.sessions, sessions.refresh_index, failures.records]
        return msgspec.json.encode(state).decode()

    yield SecurityStores(one_time, sessions, failures, dump)


@asynccontextmanager
async def sqlite_security(request: pytest.FixtureRequest) -> AsyncIterator[SecurityStores]:
    path: Path = request.getfixturevalue("tmp_path") / "chatcore.db"
    async with SqliteDatabase(path) as db:

        async def dump() -> str:
            def rows(conn: sqlite3.Connection) -> list[object]:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
                return [(t, conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables]  # noqa: S608

            files = [p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*")]
            return repr(await db.read(rows)) + "".join(files)

        yield SecurityStores(
            SqliteOneTimeTokenStore(db), SqliteSessionStore(db), SqliteFailureCounter(db), dump
        )


@asynccontextmanager
async def mongo_security(request: pytest.FixtureRequest) -> AsyncIterator[SecurityStores]:
    from adapters.mongo import MongoStore, check_server, connect, init_indexes
    from adapters.mongo.security import MongoFailureCounter, MongoOneTimeTokenStore, MongoSessionStore
    from tests.integration.fixtures.mongo import new_database_name

    url: str = request.getfixturevalue("mongo_url")
    require_rs: bool = request.getfixturevalue("mongo_require_replica_set")
    name = new_database_name()
    store = MongoStore.open(connect(url), name)
    try:
        await check_server(store, require_replica_set=require_rs)
        await init_indexes(store)

        async def dump() -> str:
            names = await store.db.list_collection_names()
            return repr([(n, await store[n].find({}).to_list()) for n in sorted(names)])

        yield SecurityStores(
            MongoOneTimeTokenStore(store), MongoSessionStore(store), MongoFailureCounter(store), dump
        )
    finally:
        with contextlib.suppress(Exception):
            await store.client.drop_database(name)
        await store.close()


SECURITY_ADAPTERS: dict[str, SecurityFactory] = {
    "memory": memory_security,
    "mongo": mongo_security,
    "sqlite": sqlite_security,
}


@pytest.fixture(params=sorted(SECURITY_ADAPTERS))
async def security_stores(request: pytest.FixtureRequest) -> AsyncIterator[SecurityStores]:
    async with SECURITY_ADAPTERS[request.param](request) as stores:
        yield stores


@pytest.fixture
def one_time_tokens(security_stores: SecurityStores) -> OneTimeTokensUnderTest:
    return OneTimeTokensUnderTest(security_stores.one_time)


@pytest.fixture
def sessions(security_stores: SecurityStores) -> SessionsUnderTest:
    return SessionsUnderTest(security_stores.sessions)


@pytest.fixture
def failures(security_stores: SecurityStores) -> FailuresUnderTest:
    return FailuresUnderTest(security_stores.failures)


class TestOneTimeTokenStore(OneTimeTokenStoreContract):
    pass


class TestSessionStore(SessionStoreContract):
    pass


class TestFailureCounter(FailureCounterContract):
    pass


@pytest.fixture
async def cached_sessions(request: pytest.FixtureRequest) -> AsyncIterator[SessionsUnderTest]:
    """The session cache over the SQLite store, as the container wires it without a broker."""
    from adapters.session_cache import CachedSessionStore

    async with sqlite_security(request) as stores:
        yield SessionsUnderTest(CachedSessionStore(stores.sessions))


class TestCachedSessionStore(SessionStoreContract):
    """The cache answers as the store does: every contract test reads back through it."""

    @pytest.fixture
    def sessions(self, cached_sessions: SessionsUnderTest) -> SessionsUnderTest:
        return cached_sessions
