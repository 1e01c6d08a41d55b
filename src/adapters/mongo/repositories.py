"""Repositories over MongoDB collections, each working through its unit of work's session.

Reads before a unit of work's first write run outside any transaction; the first write opens
the transaction, and later reads run inside it so they see the unit's own writes. Every
aggregate read is remembered with its version; writes are conditional on it (see
MongoUnitOfWork.write), which is what makes a stale read lose the race instead of winning it.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from pymongo import ASCENDING, DESCENDING

from adapters.mongo import documents as d
from adapters.mongo.errors import translated
from chatcore.domain.chats import Chat
from chatcore.domain.groups import Group
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.users import PasswordCredential, User

if TYPE_CHECKING:
    from adapters.mongo.unit_of_work import MongoUnitOfWork

Doc = dict[str, Any]


async def _ids_where(uow: MongoUnitOfWork, coll: Any, query: Doc) -> list[str]:
    """The ids of the matching documents, in id order: only `_id` comes back, nothing decoded.

    Only read, never written back, so no version is remembered for them."""
    with translated():
        cursor = coll.find(query, {"_id": 1}, sort=[("_id", ASCENDING)], session=uow.session)
        return [doc["_id"] async for doc in cursor]


class MongoUserRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.users

    async def get(self, user_id: str) -> User | None:
        doc = await self._uow.find_one(self._coll, {"_id": user_id})
        return d.user_from(doc) if doc is not None else None

    async def get_by_email(self, email: str) -> User | None:
        doc = await self._uow.find_one(self._coll, {"email": email})
        return d.user_from(doc) if doc is not None else None

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        if not user_ids:
            return []
        docs = await self._uow.find(self._coll, {"_id": {"$in": list(user_ids)}})
        by_id = {doc["_id"]: d.user_from(doc) for doc in docs}
        return [by_id[i] for i in dict.fromkeys(user_ids) if i in by_id]

    async def add(self, user: User) -> None:
        await self._uow.write(self._coll, d.user_doc(user), new=True)

    async def save(self, user: User) -> None:
        await self._uow.write(self._coll, d.user_doc(user))


class MongoCredentialRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.credentials

    async def get(self, user_id: str) -> PasswordCredential | None:
        doc = await self._uow.find_one(self._coll, {"_id": user_id})
        return d.credential_from(doc) if doc is not None else None

    async def save(self, credential: PasswordCredential) -> None:
        await self._uow.write(self._coll, d.credential_doc(credential))


def _head(aggregate: type, *extra: str) -> dict[str, int]:
    """A projection of every field of an aggregate's document but its members: with
    `$elemMatch` on `members` beside it, the server sends one member (a 1,000-member chat is
    about 48 KB of BSON otherwise)."""
    fields = [f for f in typing.get_type_hints(aggregate) if f not in ("id", "members")]
    return {f: 1 for f in (*fields, *extra, d.VERSION)}


_GROUP_HEAD = _head(Group)
_CHAT_HEAD = _head(Chat, "direct_key")


class MongoGroupRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.groups
        # Groups handed out by `get_for_member` in this unit, by identity.
        self._narrowed: dict[int, Group] = {}

    async def get(self, group_id: str) -> Group | None:
        await self._uow.lock(f"group:{group_id}")
        doc = await self._uow.find_one(self._coll, {"_id": group_id})
        return d.group_from(doc) if doc is not None else None

    async def get_for_member(self, group_id: str, user_id: str) -> Group | None:
        # No group lock: the lock queues the writers of a document, and a narrowed group is
        # never written (the sends of all of a group's chats do not queue behind each other).
        projection = {**_GROUP_HEAD, "members": {"$elemMatch": {"user_id": user_id}}}
        doc = await self._uow.find_one(self._coll, {"_id": group_id}, projection)
        if doc is None:
            return None
        group = d.group_from({**doc, "members": doc.get("members", [])})
        self._narrowed[id(group)] = group
        return group

    async def add(self, group: Group) -> None:
        await self._uow.write(self._coll, d.group_doc(group), new=True)

    async def save(self, group: Group) -> None:
        if self._narrowed.get(id(group)) is group:
            raise ValueError("a group loaded for one member cannot be saved")
        await self._uow.write(self._coll, d.group_doc(group))

    async def delete(self, group_id: str) -> None:
        await self._uow.delete(self._coll, group_id)

    async def list_for_user(self, user_id: str) -> list[Group]:
        docs = await self._uow.find(self._coll, {"members.user_id": user_id}, sort=[("_id", ASCENDING)])
        return [d.group_from(doc) for doc in docs]

    async def ids_for_user(self, user_id: str) -> list[str]:
        return await _ids_where(self._uow, self._coll, {"members.user_id": user_id})


def _without_seq(chat: Chat) -> object:
    """What a chat holds besides last_seq (a narrowed chat may change nothing else)."""
    state = msgspec.to_builtins(chat)
    state.pop("last_seq")
    return state


class MongoChatRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.chats
        # Chats handed out by `get_for_member` in this unit, by identity, with their state.
        self._narrowed: dict[int, tuple[Chat, object]] = {}

    async def get(self, chat_id: str) -> Chat | None:
        await self._uow.lock(f"chat:{chat_id}")
        doc = await self._uow.find_one(self._coll, {"_id": chat_id})
        return d.chat_from(doc) if doc is not None else None

    async def get_for_member(self, chat_id: str, user_id: str) -> Chat | None:
        await self._uow.lock(f"chat:{chat_id}")
        projection = {**_CHAT_HEAD, "members": {"$elemMatch": {"user_id": user_id}}}
        doc = await self._uow.find_one(self._coll, {"_id": chat_id}, projection)
        if doc is None:
            return None
        chat = d.chat_from({**doc, "members": doc.get("members", [])})
        self._narrowed[id(chat)] = (chat, _without_seq(chat))
        return chat

    async def get_direct(self, key: str) -> Chat | None:
        doc = await self._uow.find_one(self._coll, {"direct_key": key})
        return d.chat_from(doc) if doc is not None else None

    async def add(self, chat: Chat) -> None:
        await self._uow.write(self._coll, d.chat_doc(chat), new=True)

    async def save(self, chat: Chat) -> None:
        # Conditional on the version read: two sends that read the same last_seq cannot both land.
        narrowed = self._narrowed.get(id(chat))
        if narrowed is not None and narrowed[0] is chat:
            if _without_seq(chat) != narrowed[1]:
                raise ValueError("a chat loaded for one member can only have its last_seq saved")
            await self._uow.update(self._coll, chat.id, {"last_seq": chat.last_seq})
            return
        await self._uow.write(self._coll, d.chat_doc(chat))

    async def list_for_user(self, user_id: str) -> list[Chat]:
        docs = await self._uow.find(self._coll, {"members.user_id": user_id}, sort=[("_id", ASCENDING)])
        return [d.chat_from(doc) for doc in docs]

    async def ids_for_user(self, user_id: str) -> list[str]:
        return await _ids_where(self._uow, self._coll, {"members.user_id": user_id})

    async def list_by_group(self, group_id: str) -> list[Chat]:
        docs = await self._uow.find(self._coll, {"group_id": group_id}, sort=[("_id", ASCENDING)])
        return [d.chat_from(doc) for doc in docs]


class MongoMessageRepository:
    """Every query is a range on the (chat_id, seq) index."""

    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.messages

    async def get(self, chat_id: str, seq: int) -> Message | None:
        doc = await self._uow.find_one(self._coll, {"chat_id": chat_id, "seq": seq})
        return d.message_from(doc) if doc is not None else None

    async def get_by_client_id(self, chat_id: str, author_id: str, client_msg_id: str) -> Message | None:
        doc = await self._uow.find_one(
            self._coll, {"chat_id": chat_id, "author_id": author_id, "client_msg_id": client_msg_id}
        )
        return d.message_from(doc) if doc is not None else None

    async def add(self, message: Message) -> None:
        await self._uow.write(self._coll, d.message_doc(message), new=True)

    async def save(self, message: Message) -> None:
        await self._uow.write(self._coll, d.message_doc(message))

    async def list(self, chat_id: str, *, after: int | None, before: int | None, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        if before is not None:
            docs = await self._uow.find(
                self._coll,
                {"chat_id": chat_id, "seq": {"$lt": before}},
                sort=[("chat_id", ASCENDING), ("seq", DESCENDING)],
                limit=limit,
            )
            docs.reverse()
        else:
            docs = await self._uow.find(
                self._coll,
                {"chat_id": chat_id, "seq": {"$gt": after or 0}},
                sort=[("chat_id", ASCENDING), ("seq", ASCENDING)],
                limit=limit,
            )
        return [d.message_from(doc) for doc in docs]

    async def last(self, chat_id: str) -> Message | None:
        docs = await self._uow.find(
            self._coll, {"chat_id": chat_id}, sort=[("chat_id", ASCENDING), ("seq", DESCENDING)], limit=1
        )
        return d.message_from(docs[0]) if docs else None

    async def count_unread(self, chat_id: str, reader_id: str, after_seq: int) -> int:
        query = {
            "chat_id": chat_id,
            "seq": {"$gt": after_seq},
            "deleted_at": None,
            "author_id": {"$ne": reader_id},
        }
        with translated():
            return await self._coll.count_documents(query, session=self._uow.session)


class MongoReadMarkerRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self._coll = uow.store.read_markers

    async def get(self, chat_id: str, user_id: str) -> ReadMarker | None:
        doc = await self._uow.find_one(self._coll, {"_id": d.marker_id(chat_id, user_id)})
        return d.marker_from(doc) if doc is not None else None

    async def save(self, marker: ReadMarker) -> None:
        await self._uow.write(self._coll, d.marker_doc(marker))
