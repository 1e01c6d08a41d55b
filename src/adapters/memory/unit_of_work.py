"""Repositories, unit of work and event log over the in-memory store."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from adapters.memory.store import MemoryStore, Staged
from chatcore.domain.chats import Chat
from chatcore.domain.events import AnyEvent, EventRecord
from chatcore.domain.groups import Group
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.users import PasswordCredential, User
from chatcore.ports.errors import DuplicateKey
from chatcore.ports.system import Clock, IdGenerator


class MemoryUserRepository:
    def __init__(self, table: Staged[str, User]) -> None:
        self._table = table

    async def get(self, user_id: str) -> User | None:
        return self._table.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        return next(self._table.find(lambda u: u.email == email), None)

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        return [u for u in (self._table.get(i) for i in user_ids) if u is not None]

    async def add(self, user: User) -> None:
        if await self.get_by_email(user.email) is not None:
            raise DuplicateKey("email")
        self._table.put(user.id, user)

    async def save(self, user: User) -> None:
        self._table.put(user.id, user)


class MemoryCredentialRepository:
    def __init__(self, table: Staged[str, PasswordCredential]) -> None:
        self._table = table

    async def get(self, user_id: str) -> PasswordCredential | None:
        return self._table.get(user_id)

    async def save(self, credential: PasswordCredential) -> None:
        self._table.put(credential.user_id, credential)


class MemoryGroupRepository:
    def __init__(self, table: Staged[str, Group]) -> None:
        self._table = table
        # Groups handed out by `get_for_member`, by identity.
        self._narrowed: dict[int, Group] = {}

    async def get(self, group_id: str) -> Group | None:
        return self._table.get(group_id)

    async def get_for_member(self, group_id: str, user_id: str) -> Group | None:
        group = self._table.get(group_id)
        if group is None:
            return None
        group.members = {user_id: group.members[user_id]} if user_id in group.members else {}
        self._narrowed[id(group)] = group
        return group

    async def add(self, group: Group) -> None:
        self._table.put(group.id, group)

    async def save(self, group: Group) -> None:
        if self._narrowed.get(id(group)) is group:
            raise ValueError("a group loaded for one member cannot be saved")
        self._table.put(group.id, group)

    async def delete(self, group_id: str) -> None:
        self._table.delete(group_id)

    async def list_for_user(self, user_id: str) -> list[Group]:
        return sorted(self._table.find(lambda g: g.is_member(user_id)), key=lambda g: g.id)

    async def ids_for_user(self, user_id: str) -> list[str]:
        return self._table.keys_where(lambda g: g.is_member(user_id))


class MemoryChatRepository:
    def __init__(self, table: Staged[str, Chat]) -> None:
        self._table = table
        # Chats handed out by `get_for_member`, by identity, with their fields as loaded.
        self._narrowed: dict[int, tuple[Chat, Chat]] = {}

    async def get(self, chat_id: str) -> Chat | None:
        return self._table.get(chat_id)

    async def get_for_member(self, chat_id: str, user_id: str) -> Chat | None:
        chat = self._table.get(chat_id)
        if chat is None:
            return None
        chat.members = {user_id: chat.members[user_id]} if user_id in chat.members else {}
        self._narrowed[id(chat)] = (chat, copy.deepcopy(chat))
        return chat

    async def get_direct(self, key: str) -> Chat | None:
        return next(self._table.find(lambda c: c.direct_key == key), None)

    async def add(self, chat: Chat) -> None:
        if chat.direct_key is not None and await self.get_direct(chat.direct_key) is not None:
            raise DuplicateKey("direct_key")
        self._table.put(chat.id, chat)

    async def save(self, chat: Chat) -> None:
        narrowed = self._narrowed.get(id(chat))
        if narrowed is not None and narrowed[0] is chat:
            chat = _with_seq_of(chat, narrowed[1], self._table.get(chat.id))
        self._table.put(chat.id, chat)

    async def list_for_user(self, user_id: str) -> list[Chat]:
        return sorted(self._table.find(lambda c: c.is_member(user_id)), key=lambda c: c.id)

    async def ids_for_user(self, user_id: str) -> list[str]:
        return self._table.keys_where(lambda c: c.is_member(user_id))

    async def list_by_group(self, group_id: str) -> list[Chat]:
        return sorted(self._table.find(lambda c: c.group_id == group_id), key=lambda c: c.id)


def _with_seq_of(narrowed: Chat, loaded: Chat, stored: Chat | None) -> Chat:
    """The stored chat with the narrowed one's last_seq: the only change a narrowed chat may carry."""
    if stored is None or dataclasses.replace(narrowed, last_seq=loaded.last_seq) != loaded:
        raise ValueError("a chat loaded for one member can only have its last_seq saved")
    stored.last_seq = narrowed.last_seq
    return stored


