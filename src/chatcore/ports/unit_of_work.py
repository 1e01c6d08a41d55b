"""The unit of work: one transaction that writes the change and its events together (the outbox)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self

from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.ports.repositories import (
    ChatRepository,
    CredentialRepository,
    GroupRepository,
    MessageRepository,
    ReadMarkerRepository,
    UserRepository,
)


class UnitOfWork(Protocol):
    # Read-only, so that an adapter's own repository types satisfy the protocol.
    @property
    def users(self) -> UserRepository: ...
    @property
    def credentials(self) -> CredentialRepository: ...
    @property
    def groups(self) -> GroupRepository: ...
    @property
    def chats(self) -> ChatRepository: ...
    @property
    def messages(self) -> MessageRepository: ...
    @property
    def read_markers(self) -> ReadMarkerRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Roll back whatever was not committed."""
        ...

    def record(self, event: AnyEvent) -> None:
        """Queue an event to be written with this unit of work's changes."""
        ...

    async def commit(self) -> list[EventRecord]:
        """Write every change and every recorded event atomically; events get their stream seqs here.

        Raises ConcurrentUpdate when another commit changed what this one read, and
        DuplicateKey when a unique key is taken; in both cases nothing is written.
        """
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class EventLog(Protocol):
    """The durable log of committed events, read outside any unit of work."""

    async def read(self, stream_id: str, *, after_seq: int, limit: int) -> list[EventRecord]: ...
    async def read_back(self, stream_id: str, *, before_seq: int, limit: int) -> list[EventRecord]:
        """Records of the stream below `before_seq`, newest first."""
        ...

    async def last_seq(self, stream_id: str) -> int: ...
    async def undispatched(self, limit: int) -> list[EventRecord]:
        """Committed events the relay has not yet published, oldest first."""
        ...

    async def mark_dispatched(self, event_ids: Sequence[str]) -> None: ...
