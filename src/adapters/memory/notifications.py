"""Notification state in memory (DigestSchedule), and the memory event log as an EventFeed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from adapters.memory.store import MemoryStore
from chatcore.ports.notifications import FeedEntry, PendingDigest, SentMail


class _Claim(msgspec.Struct, kw_only=True):
    until: datetime | None  # None once finished
    done_at: datetime | None = None


class MemoryDigestSchedule:
    """Every method runs without awaiting, so each is atomic on the event loop."""

    def __init__(self) -> None:
        self.digests: dict[tuple[str, str], PendingDigest] = {}
        self.sent: list[SentMail] = []
        self.records: dict[str, _Claim] = {}
        self.positions: dict[str, int] = {}

    async def schedule(self, user_id: str, chat_id: str, *, seq: int, due_at: datetime) -> None:
        key = (user_id, chat_id)
        found = self.digests.get(key)
        if found is None:
            self.digests[key] = PendingDigest(
                user_id=user_id, chat_id=chat_id, first_seq=seq, last_seq=seq, due_at=due_at
            )
        else:
            self.digests[key] = msgspec.structs.replace(
                found, first_seq=min(found.first_seq, seq), last_seq=max(found.last_seq, seq)
            )

    async def cancel(self, user_id: str, chat_id: str, *, read_seq: int | None = None) -> None:
        key = (user_id, chat_id)
        found = self.digests.get(key)
        if found is None:
            return
        if read_seq is None or found.last_seq <= read_seq:
            del self.digests[key]
        elif found.first_seq <= read_seq:
            self.digests[key] = msgspec.structs.replace(found, first_seq=read_seq + 1)

    async def claim_due(self, now: datetime, *, lease_until: datetime, limit: int) -> list[PendingDigest]:
        due = sorted(
            (d for d in self.digests.values() if d.due_at <= now),
            key=lambda d: (d.due_at, d.user_id, d.chat_id),
        )[:limit]
        for digest in due:
            self.digests[(digest.user_id, digest.chat_id)] = msgspec.structs.replace(
                digest, due_at=lease_until
            )
        return due

    async def finish(self, digest: PendingDigest, *, next_due_at: datetime) -> None:
        key = (digest.user_id, digest.chat_id)
        found = self.digests.get(key)
        if found is None:
            return
        if found.last_seq <= digest.last_seq:
            del self.digests[key]
        else:
            self.digests[key] = msgspec.structs.replace(
                found, first_seq=max(found.first_seq, digest.last_seq + 1), due_at=next_due_at
            )

    async def postpone(self, user_id: str, chat_id: str, *, due_at: datetime) -> None:
        key = (user_id, chat_id)
        if key in self.digests:
            self.digests[key] = msgspec.structs.replace(self.digests[key], due_at=due_at)

    async def next_due(self) -> datetime | None:
        return min((d.due_at for d in self.digests.values()), default=None)

    async def record_sent(self, mail: SentMail) -> None:
        self.sent.append(mail)

    async def sent_since(self, user_id: str, kind: str, since: datetime) -> list[SentMail]:
        found = [m for m in self.sent if m.user_id == user_id and m.kind == kind and m.sent_at >= since]
        return sorted(found, key=lambda m: m.sent_at)

    async def claim_record(self, record_id: str, *, now: datetime, lease_until: datetime) -> bool:
        claim = self.records.get(record_id)
        if claim is not None and (claim.until is None or claim.until > now):
            return False
        self.records[record_id] = _Claim(until=lease_until)
        return True

    async def finish_record(self, record_id: str, *, now: datetime) -> None:
        self.records[record_id] = _Claim(until=None, done_at=now)

    async def release_record(self, record_id: str) -> None:
        claim = self.records.get(record_id)
        if claim is not None and claim.until is not None:
            del self.records[record_id]

    async def position(self, consumer: str) -> int | None:
        return self.positions.get(consumer)

    async def set_position(self, consumer: str, position: int) -> None:
        self.positions[consumer] = position

    async def purge(self, *, before: datetime) -> int:
        kept = [m for m in self.sent if m.sent_at >= before]
        old = [k for k, c in self.records.items() if c.done_at is not None and c.done_at < before]
        for key in old:
            del self.records[key]
        purged = len(self.sent) - len(kept) + len(old)
        self.sent = kept
        return purged


class MemoryEventFeed:
    """The memory log in commit order; a record's position is its place in the log, from 1."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def read_after(self, position: int, *, limit: int) -> Sequence[FeedEntry]:
        log = self._store.log
        start = max(0, position)
        return [FeedEntry(position=i + 1, record=log[i]) for i in range(start, min(len(log), start + limit))]

    async def head(self) -> int:
        return len(self._store.log)
