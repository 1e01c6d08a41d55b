"""The persistent auth stores outlive their process and are shared by instances.

A restart (closing and reopening the SQLite file, a new Mongo client) keeps sessions, tokens and
failure counts; two instances on one database (two SqliteDatabase objects on one file, two Mongo
clients) still let exactly one of them win a code or a refresh rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.sqlite import SqliteDatabase
from adapters.sqlite.security import SqliteFailureCounter, SqliteOneTimeTokenStore, SqliteSessionStore
from chatcore.ports.security import (
    AuthSession,
    EmailPurpose,
    FailureCounter,
    OneTimeToken,
    OneTimeTokenStore,
    SessionStore,
)
from chatcore.testing.contracts.security import SUITE_START, fake_hash


@dataclass
class Instance:
    one_time: OneTimeTokenStore
    sessions: SessionStore
    failures: FailureCounter


# Opens one more instance on the test's database; each stays open until the test ends.
Opener = Callable[[], AbstractAsyncContextManager[Instance]]


@asynccontextmanager
async def _sqlite_instance(path: Path) -> AsyncIterator[Instance]:
    async with SqliteDatabase(path) as db:
        yield Instance(SqliteOneTimeTokenStore(db), SqliteSessionStore(db), SqliteFailureCounter(db))


@pytest.fixture(params=["mongo", "sqlite"])
async def opener(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    if request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "chatcore.db"
        yield lambda: _sqlite_instance(path)
        return
    from adapters.mongo import MongoStore, check_server, connect, init_indexes
    from adapters.mongo.security import MongoFailureCounter, MongoOneTimeTokenStore, MongoSessionStore
    from tests.integration.fixtures.mongo import drop_database, new_database_name

    url: str = request.getfixturevalue("mongo_url")
    require_rs: bool = request.getfixturevalue("mongo_require_replica_set")
    name = new_database_name()

    @asynccontextmanager
    async def mongo_instance() -> AsyncIterator[Instance]:
        store = MongoStore.open(connect(url), name)
        try:
            await check_server(store, require_replica_set=require_rs)
            await init_indexes(store)
            yield Instance(
                MongoOneTimeTokenStore(store), MongoSessionStore(store), MongoFailureCounter(store)
            )
        finally:
            await store.close()

    try:
        yield mongo_instance
    finally:
        with contextlib.suppress(Exception):
            drop_database(url, name)


def _token(attempt_id: str) -> OneTimeToken:
    return OneTimeToken(
        attempt_id=attempt_id,
        purpose=EmailPurpose.LOGIN,
        email=f"{attempt_id}@example.com",
        user_id="u1",
        code_hash=fake_hash(f"code:{attempt_id}"),
        link_hash=fake_hash(f"link:{attempt_id}"),
        created_at=SUITE_START,
        expires_at=SUITE_START + timedelta(seconds=600),
    )


def _session(session_id: str) -> AuthSession:
    return AuthSession(
        id=session_id,
        user_id="u1",
        refresh_hash=fake_hash(f"refresh:{session_id}"),
        created_at=SUITE_START,
        last_used_at=SUITE_START,
        expires_at=SUITE_START + timedelta(days=30),
        method="password",
    )


async def test_a_restart_keeps_sessions_tokens_and_failures(opener: Opener) -> None:
    now = SUITE_START
    session, token = _session("s1"), _token("a1")
    async with opener() as before:
        await before.sessions.add(session)
        assert await before.sessions.rotate("s1", session.refresh_hash, fake_hash("r1"), now=now)
        await before.one_time.put(token)
        await before.failures.add_failure("ann@example.com", now=now, forget_after_s=3600)
    async with opener() as after:
        current = await after.sessions.find_by_refresh(fake_hash("r1"))
        assert current is not None and current.current and current.session.generation == 1
        replay = await after.sessions.find_by_refresh(session.refresh_hash)
        assert replay is not None and not replay.current
        assert await after.one_time.consume_code(
            "a1", token.code_hash, EmailPurpose.LOGIN, now=now, max_failures=5
        )
        record = await after.failures.get("ann@example.com", now=now, forget_after_s=3600)
        assert record is not None and record.count == 1


async def test_two_instances_share_one_winner(opener: Opener) -> None:
    now = SUITE_START
    session, token = _session("s1"), _token("a1")
    async with opener() as first, opener() as second:
        await first.sessions.add(session)
        await first.one_time.put(token)
        instances = [first, second] * 5
        rotations = await asyncio.gather(
            *(
                i.sessions.rotate("s1", session.refresh_hash, fake_hash(f"r{n}"), now=now)
                for n, i in enumerate(instances)
            )
        )
        consumes = await asyncio.gather(
            *(
                i.one_time.consume_code("a1", token.code_hash, EmailPurpose.LOGIN, now=now, max_failures=5)
                for i in instances
            )
        )
        failures = await asyncio.gather(
            *(i.failures.add_failure("ann@example.com", now=now, forget_after_s=3600) for i in instances)
        )
    assert sum(rotations) == 1
    assert sum(c is not None for c in consumes) == 1
    assert sorted(f.count for f in failures) == list(range(1, len(instances) + 1))