class MemoryMessageRepository:
    """Seqs are gapless, so pages are key ranges rather than scans."""

    def __init__(self, table: Staged[tuple[str, int], Message], chats: Staged[str, Chat]) -> None:
        self._table = table
        self._chats = chats

    def _last_seq(self, chat_id: str) -> int:
        chat = self._chats.get(chat_id)
        return chat.last_seq if chat is not None else 0

    async def get(self, chat_id: str, seq: int) -> Message | None:
        return self._table.get((chat_id, seq))

    async def get_by_client_id(self, chat_id: str, author_id: str, client_msg_id: str) -> Message | None:
        keys = ((chat_id, seq) for seq in range(1, self._last_seq(chat_id) + 1))
        return next(
            self._table.find(lambda m: m.author_id == author_id and m.client_msg_id == client_msg_id, keys),
            None,
        )

    async def add(self, message: Message) -> None:
        if message.client_msg_id is not None and await self.get_by_client_id(
            message.chat_id, message.author_id, message.client_msg_id
        ):
            raise DuplicateKey("client_msg_id")
        if self._table.get((message.chat_id, message.seq)) is not None:
            raise DuplicateKey("seq")
        self._table.put((message.chat_id, message.seq), message)

    async def save(self, message: Message) -> None:
        self._table.put((message.chat_id, message.seq), message)

    async def list(self, chat_id: str, *, after: int | None, before: int | None, limit: int) -> list[Message]:
        last = self._last_seq(chat_id)
        if before is not None:
            top = min(before - 1, last)
            seqs = range(max(1, top - limit + 1), top + 1)
        else:
            start = (after or 0) + 1
            seqs = range(start, min(last, start + limit - 1) + 1)
        return [m for m in (self._table.get((chat_id, s)) for s in seqs) if m is not None]

    async def last(self, chat_id: str) -> Message | None:
        return self._table.get((chat_id, self._last_seq(chat_id)))

    async def count_unread(self, chat_id: str, reader_id: str, after_seq: int) -> int:
        keys = ((chat_id, seq) for seq in range(after_seq + 1, self._last_seq(chat_id) + 1))
        return self._table.count(keys, lambda m: not m.is_deleted and m.author_id != reader_id)


class MemoryReadMarkerRepository:
    def __init__(self, table: Staged[tuple[str, str], ReadMarker]) -> None:
        self._table = table

    async def get(self, chat_id: str, user_id: str) -> ReadMarker | None:
        return self._table.get((chat_id, user_id))

    async def save(self, marker: ReadMarker) -> None:
        self._table.put((marker.chat_id, marker.user_id), marker)


class MemoryUnitOfWork:
    def __init__(self, store: MemoryStore, clock: Clock, ids: IdGenerator) -> None:
        self._store, self._clock, self._ids = store, clock, ids
        self._events: list[AnyEvent] = []

    async def __aenter__(self) -> Self:
        await self._store.lock.acquire()
        s = self._store
        self._tables: list[Staged[object, object]] = []
        users, creds = Staged(s.users), Staged(s.credentials)
        groups, chats = Staged(s.groups), Staged(s.chats)
        messages, markers = Staged(s.messages), Staged(s.read_markers)
        self._tables = [users, creds, groups, chats, messages, markers]  # type: ignore[list-item]
        self.users = MemoryUserRepository(users)
        self.credentials = MemoryCredentialRepository(creds)
        self.groups = MemoryGroupRepository(groups)
        self.chats = MemoryChatRepository(chats)
        self.messages = MemoryMessageRepository(messages, chats)
        self.read_markers = MemoryReadMarkerRepository(markers)
        self._events = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tables = []  # whatever was not committed is dropped
        self._events = []
        self._store.lock.release()

    def record(self, event: AnyEvent) -> None:
        self._events.append(event)

    async def commit(self) -> list[EventRecord]:
        store, now = self._store, self._clock.now()
        records = []
        for event in self._events:
            seq = store.stream_seqs.get(event.stream_id, 0) + 1
            store.stream_seqs[event.stream_id] = seq
            records.append(
                EventRecord(
                    id=self._ids.new_id(), stream_id=event.stream_id, seq=seq, occurred_at=now, event=event
                )
            )
        for table in self._tables:
            table.apply()
        store.log.extend(records)
        self._events = []
        return records


class MemoryEventLog:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def read(self, stream_id: str, *, after_seq: int, limit: int) -> list[EventRecord]:
        hits = [r for r in self._store.log if r.stream_id == stream_id and r.seq > after_seq]
        return hits[:limit]

    async def read_back(self, stream_id: str, *, before_seq: int, limit: int) -> list[EventRecord]:
        hits = [r for r in reversed(self._store.log) if r.stream_id == stream_id and r.seq < before_seq]
        return hits[:limit]

    async def last_seq(self, stream_id: str) -> int:
        return self._store.stream_seqs.get(stream_id, 0)

    async def undispatched(self, limit: int) -> list[EventRecord]:
        done = self._store.dispatched
        return [r for r in self._store.log if r.id not in done][:limit]

    async def mark_dispatched(self, event_ids: Sequence[str]) -> None:
        self._store.dispatched.update(event_ids)
