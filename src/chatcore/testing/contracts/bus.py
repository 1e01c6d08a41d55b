"""The event bus contract: subscribers get the published records of the streams they watch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from chatcore.domain.events import ChatMemberAdded, EventRecord, ProfileUpdated
from chatcore.ports.events import EventBus, Signal, Subscription

# Generous liveness bound for a networked bus; a correct in-process bus answers at once.
DELIVERY_TIMEOUT_S = 5.0


def record(stream_id: str, seq: int) -> EventRecord:
    return EventRecord(
        id=f"{stream_id}-{seq}",
        stream_id=stream_id,
        seq=seq,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        event=ProfileUpdated(user_id=stream_id, display_name=f"n{seq}", bio=""),
    )


async def take(sub: Subscription, count: int) -> list[EventRecord]:
    got: list[EventRecord] = []

    async def collect() -> None:
        async for r in sub:
            if not isinstance(r, EventRecord):
                continue  # a gap says "read the log"; this suite looks at records only
            got.append(r)
            if len(got) == count:
                return

    await asyncio.wait_for(collect(), DELIVERY_TIMEOUT_S)
    return got


class EventBusContract:
    """Provide a `bus` fixture yielding a fresh EventBus."""

    async def test_subscriber_receives_watched_streams_in_order(self, bus: EventBus) -> None:
        sub = bus.subscribe(["s1"])
        await sub.ready()
        await bus.publish([record("s1", 1), record("other", 1), record("s1", 2)])
        assert [(r.stream_id, r.seq) for r in await take(sub, 2)] == [("s1", 1), ("s1", 2)]
        await sub.close()

    async def test_watch_and_unwatch_change_what_arrives(self, bus: EventBus) -> None:
        sub = bus.subscribe([])
        sub.watch(["s2"])
        await bus.publish([record("s2", 1)])
        assert [r.id for r in await take(sub, 1)] == ["s2-1"]
        sub.unwatch(["s2"])
        sub.watch(["s3"])
        await bus.publish([record("s2", 2), record("s3", 1)])
        assert [r.id for r in await take(sub, 1)] == ["s3-1"]
        await sub.close()

    async def test_a_record_reaches_the_users_it_wakes(self, bus: EventBus) -> None:
        added = EventRecord(
            id="c9-1",
            stream_id="c9",
            seq=1,
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            event=ChatMemberAdded(chat_id="c9", user_id="u7", by="u1"),
        )
        sub = bus.subscribe(["u7"])
        await bus.publish([record("c8", 1), added])
        assert [r.id for r in await take(sub, 1)] == ["c9-1"]
        await sub.close()

    async def test_every_subscriber_gets_each_record(self, bus: EventBus) -> None:
        subs = [bus.subscribe(["s"]) for _ in range(3)]
        await bus.publish([record("s", 1)])
        for sub in subs:
            assert [r.id for r in await take(sub, 1)] == ["s-1"]
            await sub.close()

    async def test_a_signal_reaches_the_streams_watchers_only_and_is_no_record(self, bus: EventBus) -> None:
        watching, other = bus.subscribe(["s"]), bus.subscribe(["t"])
        await watching.ready()
        await other.ready()
        await bus.signal("s", b"typing")
        await bus.publish([record("s", 1), record("t", 1)])

        async def first_two(sub: Subscription) -> list[object]:
            items: list[object] = []
            async for item in sub:
                items.append(item)
                if len(items) == 2 or (sub is other and items):
                    return items
            return items

        got = await asyncio.wait_for(first_two(watching), DELIVERY_TIMEOUT_S)
        assert got[0] == Signal("s", b"typing")
        assert isinstance(got[1], EventRecord) and got[1].id == "s-1"
        seen = await asyncio.wait_for(first_two(other), DELIVERY_TIMEOUT_S)
        assert [getattr(i, "id", i) for i in seen] == ["t-1"]  # no signal on a stream not watched
        await watching.close()
        await other.close()

    async def test_closing_ends_the_iteration(self, bus: EventBus) -> None:
        sub = bus.subscribe(["s"])
        await sub.close()
        received = [r async for r in sub]
        assert received == []
