"""Notification state: pending missed-message digests, sends for throttling, handled records.

The notification worker is the only writer. Every method is one atomic step, so several
workers (processes) may share one store: a due digest is claimed with a lease before it is
mailed, and a record is claimed before it is handled, so neither is mailed twice at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from chatcore.domain.events import EventRecord


class PendingDigest(msgspec.Struct, frozen=True, kw_only=True):
    """Messages `first_seq..last_seq` of a chat that one user may have missed, mailed at `due_at`."""

    user_id: str
    chat_id: str
    first_seq: int
    last_seq: int
    due_at: datetime


class SentMail(msgspec.Struct, frozen=True, kw_only=True):
    """A notification mailed to a user: `kind` is a NotificationKind, `key` the chat or group."""

    user_id: str
    kind: str
    key: str
    sent_at: datetime


class DigestSchedule(Protocol):
    # -- pending digests, one per (user, chat) ------------------------------------------------

    async def schedule(self, user_id: str, chat_id: str, *, seq: int, due_at: datetime) -> None:
        """Add message `seq` to the (user, chat) digest, creating it due at `due_at` if there is none.

        An existing digest keeps its due time (the earliest message sets it) and widens its
        range to cover `seq`: however many messages arrive, there is one digest per chat.
        """
        ...

    async def cancel(self, user_id: str, chat_id: str, *, read_seq: int | None = None) -> None:
        """The user read up to `read_seq` (None: forget the chat's digest whatever it covers).

        A digest whose messages are all at or below `read_seq` is deleted; one that goes
        further keeps only the messages after `read_seq`.
        """
        ...

    async def claim_due(self, now: datetime, *, lease_until: datetime, limit: int) -> list[PendingDigest]:
        """Digests due at `now` (soonest first), each moved to `lease_until` so that no other
        worker takes it meanwhile; a worker that dies holding one sees it due again then."""
        ...

    async def finish(self, digest: PendingDigest, *, next_due_at: datetime) -> None:
        """Settle a claimed digest: the messages it covered are done.

        Messages scheduled after the claim (beyond `digest.last_seq`) stay pending, due at
        `next_due_at`; if there are none the digest is deleted.
        """
        ...

    async def postpone(self, user_id: str, chat_id: str, *, due_at: datetime) -> None:
        """Move a digest's due time (throttling); nothing if it no longer exists."""
        ...

    async def next_due(self) -> datetime | None:
        """The earliest due time of any digest, for the worker's timer."""
        ...

    # -- sends, for throttling ----------------------------------------------------------------

    async def record_sent(self, mail: SentMail) -> None: ...

    async def sent_since(self, user_id: str, kind: str, since: datetime) -> list[SentMail]:
        """The user's mails of `kind` sent at or after `since`, oldest first."""
        ...

    # -- records handled, so that a record delivered twice is handled once ----------------------

    async def claim_record(self, record_id: str, *, now: datetime, lease_until: datetime) -> bool:
        """True if this caller may handle the record now: it was never finished, and nobody
        holds an unexpired claim on it. The claim lasts until `lease_until`."""
        ...

    async def finish_record(self, record_id: str, *, now: datetime) -> None:
        """The record was handled: every later claim of it is refused."""
        ...

    async def release_record(self, record_id: str) -> None:
        """Give a claim up (the handler failed): the next delivery handles the record again."""
        ...

    # -- the embedded consumer's position in the event feed --------------------------------------

    async def position(self, consumer: str) -> int | None:
        """How far `consumer` has read the feed; None for a consumer never seen."""
        ...

    async def set_position(self, consumer: str, position: int) -> None: ...

    async def purge(self, *, before: datetime) -> int:
        """Forget sends and finished records older than `before`; how many rows went."""
        ...


class FeedEntry(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    record: EventRecord


class EventFeed(Protocol):
    """Every committed record of every stream, in commit order: what the embedded worker reads.

    The event log's reads are per stream and cannot tell a worker about streams it never
    heard of; the feed numbers all records with one growing position instead.
    """

    async def read_after(self, position: int, *, limit: int) -> Sequence[FeedEntry]:
        """Up to `limit` records committed after `position`, oldest first."""
        ...

    async def head(self) -> int:
        """The position of the newest committed record (0 when there is none)."""
        ...
