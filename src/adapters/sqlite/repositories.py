"""Repositories over SQLite: each aggregate a msgspec-JSON document beside its query columns.

Every statement runs inside the unit of work's transaction (see `Transaction.run`), so reads
see the unit's own writes and nothing of other writers until it ends.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import sqlite3
import typing
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from chatcore.domain.chats import Chat, ChatMember
from chatcore.domain.groups import Group, GroupMember
from chatcore.domain.messages import Message, ReadMarker
from chatcore.domain.users import PasswordCredential, User
from chatcore.ports.errors import DuplicateKey

_encoder = msgspec.json.Encoder()  # insertion order kept: member order is part of a chat


def encode(value: object) -> str:
    return _encoder.encode(value).decode()


_users = msgspec.json.Decoder(User)
_credentials = msgspec.json.Decoder(PasswordCredential)
_groups = msgspec.json.Decoder(Group)
_chats = msgspec.json.Decoder(Chat)
_messages = msgspec.json.Decoder(Message)

# A violated unique constraint, as SQLite names it, and the key the port reports.
_UNIQUE_KEYS = {
    "users.email": "email",
    "chats.direct_key": "direct_key",
    "messages.chat_id, messages.author_id, messages.client_msg_id": "client_msg_id",
    "messages.chat_id, messages.seq": "seq",
}
_UNIQUE_PREFIX = "UNIQUE constraint failed: "


def duplicate_key(error: sqlite3.IntegrityError) -> DuplicateKey | None:
    """The DuplicateKey a unique violation means; None for other integrity errors."""
    message = str(error)
    if not message.startswith(_UNIQUE_PREFIX):
        return None
    columns = message.removeprefix(_UNIQUE_PREFIX)
    return DuplicateKey(_UNIQUE_KEYS.get(columns, columns.rpartition(".")[2]))


def _insert(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> None:
    try:
        conn.execute(sql, params)
    except sqlite3.IntegrityError as error:
        translated = duplicate_key(error)
        if translated is None:
            raise
        raise translated from error


class Transaction(Protocol):
    async def run[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the connection, inside this unit of work's transaction."""
        ...


class _Repository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def _one(self, sql: str, params: Sequence[object]) -> Any:
        return await self._tx.run(lambda conn: conn.execute(sql, params).fetchone())

    async def _all(self, sql: str, params: Sequence[object]) -> list[Any]:
        return await self._tx.run(lambda conn: conn.execute(sql, params).fetchall())

    async def _data[T](
        self, decoder: msgspec.json.Decoder[T], sql: str, params: Sequence[object]
    ) -> T | None:
        row = await self._one(sql, params)
        return None if row is None else decoder.decode(row[0])

    async def _data_list[T](
        self, decoder: msgspec.json.Decoder[T], sql: str, params: Sequence[object]
    ) -> list[T]:
        return [decoder.decode(row[0]) for row in await self._all(sql, params)]


def _sync_members(
    conn: sqlite3.Connection,
    table: str,
    parent: str,
    parent_id: str,
    members: set[str],
    known: set[str] | None,
) -> None:
    """Make the membership rows of `parent_id` equal `members`, touching only the difference."""
    if known is None:
        known = {
            row[0]
            for row in conn.execute(f"SELECT user_id FROM {table} WHERE {parent} = ?", (parent_id,))  # noqa: S608
        }
    gone, new = known - members, members - known
    if gone:
        conn.executemany(
            f"DELETE FROM {table} WHERE {parent} = ? AND user_id = ?",  # noqa: S608 (fixed names)
            [(parent_id, u) for u in gone],
        )
    if new:
        conn.executemany(
            f"INSERT INTO {table} ({parent}, user_id) VALUES (?, ?)",  # noqa: S608 (fixed names)
            [(parent_id, u) for u in new],
        )


# -- users ----------------------------------------------------------------------------------


