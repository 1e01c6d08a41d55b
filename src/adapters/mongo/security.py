"""One-time tokens, sessions and login failures in MongoDB; every check-and-change is one atomic update.

No transactions: each step that must be atomic touches one document (`find_one_and_update`
with the whole condition in its filter), so any number of processes may race on it.

- `one_time_tokens`: `_id` is the attempt id; unique on `link_hash` and on (email, purpose), so
  there is at most one token per address and purpose. TTL on `expires_at`.
- `auth_sessions`: `_id` is the session id; unique on the current `refresh_hash`. TTL on
  `expires_at` (the family's absolute end).
- `auth_superseded_refresh`: `_id` is a rotated-away refresh hash, with its session id and that
  session's `expires_at` (TTL), so a replay is recognised until the family ends. A rotation writes
  this record *before* it swaps the hash, so a lookup never finds a hash in neither place.
- `login_failures`: `_id` is the key; TTL on `expires_at` (last failure + the forget window).

TTL deletion runs on the server's clock about once a minute, so every read still checks times
against the `now` it is given. Only hashes are stored. BSON dates keep milliseconds.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from adapters.mongo.database import MongoStore, ttl_index
from adapters.mongo.documents import to_millis
from adapters.mongo.errors import translated
from chatcore.ports.errors import ConcurrentUpdate
from chatcore.ports.security import (
    AuthSession,
    EmailPurpose,
    FailureRecord,
    OneTimeToken,
    RefreshMatch,
)

Doc = dict[str, Any]

TOKENS = "one_time_tokens"
SESSIONS = "auth_sessions"
SUPERSEDED = "auth_superseded_refresh"
FAILURES = "login_failures"

SECURITY_INDEXES: dict[str, list[IndexModel]] = {
    TOKENS: [
        IndexModel([("link_hash", ASCENDING)], name="tokens_link_hash", unique=True),
        IndexModel([("email", ASCENDING), ("purpose", ASCENDING)], name="tokens_email_purpose", unique=True),
        ttl_index("expires_at", name="tokens_ttl"),
    ],
    SESSIONS: [
        IndexModel([("refresh_hash", ASCENDING)], name="sessions_refresh_hash", unique=True),
        IndexModel(
            [("user_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)], name="sessions_user"
        ),
        ttl_index("expires_at", name="sessions_ttl"),
    ],
    SUPERSEDED: [
        IndexModel([("session_id", ASCENDING)], name="superseded_session"),
        ttl_index("expires_at", name="superseded_ttl"),
    ],
    FAILURES: [ttl_index("expires_at", name="failures_ttl")],
}

_PUT_ATTEMPTS = 10
_COUNT_ATTEMPTS = 10


async def init_security_indexes(store: MongoStore) -> dict[str, list[str]]:
    """Create the auth stores' indexes, TTL ones included (idempotent); names per collection."""
    created: dict[str, list[str]] = {}
    with translated():
        for collection, models in SECURITY_INDEXES.items():
            created[collection] = await store[collection].create_indexes(models)
    return created


