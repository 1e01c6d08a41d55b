"""Concurrent writers on MongoDB: seqs stay 1..n with no gap and no duplicate.

Each writer is a separate client (its own AsyncMongoClient, connection pool, in-process locks
and ChatService), as separate server processes would be; only the database is shared.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from adapters.mongo import MongoCore, mongo_core
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.messages import ListMessagesQuery, SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.views import SendResult
from chatcore.domain.errors import Conflict
from chatcore.domain.events import MessagePosted
from chatcore.ports.errors import ConcurrentUpdate
from tests.integration.fixtures.mongo import *  # noqa: F403

WRITERS = 50
TEST_BUDGET_S = 60


@pytest.fixture
async def cores(
    mongo_url: str, mongo_database: str, mongo_require_replica_set: bool
) -> AsyncIterator[list[MongoCore]]:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            mongo_core(mongo_url, database=mongo_database, require_replica_set=mongo_require_replica_set)
        )
        others = await asyncio.gather(
            *(
                stack.enter_async_context(
                    mongo_core(
                        mongo_url,
                        database=mongo_database,
                        require_replica_set=mongo_require_replica_set,
                        create_indexes=False,
                    )
                )
                for _ in range(WRITERS - 1)
            )
        )
        yield [first, *others]


async def _send_until_acked(core: MongoCore, cmd: SendMessageCommand, conflicts: Counter[str]) -> SendResult:
    """A client's retry loop: a lost race surfaces as Conflict (409); the client_msg_id makes it safe."""
    for attempt in range(100):
        try:
            return await core.service.send_message(cmd)
        except Conflict:
            conflicts["409"] += 1
            await asyncio.sleep(random.uniform(0, 0.02 * 2 ** min(attempt, 5)))  # backoff with jitter
    raise AssertionError("never acked")


async def test_fifty_concurrent_sends_from_separate_clients_get_seqs_one_to_fifty(
    cores: list[MongoCore],
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        owner = cores[0].service
        ann = await owner.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await owner.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="busy"))
        conflicts: Counter[str] = Counter()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                _send_until_acked(
                    core,
                    SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}", client_msg_id=f"k{i}"),
                    conflicts,
                )
                for i, core in enumerate(cores)
            )
        )
        elapsed = time.perf_counter() - started
        print(f"\n{WRITERS} sends from {WRITERS} clients: {elapsed:.2f}s, {conflicts['409']} client retries")

        assert sorted(r.message.seq for r in results) == list(range(1, WRITERS + 1))
        assert all(r.created for r in results)
        by_key = {r.message.client_msg_id: r.message.body for r in results}
        assert by_key == {f"k{i}": f"m{i}" for i in range(WRITERS)}

        page = await owner.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id, limit=100))
        assert [m.seq for m in page.messages] == list(range(1, WRITERS + 1))
        assert (await owner.get_chat(ann.id, chat.id)).last_seq == WRITERS
        log = cores[0].log
        posted = [r.event for r in await log.read(chat.id, after_seq=0, limit=500)]
        posted_seqs = [e.seq for e in posted if isinstance(e, MessagePosted)]
        assert posted_seqs == list(range(1, WRITERS + 1))  # one event per message, in seq order
        records = await log.read(chat.id, after_seq=0, limit=500)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))  # the stream is gapless too


async def test_concurrent_sends_in_one_process_queue_instead_of_failing(cores: list[MongoCore]) -> None:
    """Units of one process that want the same chat wait for each other: no 409 for them."""
    async with asyncio.timeout(TEST_BUDGET_S):
        service = cores[0].service
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="busy"))
        results = await asyncio.gather(
            *(
                service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"m{i}"))
                for i in range(WRITERS)
            )
        )
        assert sorted(r.message.seq for r in results) == list(range(1, WRITERS + 1))


async def test_the_same_client_msg_id_from_many_clients_is_stored_once(cores: list[MongoCore]) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        owner = cores[0].service
        ann = await owner.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await owner.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="retries"))
        send = SendMessageCommand(actor=ann.id, chat_id=chat.id, body="once", client_msg_id="same")
        conflicts: Counter[str] = Counter()
        results = await asyncio.gather(*(_send_until_acked(core, send, conflicts) for core in cores[:20]))
        assert {r.message.id for r in results} == {results[0].message.id}
        assert sum(r.created for r in results) == 1
        assert (await owner.get_chat(ann.id, chat.id)).last_seq == 1
        events = await cores[0].log.read(chat.id, after_seq=0, limit=100)
        assert sum(isinstance(r.event, MessagePosted) for r in events) == 1


async def test_stale_chat_write_from_another_client_loses_the_race(cores: list[MongoCore]) -> None:
    """Two units read the same last_seq; the second commit is refused and writes nothing."""
    async with asyncio.timeout(TEST_BUDGET_S):
        service = cores[0].service
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat_view = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="race"))
        a, b = (core.service.deps.uow() for core in cores[:2])
        async with a, b:
            chat_a, chat_b = await a.chats.get(chat_view.id), await b.chats.get(chat_view.id)
            assert chat_a is not None and chat_b is not None
            chat_a.next_seq()
            chat_b.next_seq()
            await a.chats.save(chat_a)
            await a.commit()
            with pytest.raises(ConcurrentUpdate):
                await b.chats.save(chat_b)
                await b.commit()
        assert (await service.get_chat(ann.id, chat_view.id)).last_seq == 1