class SqliteUserRepository(_Repository):
    async def get(self, user_id: str) -> User | None:
        return await self._data(_users, "SELECT data FROM users WHERE id = ?", (user_id,))

    async def get_by_email(self, email: str) -> User | None:
        return await self._data(_users, "SELECT data FROM users WHERE email = ?", (email,))

    async def get_many(self, user_ids: Sequence[str]) -> list[User]:
        rows = await self._all(
            "SELECT id, data FROM users WHERE id IN (SELECT value FROM json_each(?))",
            (encode(list(user_ids)),),
        )
        found: dict[str, str] = dict(rows)
        return [_users.decode(found[i]) for i in user_ids if i in found]

    async def add(self, user: User) -> None:
        params = (user.id, user.email, encode(user))
        await self._tx.run(
            lambda c: _insert(c, "INSERT INTO users (id, email, data) VALUES (?, ?, ?)", params)
        )

    async def save(self, user: User) -> None:
        params = (user.id, user.email, encode(user))
        await self._tx.run(
            lambda c: _insert(
                c,
                "INSERT INTO users (id, email, data) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET email = excluded.email, data = excluded.data",
                params,
            )
        )


class SqliteCredentialRepository(_Repository):
    async def get(self, user_id: str) -> PasswordCredential | None:
        return await self._data(_credentials, "SELECT data FROM credentials WHERE user_id = ?", (user_id,))

    async def save(self, credential: PasswordCredential) -> None:
        params = (credential.user_id, encode(credential))
        await self._tx.run(
            lambda c: c.execute(
                "INSERT INTO credentials (user_id, data) VALUES (?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data",
                params,
            )
        )


# -- groups ---------------------------------------------------------------------------------


class SqliteGroupRepository(_Repository):
    def __init__(self, tx: Transaction) -> None:
        super().__init__(tx)
        # Member ids as stored in this transaction, by group: saves then skip reading them.
        self.known_members: dict[str, set[str]] = {}
        # Groups handed out by `get_for_member`, by identity.
        self.narrowed: dict[int, Group] = {}

    def _loaded(self, groups: list[Group]) -> list[Group]:
        for group in groups:
            self.known_members[group.id] = set(group.members)
        return groups

    async def get(self, group_id: str) -> Group | None:
        found = self._loaded(
            await self._data_list(_groups, "SELECT data FROM groups WHERE id = ?", (group_id,))
        )
        return found[0] if found else None

    async def get_for_member(self, group_id: str, user_id: str) -> Group | None:
        row = await self._one("SELECT data FROM groups WHERE id = ?", (group_id,))
        if row is None:
            return None
        (data,) = row
        if len(data) > _WHOLE_DOC_BELOW and _PLAIN_ID.match(user_id):
            # The group's fields and roles, and one member found by SQLite (the rest unparsed).
            head = msgspec.structs.asdict(_group_heads.decode(data))
            path = f'$.members."{user_id}"'
            (member,) = await self._one("SELECT json_extract(?, ?)", (data, path))
            group = Group(**head, members={user_id: _group_member.decode(member)} if member else {})
        else:
            group = _groups.decode(data)
            group.members = {user_id: group.members[user_id]} if user_id in group.members else {}
        self.narrowed[id(group)] = group
        return group

    async def add(self, group: Group) -> None:
        params, members = (group.id, encode(group)), set(group.members)

        def add(conn: sqlite3.Connection) -> None:
            _insert(conn, "INSERT INTO groups (id, data) VALUES (?, ?)", params)
            _sync_members(conn, "group_members", "group_id", group.id, members, set())

        await self._tx.run(add)
        self.known_members[group.id] = members

    async def save(self, group: Group) -> None:
        if self.narrowed.get(id(group)) is group:
            raise ValueError("a group loaded for one member cannot be saved")
        params, members = (group.id, encode(group)), set(group.members)
        known = self.known_members.get(group.id)

        def save(conn: sqlite3.Connection) -> None:
            _insert(
                conn,
                "INSERT INTO groups (id, data) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                params,
            )
            _sync_members(conn, "group_members", "group_id", group.id, members, known)

        await self._tx.run(save)
        self.known_members[group.id] = members

    async def delete(self, group_id: str) -> None:
        await self._tx.run(lambda c: c.execute("DELETE FROM groups WHERE id = ?", (group_id,)))  # cascades
        self.known_members.pop(group_id, None)

    async def list_for_user(self, user_id: str) -> list[Group]:
        return self._loaded(
            await self._data_list(
                _groups,
                "SELECT g.data FROM group_members AS m JOIN groups AS g ON g.id = m.group_id "
                "WHERE m.user_id = ? ORDER BY m.group_id",
                (user_id,),
            )
        )

    async def ids_for_user(self, user_id: str) -> list[str]:
        rows = await self._all(
            "SELECT group_id FROM group_members WHERE user_id = ? ORDER BY group_id", (user_id,)
        )
        return [row[0] for row in rows]


