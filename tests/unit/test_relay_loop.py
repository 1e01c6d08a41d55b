"""The process's outbox relay loop: who publishes a commit's records, and when."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from adapters.memory.bus import MemoryEventBus
from adapters.memory.kit import MemoryCore, memory_core
from chatcore.application.chats import CreateGroupChatCommand
from chatcore.application.messages import SendMessageCommand
from chatcore.application.profiles import CreateUserCommand
from chatcore.application.service import ChatService
from chatcore.domain.events import EventRecord, MessagePosted
from entrypoints.container import RelayLoop


class CountingBus(MemoryEventBus):
    """The in-process bus, remembering the size of each publish."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def publish(self, records: Sequence[EventRecord]) -> None:
        self.batches.append(len(records))
        await super().publish(records)


async def _service_over(loop: RelayLoop, core: MemoryCore) -> tuple[ChatService, str, str]:
    service = ChatService(dataclasses.replace(core.service.deps, committed=loop.after_commit))
    ann = await service.create_user(CreateUserCommand(email="ann@example.com", display_name="Ann"))
    chat = await service.create_group_chat(CreateGroupChatCommand(actor=ann.id, title="c", member_ids=[]))
    return service, ann.id, chat.id


async def test_without_the_sweep_a_commit_publishes_before_it_returns() -> None:
    bus = CountingBus()
    core = memory_core(bus=bus)
    loop = RelayLoop(core.relay)
    service, ann, chat = await _service_over(loop, core)
    await service.send_message(SendMessageCommand(actor=ann, chat_id=chat, body="now"))
    assert await core.log.undispatched(10) == []
    assert loop.published >= 1


async def test_with_the_sweep_running_commits_wake_it_and_go_out_in_order_in_few_passes() -> None:
    bus = CountingBus()
    core = memory_core(bus=bus)
    loop = RelayLoop(core.relay, interval_s=60)  # only commits wake it within this test
    service, ann, chat = await _service_over(loop, core)
    stop = asyncio.Event()
    sweeping = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0)  # the loop starts and sweeps what the setup left
    async with asyncio.timeout(2):
        while await core.log.undispatched(10):  # noqa: ASYNC110 (polls the log, not an event)
            await asyncio.sleep(0.001)
    subscription = bus.subscribe([chat])
    bus.batches.clear()
    try:
        await service.send_message(SendMessageCommand(actor=ann, chat_id=chat, body="first"))
        # The request did not wait for the broker: the record is still pending when it returns.
        assert len(await core.log.undispatched(10)) == 1
        sends = [SendMessageCommand(actor=ann, chat_id=chat, body=f"m{i}") for i in range(20)]
        await asyncio.gather(*(service.send_message(cmd) for cmd in sends))
        async with asyncio.timeout(2):
            received = [await anext(aiter(subscription)) for _ in range(21)]
    finally:
        stop.set()
        await asyncio.wait_for(sweeping, 2)
        await subscription.close()
    seqs = [r.seq for r in received if isinstance(r, EventRecord) and isinstance(r.event, MessagePosted)]
    assert seqs == sorted(seqs) and len(seqs) == 21 and len(set(seqs)) == 21
    assert sum(bus.batches) == 21
    assert len(bus.batches) < 21, bus.batches  # commits arriving together share a pass
    assert await core.log.undispatched(10) == []
