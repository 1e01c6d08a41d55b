"""Notification state in the SQLite database (schema 0003_notifications.sql), and the event
table as an EventFeed (its `pos` column numbers records in commit order, writers taking turns).

Every change is one transaction through `SqliteDatabase.write` (`BEGIN IMMEDIATE`), so a
read-compare-write such as claiming a record or the due digests is atomic, across processes too.
Bookkeeping that only repeats work if lost (positions) skips the fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from adapters.sqlite.database import SqliteDatabase
from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.ports.notifications import FeedEntry, PendingDigest, SentMail

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_events: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the notification store takes timezone-aware datetimes only")
    return (moment - _EPOCH) // _MICROSECOND


def _time(value: object) -> datetime:
    assert isinstance(value, int)
    return _EPOCH + value * _MICROSECOND


def _digest(row: tuple[str, str, int, int, int]) -> PendingDigest:
    user_id, chat_id, first_seq, last_seq, due_at = row
    return PendingDigest(
        user_id=user_id, chat_id=chat_id, first_seq=first_seq, last_seq=last_seq, due_at=_time(due_at)
    )


_DIGEST_COLUMNS = "user_id, chat_id, first_seq, last_seq, due_at"


class SqliteDigestSchedule:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def schedule(self, user_id: str, chat_id: str, *, seq: int, due_at: datetime) -> None:
        params = (user_id, chat_id, seq, seq, _micros(due_at))
        await self._db.write(
            lambda c: c.execute(
                f"INSERT INTO notification_digests ({_DIGEST_COLUMNS}) VALUES (?, ?, ?, ?, ?) "  # noqa: S608
                "ON CONFLICT (user_id, chat_id) DO UPDATE SET "
                "first_seq = min(first_seq, excluded.first_seq), last_seq = max(last_seq, excluded.last_seq)",
                params,
            )
        )

    async def cancel(self, user_id: str, chat_id: str, *, read_seq: int | None = None) -> None:
        def cancel(conn: sqlite3.Connection) -> None:
            key = (user_id, chat_id)
            if read_seq is None:
                conn.execute("DELETE FROM notification_digests WHERE user_id = ? AND chat_id = ?", key)
                return
            conn.execute(
                "DELETE FROM notification_digests WHERE user_id = ? AND chat_id = ? AND last_seq <= ?",
                (*key, read_seq),
            )
            conn.execute(
                "UPDATE notification_digests SET first_seq = ? + 1 "
                "WHERE user_id = ? AND chat_id = ? AND first_seq <= ?",
                (read_seq, *key, read_seq),
            )

        await self._db.write(cancel)

    async def claim_due(self, now: datetime, *, lease_until: datetime, limit: int) -> list[PendingDigest]:
        def claim(conn: sqlite3.Connection) -> list[PendingDigest]:
            rows = conn.execute(
                f"SELECT {_DIGEST_COLUMNS} FROM notification_digests "  # noqa: S608 (fixed text)
                "WHERE due_at <= ? ORDER BY due_at, user_id, chat_id LIMIT ?",
                (_micros(now), limit),
            ).fetchall()
            conn.executemany(
                "UPDATE notification_digests SET due_at = ? WHERE user_id = ? AND chat_id = ?",
                [(_micros(lease_until), row[0], row[1]) for row in rows],
            )
            return [_digest(row) for row in rows]

        return await self._db.write(claim)

    async def finish(self, digest: PendingDigest, *, next_due_at: datetime) -> None:
        def finish(conn: sqlite3.Connection) -> None:
            key = (digest.user_id, digest.chat_id)
            conn.execute(
                "DELETE FROM notification_digests WHERE user_id = ? AND chat_id = ? AND last_seq <= ?",
                (*key, digest.last_seq),
            )
            conn.execute(
                "UPDATE notification_digests SET first_seq = max(first_seq, ?), due_at = ? "
                "WHERE user_id = ? AND chat_id = ?",
                (digest.last_seq + 1, _micros(next_due_at), *key),
            )

        await self._db.write(finish)

    async def postpone(self, user_id: str, chat_id: str, *, due_at: datetime) -> None:
        await self._db.write(
            lambda c: c.execute(
                "UPDATE notification_digests SET due_at = ? WHERE user_id = ? AND chat_id = ?",
                (_micros(due_at), user_id, chat_id),
            )
        )

    async def next_due(self) -> datetime | None:
        row = await self._db.read(
            lambda c: c.execute("SELECT min(due_at) FROM notification_digests").fetchone()
        )
        return None if row is None or row[0] is None else _time(row[0])

    async def record_sent(self, mail: SentMail) -> None:
        params = (mail.user_id, mail.kind, mail.key, _micros(mail.sent_at))
        await self._db.write(
            lambda c: c.execute(
                "INSERT INTO notification_sends (user_id, kind, key, sent_at) VALUES (?, ?, ?, ?)", params
            )
        )

    async def sent_since(self, user_id: str, kind: str, since: datetime) -> list[SentMail]:
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT key, sent_at FROM notification_sends "
                "WHERE user_id = ? AND kind = ? AND sent_at >= ? ORDER BY sent_at",
                (user_id, kind, _micros(since)),
            ).fetchall()
        )
        return [SentMail(user_id=user_id, kind=kind, key=key, sent_at=_time(at)) for key, at in rows]

    async def claim_record(self, record_id: str, *, now: datetime, lease_until: datetime) -> bool:
        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO notification_records (record_id, claimed_until) VALUES (?, ?) "
                "ON CONFLICT (record_id) DO UPDATE SET claimed_until = excluded.claimed_until "
                "WHERE claimed_until IS NOT NULL AND claimed_until <= ?",
                (record_id, _micros(lease_until), _micros(now)),
            )
            return cursor.rowcount == 1

        return await self._db.write(claim)

    async def finish_record(self, record_id: str, *, now: datetime) -> None:
        await self._db.write(
            lambda c: c.execute(
                "INSERT INTO notification_records (record_id, claimed_until, done_at) VALUES (?, NULL, ?) "
                "ON CONFLICT (record_id) DO UPDATE SET claimed_until = NULL, done_at = excluded.done_at",
                (record_id, _micros(now)),
            )
        )

    async def release_record(self, record_id: str) -> None:
        await self._db.write(
            lambda c: c.execute(
                "DELETE FROM notification_records WHERE record_id = ? AND claimed_until IS NOT NULL",
                (record_id,),
            )
        )

    async def position(self, consumer: str) -> int | None:
        row = await self._db.read(
            lambda c: c.execute(
                "SELECT position FROM notification_positions WHERE consumer = ?", (consumer,)
            ).fetchone()
        )
        return None if row is None else int(row[0])

    async def set_position(self, consumer: str, position: int) -> None:
        # Not fsynced: a position lost to a power cut only re-reads records the handler skips.
        await self._db.write(
            lambda c: c.execute(
                "INSERT INTO notification_positions (consumer, position) VALUES (?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
                (consumer, position),
            ),
            durable=False,
        )

    async def purge(self, *, before: datetime) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            cutoff = _micros(before)
            sends = conn.execute("DELETE FROM notification_sends WHERE sent_at < ?", (cutoff,)).rowcount
            records = conn.execute(
                "DELETE FROM notification_records WHERE done_at IS NOT NULL AND done_at < ?", (cutoff,)
            ).rowcount
            return int(sends) + int(records)

        return await self._db.write(purge)


class SqliteEventFeed:
    """The events table by `pos`: commit order, since writers take turns (`BEGIN IMMEDIATE`)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def read_after(self, position: int, *, limit: int) -> Sequence[FeedEntry]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            lambda c: c.execute(
                "SELECT pos, id, stream_id, seq, occurred_at, data FROM events "
                "WHERE pos > ? ORDER BY pos LIMIT ?",
                (position, limit),
            ).fetchall()
        )
        return [
            FeedEntry(
                position=pos,
                record=EventRecord(
                    id=event_id,
                    stream_id=stream_id,
                    seq=seq,
                    occurred_at=datetime.fromisoformat(occurred_at),
                    event=_events.decode(data),
                ),
            )
            for pos, event_id, stream_id, seq, occurred_at, data in rows
        ]

    async def head(self) -> int:
        row = await self._db.read(lambda c: c.execute("SELECT coalesce(max(pos), 0) FROM events").fetchone())
        return int(row[0])