# -- chats ----------------------------------------------------------------------------------

_CHAT_COLUMNS = "(id, kind, direct_key, group_id, last_seq, data) VALUES (?, ?, ?, ?, ?, ?)"

# A chat's fields besides members and last_seq, and a member's fields, read in C: comparing
# them is ~10x cheaper than encoding a 1,000-member document to see whether it changed. The
# fields are immutable values (str, enum, datetime), so a snapshot of them cannot change later.
_CHAT_FIELDS = operator.attrgetter(
    *(f.name for f in dataclasses.fields(Chat) if f.name not in ("members", "last_seq"))
)
_MEMBER_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(ChatMember)))


# A chat document without its members: what a send reads (msgspec skips the members unparsed).
_CHAT_HEAD_FIELDS = [
    (name, kind) for name, kind in typing.get_type_hints(Chat).items() if name not in ("members", "last_seq")
]
_ChatHead = msgspec.defstruct("_ChatHead", _CHAT_HEAD_FIELDS)
_chat_heads = msgspec.json.Decoder(_ChatHead)
_member = msgspec.json.Decoder(ChatMember)
# The same for a group: its fields and roles without the members.
_GroupHead = msgspec.defstruct(
    "_GroupHead", [(name, kind) for name, kind in typing.get_type_hints(Group).items() if name != "members"]
)
_group_heads = msgspec.json.Decoder(_GroupHead)
_group_member = msgspec.json.Decoder(GroupMember)
# Ids this safe need no escaping in a JSON path; others take the slow, whole-document way.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# Documents shorter than this (a few dozen members) are decoded whole by `get_for_member`.
_WHOLE_DOC_BELOW = 4096


def _state(chat: Chat) -> object:
    """What the chat's document holds besides last_seq, member order included."""
    return (_CHAT_FIELDS(chat), tuple(chat.members), tuple(map(_MEMBER_FIELDS, chat.members.values())))


def _chat_row(chat: Chat) -> tuple[object, ...]:
    return (chat.id, chat.kind.value, chat.direct_key, chat.group_id, chat.last_seq, encode(chat))


