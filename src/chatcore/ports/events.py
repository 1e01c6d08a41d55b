"""The event bus: live delivery of committed events. A hint for waking readers, never the record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

from chatcore.domain.events import EventRecord


class Subscription(Protocol):
    def watch(self, stream_ids: Iterable[str]) -> None: ...
    def unwatch(self, stream_ids: Iterable[str]) -> None: ...
    def __aiter__(self) -> AsyncIterator[EventRecord]: ...
    async def close(self) -> None: ...


class EventBus(Protocol):
    async def publish(self, records: Sequence[EventRecord]) -> None: ...
    def subscribe(self, stream_ids: Iterable[str]) -> Subscription:
        """Receive records published after this call whose stream, or one of whose `event.wakes`,
        is watched."""
        ...
