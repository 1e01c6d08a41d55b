"""One-time tokens, sessions and login failures in the SQLite database (schema 0002_security.sql).

Every change runs as one transaction through `SqliteDatabase.write`: in this process the
database lock makes them take turns, and `BEGIN IMMEDIATE` does the same across processes on
the file. So a read-compare-write inside one of them (a code check, a rotation) is atomic.
Reads go through the reader connection and see committed data only. Only hashes are stored;
times are integer microseconds since the epoch, so that SQL compares instants, not strings.
"""

from __future__ import annotations

import hmac
import sqlite3
from datetime import UTC, datetime, timedelta

from adapters.sqlite.database import SqliteDatabase
from chatcore.ports.security import (
    AuthSession,
    EmailPurpose,
    FailureRecord,
    OneTimeToken,
    RefreshMatch,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Row = tuple[object, ...]


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the auth stores take timezone-aware datetimes only")
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: object) -> datetime:
    assert isinstance(value, int)
    return _EPOCH + value * _MICROSECOND


def _optional_time(value: object) -> datetime | None:
    return None if value is None else from_micros(value)


def _optional_str(value: object) -> str | None:
    assert value is None or isinstance(value, str)
    return value


def _str(value: object) -> str:
    assert isinstance(value, str)
    return value


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


# -- one-time tokens ---------------------------------------------------------------------------

_ONE_TIME_COLUMNS = (
    "attempt_id, purpose, email, user_id, code_hash, link_hash, created_at, expires_at, "
    "failed_attempts, consumed_at"
)
_LIVE = "consumed_at IS NULL AND expires_at > :now AND failed_attempts < :max_failures"
# Built from the fixed texts above, never from input.
_INSERT_TOKEN = f"INSERT INTO one_time_tokens ({_ONE_TIME_COLUMNS}) VALUES ({', '.join('?' * 10)})"  # noqa: S608
_LIVE_CODE_HASH = (
    "SELECT code_hash FROM one_time_tokens "  # noqa: S608
    f"WHERE attempt_id = :attempt_id AND purpose = :purpose AND {_LIVE}"
)
_CONSUME_ATTEMPT = (
    "UPDATE one_time_tokens SET consumed_at = :now WHERE attempt_id = :attempt_id "  # noqa: S608
    f"RETURNING {_ONE_TIME_COLUMNS}"
)
# One statement: the live check and the consumption cannot be separated.
_CONSUME_LINK = (
    "UPDATE one_time_tokens SET consumed_at = :now "  # noqa: S608
    f"WHERE link_hash = :link_hash AND purpose = :purpose AND {_LIVE} "
    f"RETURNING {_ONE_TIME_COLUMNS}"
)


def _token(row: Row) -> OneTimeToken:
    return OneTimeToken(
        attempt_id=_str(row[0]),
        purpose=EmailPurpose(_str(row[1])),
        email=_str(row[2]),
        user_id=_str(row[3]),
        code_hash=_str(row[4]),
        link_hash=_str(row[5]),
        created_at=from_micros(row[6]),
        expires_at=from_micros(row[7]),
        failed_attempts=_int(row[8]),
        consumed_at=_optional_time(row[9]),
    )


class SqliteOneTimeTokenStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, token: OneTimeToken) -> None:
        row = (
            token.attempt_id,
            token.purpose.value,
            token.email,
            token.user_id,
            token.code_hash,
            token.link_hash,
            to_micros(token.created_at),
            to_micros(token.expires_at),
            token.failed_attempts,
            None if token.consumed_at is None else to_micros(token.consumed_at),
        )

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM one_time_tokens WHERE (email = ? AND purpose = ?) OR attempt_id = ?",
                (token.email, token.purpose.value, token.attempt_id),
            )
            conn.execute(_INSERT_TOKEN, row)

        await self._db.write(put)

    async def consume_code(
        self, attempt_id: str, code_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        params = {
            "attempt_id": attempt_id,
            "purpose": purpose.value,
            "now": to_micros(now),
            "max_failures": max_failures,
        }

        def consume(conn: sqlite3.Connection) -> OneTimeToken | None:
            found = conn.execute(
                _LIVE_CODE_HASH,
                params,
            ).fetchone()
            if found is None:
                return None
            if not hmac.compare_digest(_str(found[0]), code_hash):
                conn.execute(
                    "UPDATE one_time_tokens SET failed_attempts = failed_attempts + 1 "
                    "WHERE attempt_id = :attempt_id",
                    params,
                )
                return None
            row = conn.execute(
                _CONSUME_ATTEMPT,
                params,
            ).fetchone()
            return _token(row)

        return await self._db.write(consume)

    async def consume_link(
        self, link_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        params = {
            "link_hash": link_hash,
            "purpose": purpose.value,
            "now": to_micros(now),
            "max_failures": max_failures,
        }

        def consume(conn: sqlite3.Connection) -> OneTimeToken | None:
            row = conn.execute(
                _CONSUME_LINK,
                params,
            ).fetchone()
            return None if row is None else _token(row)

        return await self._db.write(consume)

    async def purge(self, *, now: datetime) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM one_time_tokens WHERE consumed_at IS NOT NULL OR expires_at <= ?",
                (to_micros(now),),
            )
            return cursor.rowcount

        return await self._db.write(purge)


# -- sessions ----------------------------------------------------------------------------------

_SESSION_COLUMNS = (
    "id, user_id, refresh_hash, created_at, last_used_at, expires_at, method, generation, ip, "
    "user_agent, revoked_at, revoked_reason"
)
_S_SESSION_COLUMNS = ", ".join(f"s.{c.strip()}" for c in _SESSION_COLUMNS.split(","))
_INSERT_SESSION = f"INSERT INTO auth_sessions ({_SESSION_COLUMNS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608
_SELECT_SESSION = f"SELECT {_SESSION_COLUMNS} FROM auth_sessions WHERE id = ?"  # noqa: S608
# One statement, one snapshot: a rotation cannot slip between the two lookups.
_FIND_BY_REFRESH = (
    f"SELECT {_SESSION_COLUMNS}, 1 FROM auth_sessions WHERE refresh_hash = :h "  # noqa: S608
    f"UNION ALL SELECT {_S_SESSION_COLUMNS}, 0 FROM auth_superseded_refresh AS r "
    "JOIN auth_sessions AS s ON s.id = r.session_id WHERE r.refresh_hash = :h LIMIT 1"
)
_LIST_ACTIVE = (
    f"SELECT {_SESSION_COLUMNS} FROM auth_sessions "  # noqa: S608
    "WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at, id"
)


def _session(row: Row) -> AuthSession:
    return AuthSession(
        id=_str(row[0]),
        user_id=_str(row[1]),
        refresh_hash=_str(row[2]),
        created_at=from_micros(row[3]),
        last_used_at=from_micros(row[4]),
        expires_at=from_micros(row[5]),
        method=_str(row[6]),
        generation=_int(row[7]),
        ip=_optional_str(row[8]),
        user_agent=_optional_str(row[9]),
        revoked_at=_optional_time(row[10]),
        revoked_reason=_optional_str(row[11]),
    )


class SqliteSessionStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, session: AuthSession) -> None:
        row = (
            session.id,
            session.user_id,
            session.refresh_hash,
            to_micros(session.created_at),
            to_micros(session.last_used_at),
            to_micros(session.expires_at),
            session.method,
            session.generation,
            session.ip,
            session.user_agent,
            None if session.revoked_at is None else to_micros(session.revoked_at),
            session.revoked_reason,
        )

        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                _INSERT_SESSION,
                row,
            )

        await self._db.write(add)

    async def get(self, session_id: str) -> AuthSession | None:
        def get(conn: sqlite3.Connection) -> Row | None:
            row: Row | None = conn.execute(
                _SELECT_SESSION,
                (session_id,),
            ).fetchone()
            return row

        row = await self._db.read(get)
        return None if row is None else _session(row)

    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        def find(conn: sqlite3.Connection) -> Row | None:
            row: Row | None = conn.execute(
                _FIND_BY_REFRESH,
                {"h": refresh_hash},
            ).fetchone()
            return row

        row = await self._db.read(find)
        if row is None:
            return None
        return RefreshMatch(session=_session(row[:-1]), current=bool(row[-1]))

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        def rotate(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE auth_sessions SET refresh_hash = ?, last_used_at = ?, generation = generation + 1 "
                "WHERE id = ? AND refresh_hash = ? AND revoked_at IS NULL",
                (new_hash, to_micros(now), session_id, old_hash),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute(
                "INSERT INTO auth_superseded_refresh (refresh_hash, session_id) VALUES (?, ?)",
                (old_hash, session_id),
            )
            return True

        return await self._db.write(rotate)

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        def revoke(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (to_micros(now), reason, session_id),
            )
            return cursor.rowcount == 1

        return await self._db.write(revoke)

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        def revoke_all(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? "
                "WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT ?",
                (to_micros(now), reason, user_id, keep),
            )
            return cursor.rowcount

        return await self._db.write(revoke_all)

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        def list_active(conn: sqlite3.Connection) -> list[Row]:
            rows: list[Row] = conn.execute(
                _LIST_ACTIVE,
                (user_id, to_micros(now)),
            ).fetchall()
            return rows

        return [_session(row) for row in await self._db.read(list_active)]

    async def purge(self, *, now: datetime) -> int:
        """Forget sessions past their absolute end, with every refresh hash they had."""

        def purge(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("DELETE FROM auth_sessions WHERE expires_at <= ?", (to_micros(now),))
            return cursor.rowcount

        return await self._db.write(purge)


# -- login failures ----------------------------------------------------------------------------


class SqliteFailureCounter:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def get(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord | None:
        cutoff = to_micros(now - timedelta(seconds=forget_after_s))

        def get(conn: sqlite3.Connection) -> Row | None:
            row: Row | None = conn.execute(
                "SELECT count, last_failure_at FROM login_failures WHERE key = ? AND last_failure_at > ?",
                (key, cutoff),
            ).fetchone()
            return row

        row = await self._db.read(get)
        return None if row is None else FailureRecord(count=_int(row[0]), last_failure_at=from_micros(row[1]))

    async def add_failure(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord:
        params = {
            "key": key,
            "now": to_micros(now),
            "cutoff": to_micros(now - timedelta(seconds=forget_after_s)),
        }

        def add(conn: sqlite3.Connection) -> Row:
            row: Row = conn.execute(
                "INSERT INTO login_failures (key, count, last_failure_at) VALUES (:key, 1, :now) "
                "ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN last_failure_at > :cutoff THEN count + 1 ELSE 1 END, "
                "last_failure_at = :now "
                "RETURNING count, last_failure_at",
                params,
            ).fetchone()
            return row

        row = await self._db.write(add)
        return FailureRecord(count=_int(row[0]), last_failure_at=from_micros(row[1]))

    async def clear(self, key: str) -> None:
        def clear(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))

        await self._db.write(clear)