class SqliteChatRepository(_Repository):
    """The `last_seq` column is authoritative; the document's own `last_seq` may be older.

    A send changes nothing of its chat but `last_seq`: it updates that column only, instead of
    encoding and rewriting the whole document (members included: about 30 KB for 1,000; SQLite
    then rewrites only the record's changed page, not its unchanged overflow pages).
    """

    def __init__(self, tx: Transaction) -> None:
        super().__init__(tx)
        # Member ids as stored in this transaction, by chat: a save touches only the difference.
        self.known_members: dict[str, set[str]] = {}
        # What the stored document holds besides last_seq (see `_state`), by chat, as loaded
        # or written in this transaction.
        self.known_docs: dict[str, object] = {}
        # Chats handed out by `get_for_member`, by identity, with their state as loaded.
        self.narrowed: dict[int, tuple[Chat, object]] = {}

    def read_ids(self) -> set[str]:
        """The chats this transaction has read or written, whole or narrowed: known to exist."""
        return self.known_members.keys() | {chat.id for chat, _ in self.narrowed.values()}

    def _loaded(self, rows: list[tuple[str, int]]) -> list[Chat]:
        chats = []
        for data, last_seq in rows:
            chat = _chats.decode(data)
            chat.last_seq = last_seq
            self.known_docs[chat.id] = _state(chat)
            self.known_members[chat.id] = set(chat.members)
            chats.append(chat)
        return chats

    async def get(self, chat_id: str) -> Chat | None:
        found = self._loaded(await self._all("SELECT data, last_seq FROM chats WHERE id = ?", (chat_id,)))
        return found[0] if found else None

    async def get_for_member(self, chat_id: str, user_id: str) -> Chat | None:
        row = await self._one("SELECT data, last_seq FROM chats WHERE id = ?", (chat_id,))
        if row is None:
            return None
        data, last_seq = row
        if len(data) > _WHOLE_DOC_BELOW and _PLAIN_ID.match(user_id):
            chat = await self._head_with(data, last_seq, user_id)
        else:
            # A small document decodes whole about as fast. No bookkeeping of its members: a
            # narrowed chat only ever saves its seq (checked below).
            chat = _chats.decode(data)
            chat.last_seq = last_seq
            chat.members = {user_id: chat.members[user_id]} if user_id in chat.members else {}
        self.narrowed[id(chat)] = (chat, _state(chat))
        return chat

    async def _head_with(self, data: str, last_seq: int, user_id: str) -> Chat:
        """The chat's fields and one member, without decoding the others (SQLite finds it).

        Read in the same transaction as `data`, so the member is that document's."""
        head = msgspec.structs.asdict(_chat_heads.decode(data))
        path = f'$.members."{user_id}"'
        (member,) = await self._one("SELECT json_extract(?, ?)", (data, path))
        members = {user_id: _member.decode(member)} if member is not None else {}
        return Chat(**head, members=members, last_seq=last_seq)

    async def get_direct(self, key: str) -> Chat | None:
        found = self._loaded(await self._all("SELECT data, last_seq FROM chats WHERE direct_key = ?", (key,)))
        return found[0] if found else None

    async def add(self, chat: Chat) -> None:
        row, members = _chat_row(chat), set(chat.members)

        def add(conn: sqlite3.Connection) -> None:
            _insert(conn, f"INSERT INTO chats {_CHAT_COLUMNS}", row)
            _sync_members(conn, "chat_members", "chat_id", chat.id, members, set())

        await self._tx.run(add)
        self.known_members[chat.id] = members
        self.known_docs[chat.id] = _state(chat)

    async def save(self, chat: Chat) -> None:
        narrowed = self.narrowed.get(id(chat))
        if narrowed is not None and narrowed[0] is chat:
            if _state(chat) != narrowed[1]:
                raise ValueError("a chat loaded for one member can only have its last_seq saved")
            params = (chat.last_seq, chat.id)
            await self._tx.run(lambda c: c.execute("UPDATE chats SET last_seq = ? WHERE id = ?", params))
            return
        known = self.known_docs.get(chat.id)
        if known is not None and chat.id in self.known_members and _state(chat) == known:
            params = (chat.last_seq, chat.id)
            await self._tx.run(lambda c: c.execute("UPDATE chats SET last_seq = ? WHERE id = ?", params))
            return
        row, members = _chat_row(chat), set(chat.members)
        known = self.known_members.get(chat.id)

        def save(conn: sqlite3.Connection) -> None:
            _insert(
                conn,
                f"INSERT INTO chats {_CHAT_COLUMNS} ON CONFLICT (id) DO UPDATE SET "
                "kind = excluded.kind, direct_key = excluded.direct_key, group_id = excluded.group_id, "
                "last_seq = excluded.last_seq, data = excluded.data",
                row,
            )
            _sync_members(conn, "chat_members", "chat_id", chat.id, members, known)

        await self._tx.run(save)
        self.known_members[chat.id] = members
        self.known_docs[chat.id] = _state(chat)

    async def list_for_user(self, user_id: str) -> list[Chat]:
        return self._loaded(
            await self._all(
                "SELECT c.data, c.last_seq FROM chat_members AS m JOIN chats AS c ON c.id = m.chat_id "
                "WHERE m.user_id = ? ORDER BY m.chat_id",
                (user_id,),
            )
        )

    async def ids_for_user(self, user_id: str) -> list[str]:
        rows = await self._all(
            "SELECT chat_id FROM chat_members WHERE user_id = ? ORDER BY chat_id", (user_id,)
        )
        return [row[0] for row in rows]

    async def list_by_group(self, group_id: str) -> list[Chat]:
        return self._loaded(
            await self._all("SELECT data, last_seq FROM chats WHERE group_id = ? ORDER BY id", (group_id,))
        )


# -- messages -------------------------------------------------------------------------------