def _utc(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_or_none(value: Any) -> datetime | None:
    return None if value is None else _utc(value)


def _live(now: datetime, max_failures: int) -> Doc:
    return {"consumed_at": None, "expires_at": {"$gt": now}, "failed_attempts": {"$lt": max_failures}}


# -- one-time tokens ---------------------------------------------------------------------------


def _token_doc(token: OneTimeToken) -> Doc:
    return {
        "_id": token.attempt_id,
        "purpose": token.purpose.value,
        "email": token.email,
        "user_id": token.user_id,
        "code_hash": token.code_hash,
        "link_hash": token.link_hash,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "failed_attempts": token.failed_attempts,
        "consumed_at": token.consumed_at,
    }


def _token(doc: Doc) -> OneTimeToken:
    return OneTimeToken(
        attempt_id=doc["_id"],
        purpose=EmailPurpose(doc["purpose"]),
        email=doc["email"],
        user_id=doc["user_id"],
        code_hash=doc["code_hash"],
        link_hash=doc["link_hash"],
        created_at=_utc(doc["created_at"]),
        expires_at=_utc(doc["expires_at"]),
        failed_attempts=int(doc["failed_attempts"]),
        consumed_at=_utc_or_none(doc.get("consumed_at")),
    )


class MongoOneTimeTokenStore:
    def __init__(self, store: MongoStore) -> None:
        self._tokens: AsyncCollection[Doc] = store[TOKENS]

    async def put(self, token: OneTimeToken) -> None:
        doc = _token_doc(token)
        older = {"$or": [{"email": token.email, "purpose": token.purpose.value}, {"_id": token.attempt_id}]}
        with translated():
            for _ in range(_PUT_ATTEMPTS):
                await self._tokens.delete_many(older)
                try:
                    await self._tokens.insert_one(doc)
                    return
                except DuplicateKeyError:
                    continue  # a concurrent request for the same address got in between: void it too
        raise ConcurrentUpdate("the one-time token kept colliding with concurrent requests")

    async def consume_code(
        self, attempt_id: str, code_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        live = {"_id": attempt_id, "purpose": purpose.value, **_live(now, max_failures)}
        with translated():
            # The code is part of the filter: of concurrent right guesses, one update matches.
            doc = await self._tokens.find_one_and_update(
                {**live, "code_hash": code_hash},
                {"$set": {"consumed_at": now}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return _token(doc)
            # A wrong code counts only against a live token; a right one that just lost does not.
            await self._tokens.update_one(
                {**live, "code_hash": {"$ne": code_hash}}, {"$inc": {"failed_attempts": 1}}
            )
        return None

    async def consume_link(
        self, link_hash: str, purpose: EmailPurpose, *, now: datetime, max_failures: int
    ) -> OneTimeToken | None:
        with translated():
            doc = await self._tokens.find_one_and_update(
                {"link_hash": link_hash, "purpose": purpose.value, **_live(now, max_failures)},
                {"$set": {"consumed_at": now}},
                return_document=ReturnDocument.AFTER,
            )
        return None if doc is None else _token(doc)

    async def purge(self, *, now: datetime) -> int:
        with translated():
            result = await self._tokens.delete_many(
                {"$or": [{"consumed_at": {"$ne": None}}, {"expires_at": {"$lte": now}}]}
            )
        return result.deleted_count


# -- sessions ----------------------------------------------------------------------------------


def _session_doc(session: AuthSession) -> Doc:
    return {
        "_id": session.id,
        "user_id": session.user_id,
        "refresh_hash": session.refresh_hash,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "method": session.method,
        "generation": session.generation,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "revoked_at": session.revoked_at,
        "revoked_reason": session.revoked_reason,
    }


def _session(doc: Doc) -> AuthSession:
    return AuthSession(
        id=doc["_id"],
        user_id=doc["user_id"],
        refresh_hash=doc["refresh_hash"],
        created_at=_utc(doc["created_at"]),
        last_used_at=_utc(doc["last_used_at"]),
        expires_at=_utc(doc["expires_at"]),
        method=doc["method"],
        generation=int(doc["generation"]),
        ip=doc.get("ip"),
        user_agent=doc.get("user_agent"),
        revoked_at=_utc_or_none(doc.get("revoked_at")),
        revoked_reason=doc.get("revoked_reason"),
    )


class MongoSessionStore:
    def __init__(self, store: MongoStore) -> None:
        self._sessions: AsyncCollection[Doc] = store[SESSIONS]
        self._superseded: AsyncCollection[Doc] = store[SUPERSEDED]

    async def add(self, session: AuthSession) -> None:
        with translated():
            await self._sessions.insert_one(_session_doc(session))

    async def get(self, session_id: str) -> AuthSession | None:
        with translated():
            doc = await self._sessions.find_one({"_id": session_id})
        return None if doc is None else _session(doc)

    async def find_by_refresh(self, refresh_hash: str) -> RefreshMatch | None:
        with translated():
            # Current first: a hash leaves `refresh_hash` only after it was recorded as superseded.
            doc = await self._sessions.find_one({"refresh_hash": refresh_hash})
            if doc is not None:
                return RefreshMatch(session=_session(doc), current=True)
            superseded = await self._superseded.find_one({"_id": refresh_hash})
            if superseded is None:
                return None
            doc = await self._sessions.find_one({"_id": superseded["session_id"]})
        if doc is None:
            return None
        session = _session(doc)
        return RefreshMatch(session=session, current=session.refresh_hash == refresh_hash)

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: datetime) -> bool:
        live = {"_id": session_id, "refresh_hash": old_hash, "revoked_at": None}
        with translated():
            doc = await self._sessions.find_one(live, projection={"expires_at": 1})
            if doc is None:
                return False
            # Recorded before the swap. Should the swap then lose, the record is still true: the
            # hash was superseded by the winner, or it is still current (checked first on lookup).
            with contextlib.suppress(DuplicateKeyError):  # a concurrent rotation recorded it first
                await self._superseded.update_one(
                    {"_id": old_hash},
                    {"$setOnInsert": {"session_id": session_id, "expires_at": doc["expires_at"]}},
                    upsert=True,
                )
            result = await self._sessions.update_one(
                live,
                {"$set": {"refresh_hash": new_hash, "last_used_at": now}, "$inc": {"generation": 1}},
            )
        return result.modified_count == 1

    async def revoke(self, session_id: str, *, now: datetime, reason: str) -> bool:
        with translated():
            result = await self._sessions.update_one(
                {"_id": session_id, "revoked_at": None},
                {"$set": {"revoked_at": now, "revoked_reason": reason}},
            )
        return result.modified_count == 1

    async def revoke_all(self, user_id: str, *, now: datetime, reason: str, keep: str | None = None) -> int:
        query: Doc = {"user_id": user_id, "revoked_at": None}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        with translated():
            result = await self._sessions.update_many(
                query, {"$set": {"revoked_at": now, "revoked_reason": reason}}
            )
        return result.modified_count

    async def list_active(self, user_id: str, *, now: datetime) -> list[AuthSession]:
        with translated():
            cursor = self._sessions.find(
                {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": now}},
                sort=[("created_at", ASCENDING), ("_id", ASCENDING)],
            )
            docs = await cursor.to_list()
        return [_session(doc) for doc in docs]

    async def purge(self, *, now: datetime) -> int:
        """Forget sessions past their absolute end, with every refresh hash they had.

        The TTL indexes do the same on the server's clock; this is for callers that cannot wait.
        """
        with translated():
            dead = [
                doc["_id"]
                async for doc in self._sessions.find({"expires_at": {"$lte": now}}, projection={"_id": 1})
            ]
            if not dead:
                return 0
            await self._superseded.delete_many({"session_id": {"$in": dead}})
            result = await self._sessions.delete_many({"_id": {"$in": dead}})
        return result.deleted_count


# -- login failures ----------------------------------------------------------------------------


class MongoFailureCounter:
    """Lock-free: increment a recent record, else restart a stale one, else insert the first."""

    def __init__(self, store: MongoStore) -> None:
        self._failures: AsyncCollection[Doc] = store[FAILURES]

    async def get(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord | None:
        cutoff = now - timedelta(seconds=forget_after_s)
        with translated():
            doc = await self._failures.find_one({"_id": key, "last_failure_at": {"$gt": cutoff}})
        return None if doc is None else _failure(doc)

    async def add_failure(self, key: str, *, now: datetime, forget_after_s: int) -> FailureRecord:
        cutoff = now - timedelta(seconds=forget_after_s)
        stamp = {"last_failure_at": now, "expires_at": now + timedelta(seconds=forget_after_s)}
        with translated():
            for _ in range(_COUNT_ATTEMPTS):
                doc = await self._failures.find_one_and_update(
                    {"_id": key, "last_failure_at": {"$gt": cutoff}},
                    {"$inc": {"count": 1}, "$set": stamp},
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    doc = await self._failures.find_one_and_update(
                        {"_id": key, "last_failure_at": {"$lte": cutoff}},
                        {"$set": {"count": 1, **stamp}},
                        return_document=ReturnDocument.AFTER,
                    )
                if doc is not None:
                    return _failure(doc)
                try:
                    await self._failures.insert_one({"_id": key, "count": 1, **stamp})
                except DuplicateKeyError:
                    continue  # a concurrent first failure: count on top of it
                return FailureRecord(count=1, last_failure_at=to_millis(now))
        raise ConcurrentUpdate("the failure count kept changing under this update")

    async def clear(self, key: str) -> None:
        with translated():
            await self._failures.delete_one({"_id": key})


def _failure(doc: Doc) -> FailureRecord:
    return FailureRecord(count=int(doc["count"]), last_failure_at=_utc(doc["last_failure_at"]))
