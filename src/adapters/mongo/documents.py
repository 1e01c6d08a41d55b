"""Aggregates to BSON documents and back, with msgspec doing the type work.

Shapes: every document's `_id` is the aggregate's id; maps keyed by user or role id become
arrays (ids are not safe as field names, and arrays index as multikeys); optional unique keys
(`direct_key`, `client_msg_id`) are left out when absent so that partial indexes skip them.
Datetimes are stored as BSON dates, which hold milliseconds: `to_millis` says what survives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from chatcore.domain.chats import Chat
from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.domain.groups import Group
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.users import PasswordCredential, User

Document = dict[str, Any]

VERSION = "version"  # optimistic-concurrency counter on every aggregate document


def to_millis(moment: datetime) -> datetime:
    """The instant as MongoDB keeps it: BSON dates have millisecond precision."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _builtins(value: object) -> Document:
    doc: Document = msgspec.to_builtins(value, builtin_types=(datetime,), order="deterministic")
    return doc


def _fix_dates(value: Any) -> Any:
    """Read-back dates as UTC-aware values (the client is tz_aware, this keeps it explicit)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dict):
        return {k: _fix_dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fix_dates(v) for v in value]
    return value


def _strip(doc: Document) -> Document:
    return {k: _fix_dates(v) for k, v in doc.items() if k not in ("_id", VERSION)}


def _drop_none(doc: Document, *keys: str) -> Document:
    for key in keys:
        if doc.get(key) is None:
            doc.pop(key, None)
    return doc


# -- users -------------------------------------------------------------------------------------


def user_doc(user: User) -> Document:
    doc = _builtins(user)
    doc["_id"] = doc.pop("id")
    return doc


def user_from(doc: Document) -> User:
    return msgspec.convert({"id": doc["_id"], **_strip(doc)}, User)


def credential_doc(credential: PasswordCredential) -> Document:
    doc = _builtins(credential)
    doc["_id"] = doc.pop("user_id")
    return doc


def credential_from(doc: Document) -> PasswordCredential:
    return msgspec.convert({"user_id": doc["_id"], **_strip(doc)}, PasswordCredential)


# -- groups ------------------------------------------------------------------------------------


def group_doc(group: Group) -> Document:
    doc = _builtins(group)
    doc["_id"] = doc.pop("id")
    doc["members"] = list(doc["members"].values())
    doc["roles"] = list(doc["roles"].values())
    return doc


def group_from(doc: Document) -> Group:
    body = _strip(doc)
    body["id"] = doc["_id"]
    body["members"] = {m["user_id"]: m for m in body["members"]}
    body["roles"] = {r["id"]: r for r in body["roles"]}
    return msgspec.convert(body, Group)


# -- chats -------------------------------------------------------------------------------------


def chat_doc(chat: Chat) -> Document:
    doc = _builtins(chat)
    doc["_id"] = doc.pop("id")
    doc["members"] = list(doc["members"].values())
    if chat.direct_key is not None:
        doc["direct_key"] = chat.direct_key  # unique among direct chats (partial index)
    return doc


def chat_from(doc: Document) -> Chat:
    body = _strip(doc)
    body.pop("direct_key", None)
    body["id"] = doc["_id"]
    body["members"] = {m["user_id"]: m for m in body["members"]}
    return msgspec.convert(body, Chat)


# -- messages ----------------------------------------------------------------------------------


def message_doc(message: Message) -> Document:
    doc = _builtins(message)
    doc["_id"] = doc.pop("id")
    return _drop_none(doc, "client_msg_id")


def message_from(doc: Document) -> Message:
    return msgspec.convert({"id": doc["_id"], **_strip(doc)}, Message)


def marker_id(chat_id: str, user_id: str) -> str:
    """Unambiguous whatever the ids contain: the chat id's length comes first."""
    return f"{len(chat_id)}:{chat_id}:{user_id}"


def marker_doc(marker: ReadMarker) -> Document:
    doc = _builtins(marker)
    doc["_id"] = marker_id(marker.chat_id, marker.user_id)
    return doc


def marker_from(doc: Document) -> ReadMarker:
    return msgspec.convert(_strip(doc), ReadMarker)


# -- events ------------------------------------------------------------------------------------


def event_doc(record: EventRecord, position: datetime) -> Document:
    """A log entry; `position` orders the outbox (see MongoUnitOfWork.commit)."""
    return {
        "_id": record.id,
        "stream_id": record.stream_id,
        "seq": record.seq,
        "occurred_at": record.occurred_at,
        "event": _builtins(record.event),
        "dispatched": False,
        "position": position,
    }


def record_from(doc: Document) -> EventRecord:
    return EventRecord(
        id=doc["_id"],
        stream_id=doc["stream_id"],
        seq=doc["seq"],
        occurred_at=_fix_dates(doc["occurred_at"]),
        event=msgspec.convert(_fix_dates(doc["event"]), AnyEvent),
    )
