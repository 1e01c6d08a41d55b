"""The event bus: live delivery of committed events. A hint for waking readers, never the record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Final, Protocol

import msgspec

from chatcore.domain.events import EventRecord


class BusGap:
    """Yielded by a subscription when records may have been lost (a full queue, a broker
    reconnect): the reader catches up from the log, which holds everything."""

    def __repr__(self) -> str:
        return "GAP"


GAP: Final = BusGap()


class Signal(msgspec.Struct, frozen=True):
    """An ephemeral notice on a stream (typing): delivered live to its watchers, or not at all.

    Never written to the log and never replayed; a full queue drops it without a gap."""

    stream_id: str
    payload: bytes


class Subscription(Protocol):
    def watch(self, stream_ids: Iterable[str]) -> None: ...
    def unwatch(self, stream_ids: Iterable[str]) -> None: ...
    async def ready(self) -> None:
        """Return once a record published now, by any instance, would reach this subscription."""
        ...

    def __aiter__(self) -> AsyncIterator[EventRecord | BusGap | Signal]: ...
    def listen(self, on_item: Callable[[EventRecord | BusGap | Signal | None], None]) -> None:
        """Instead of queueing items for iteration, hand each to `on_item` as it arrives, on the
        event loop's thread (None: the bus closed); items queued before are handed over first.
        It lets one delivery reach a socket without waking a task per subscriber."""
        ...

    async def close(self) -> None: ...


class EventBus(Protocol):
    async def publish(self, records: Sequence[EventRecord]) -> None: ...
    def subscribe(self, stream_ids: Iterable[str]) -> Subscription:
        """Receive records published after this call whose stream, or one of whose `event.wakes`,
        is watched."""
        ...

    async def signal(self, stream_id: str, payload: bytes) -> None:
        """Offer an ephemeral `Signal` to the current watchers of `stream_id`, best effort."""
        ...
