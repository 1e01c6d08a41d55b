"""The database stopped, frozen and restarted under a running core (SECURITY.md R3, bounded).

Writes fail fast with StoreUnavailable (the API's 503), never hang, never ack what was not
stored, and succeed again on the same client once the server is back: no rebuild needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from adapters.mongo import MongoCore, MongoSetupError, mongo_core
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.messages import ListMessagesQuery, SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.domain.errors import Conflict
from chatcore.domain.events import MessagePosted
from chatcore.ports.errors import StoreUnavailable
from tests.integration.fixtures.mongo import *  # noqa: F403
from tests.integration.fixtures.mongo import MongoServerProcess

TEST_BUDGET_S = 30
TIMEOUT_MS = 1_500  # the operation budget these cores run with
FAIL_FAST_S = 5.0  # R3: an outage answers within 5 s


@pytest.fixture
async def core(mongo_server: MongoServerProcess) -> AsyncIterator[MongoCore]:
    async with mongo_core(
        mongo_server.url,
        database="outage",
        require_replica_set=False,
        server_selection_timeout_ms=1_000,
        timeout_ms=TIMEOUT_MS,
    ) as core:
        yield core


async def _timed_failure(core: MongoCore, cmd: SendMessageCommand) -> float:
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        await core.service.send_message(cmd)
    return time.perf_counter() - started


async def test_stopped_database_fails_fast_then_recovers_on_the_same_client(
    core: MongoCore, mongo_server: MongoServerProcess
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        service = core.service
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        await service.send_message(SendMessageCommand(actor=ann.id, chat_id=chat.id, body="before"))

        mongo_server.stop()
        for i in range(3):
            cmd = SendMessageCommand(actor=ann.id, chat_id=chat.id, body=f"lost {i}", client_msg_id=f"d{i}")
            assert await _timed_failure(core, cmd) < FAIL_FAST_S
        with pytest.raises(StoreUnavailable):
            await core.log.undispatched(10)

        mongo_server.start()
        restarted = time.perf_counter()
        after = SendMessageCommand(actor=ann.id, chat_id=chat.id, body="after", client_msg_id="a1")
        while True:
            try:
                result = await service.send_message(after)
                break
            except StoreUnavailable:
                assert time.perf_counter() - restarted < 10, "no recovery within 10 s"
                await asyncio.sleep(0.1)
        print(f"\nrecovered {time.perf_counter() - restarted:.2f}s after restart")

        assert result.message.seq == 2  # the failed sends consumed no seq
        page = await service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id))
        assert [(m.seq, m.body) for m in page.messages] == [(1, "before"), (2, "after")]
        posted = [r.event for r in await core.log.read(chat.id, after_seq=0, limit=50)]
        assert [e.seq for e in posted if isinstance(e, MessagePosted)] == [1, 2]


async def test_frozen_database_times_out_instead_of_hanging(
    core: MongoCore, mongo_server: MongoServerProcess
) -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        service = core.service
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        mongo_server.pause()
        try:
            cmd = SendMessageCommand(actor=ann.id, chat_id=chat.id, body="frozen", client_msg_id="f1")
            assert await _timed_failure(core, cmd) < FAIL_FAST_S
        finally:
            mongo_server.resume()
        result = await service.send_message(
            SendMessageCommand(actor=ann.id, chat_id=chat.id, body="thawed", client_msg_id="f2")
        )
        page = await service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id))
        # The frozen send may have landed after all (its reply was what timed out); if it did,
        # it holds its own seq once and nothing is doubled. It was never acknowledged.
        bodies = [m.body for m in page.messages]
        assert bodies in (["thawed"], ["frozen", "thawed"])
        assert result.message.seq == len(bodies)


async def test_writers_retrying_through_an_outage_lose_nothing_and_store_nothing_twice(
    core: MongoCore, mongo_server: MongoServerProcess
) -> None:
    """Four writers with client_msg_ids, retrying on 503/409, while the server stops and starts."""
    async with asyncio.timeout(TEST_BUDGET_S):
        service = core.service
        ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
        chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="t"))
        acked: dict[str, int] = {}
        failures: list[float] = []

        async def writer(w: int) -> None:
            for i in range(15):
                key = f"w{w}-{i}"
                cmd = SendMessageCommand(actor=ann.id, chat_id=chat.id, body=key, client_msg_id=key)
                while True:
                    started = time.perf_counter()
                    try:
                        acked[key] = (await service.send_message(cmd)).message.seq
                        break
                    except (StoreUnavailable, Conflict):
                        failures.append(time.perf_counter() - started)
                        await asyncio.sleep(0.05)

        async def outage() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(mongo_server.stop)
            await asyncio.sleep(1.5)
            await asyncio.to_thread(mongo_server.start)

        await asyncio.gather(*(writer(w) for w in range(4)), outage())
        print(
            f"\n{len(acked)} acked, {len(failures)} failed attempts, slowest {max(failures, default=0):.2f}s"
        )

        assert failures, "the outage should have been noticed"
        assert max(failures) < FAIL_FAST_S
        page = await service.list_messages(ListMessagesQuery(actor=ann.id, chat_id=chat.id, limit=100))
        stored = {m.body: m.seq for m in page.messages}
        assert stored == acked  # every ack stored, once, with the seq it was acked with
        assert [m.seq for m in page.messages] == list(range(1, len(acked) + 1))


async def test_unreachable_server_is_reported_fast_at_start() -> None:
    async with asyncio.timeout(TEST_BUDGET_S):
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            async with mongo_core(
                "mongodb://127.0.0.1:9/?directConnection=true",
                server_selection_timeout_ms=500,
                timeout_ms=1000,
            ):
                pass
        assert time.perf_counter() - started < FAIL_FAST_S


async def test_standalone_server_is_refused_unless_told_otherwise(mongo_server: MongoServerProcess) -> None:
    """mongoeco reports no replica set: production settings refuse it with a clear message."""
    async with asyncio.timeout(TEST_BUDGET_S):
        with pytest.raises(MongoSetupError, match="replica set"):
            async with mongo_core(mongo_server.url):
                pass
        async with mongo_core(mongo_server.url, require_replica_set=False) as core:
            assert core.server.replica_set is None and core.server.transactions_probed