def _message_row(message: Message) -> tuple[object, ...]:
    return (
        message.chat_id,
        message.seq,
        message.author_id,
        message.client_msg_id,
        int(message.is_deleted),
        encode(message),
    )


_INSERT_MESSAGE = (
    "INSERT INTO messages (chat_id, seq, author_id, client_msg_id, deleted, data) VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteMessageRepository(_Repository):
    """Pages and unread counts are ranges over (chat_id, seq): seqs are gapless."""

    def __init__(self, tx: Transaction) -> None:
        super().__init__(tx)
        # The chats this unit wrote messages of: `messages.chat_id` is checked at COMMIT only
        # (deferred), so the unit checks these chats exist before it joins a batch.
        self.chat_ids: set[str] = set()

    async def get(self, chat_id: str, seq: int) -> Message | None:
        return await self._data(
            _messages, "SELECT data FROM messages WHERE chat_id = ? AND seq = ?", (chat_id, seq)
        )

    async def get_by_client_id(self, chat_id: str, author_id: str, client_msg_id: str) -> Message | None:
        return await self._data(
            _messages,
            "SELECT data FROM messages WHERE chat_id = ? AND author_id = ? AND client_msg_id = ?",
            (chat_id, author_id, client_msg_id),
        )

    async def add(self, message: Message) -> None:
        row = _message_row(message)

        def add(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_MESSAGE, row)
            except sqlite3.IntegrityError as error:
                translated = duplicate_key(error)
                if translated is None:
                    raise
                # Both keys taken: report client_msg_id first, as the memory adapter does.
                if translated.key != "client_msg_id" and message.client_msg_id is not None:
                    taken = conn.execute(
                        "SELECT 1 FROM messages WHERE chat_id = ? AND author_id = ? AND client_msg_id = ?",
                        (message.chat_id, message.author_id, message.client_msg_id),
                    ).fetchone()
                    if taken is not None:
                        translated = DuplicateKey("client_msg_id")
                raise translated from error

        await self._tx.run(add)
        self.chat_ids.add(message.chat_id)

    async def save(self, message: Message) -> None:
        row = _message_row(message)
        self.chat_ids.add(message.chat_id)
        await self._tx.run(
            lambda c: _insert(
                c,
                _INSERT_MESSAGE + " ON CONFLICT (chat_id, seq) DO UPDATE SET author_id = excluded.author_id, "
                "client_msg_id = excluded.client_msg_id, deleted = excluded.deleted, data = excluded.data",
                row,
            )
        )

    async def list(self, chat_id: str, *, after: int | None, before: int | None, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        if before is not None:
            newest_first = await self._data_list(
                _messages,
                "SELECT data FROM messages WHERE chat_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (chat_id, before, limit),
            )
            return newest_first[::-1]
        return await self._data_list(
            _messages,
            "SELECT data FROM messages WHERE chat_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (chat_id, after or 0, limit),
        )

    async def last(self, chat_id: str) -> Message | None:
        return await self._data(
            _messages, "SELECT data FROM messages WHERE chat_id = ? ORDER BY seq DESC LIMIT 1", (chat_id,)
        )

    async def count_unread(self, chat_id: str, reader_id: str, after_seq: int) -> int:
        row = await self._one(
            "SELECT count(*) FROM messages WHERE chat_id = ? AND seq > ? AND deleted = 0 AND author_id <> ?",
            (chat_id, after_seq, reader_id),
        )
        return int(row[0])


# -- read markers ---------------------------------------------------------------------------


class SqliteReadMarkerRepository(_Repository):
    async def get(self, chat_id: str, user_id: str) -> ReadMarker | None:
        row = await self._one(
            "SELECT seq FROM read_markers WHERE chat_id = ? AND user_id = ?", (chat_id, user_id)
        )
        return None if row is None else ReadMarker(chat_id, user_id, int(row[0]))

    async def save(self, marker: ReadMarker) -> None:
        params = (marker.chat_id, marker.user_id, marker.seq)
        await self._tx.run(
            lambda c: c.execute(
                "INSERT INTO read_markers (chat_id, user_id, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (chat_id, user_id) DO UPDATE SET seq = excluded.seq",
                params,
            )
        )
