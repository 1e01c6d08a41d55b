"""Messages: numbered per chat with no gaps, edited with history, deleted as tombstones."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from chatcore.domain.chats import Chat
from chatcore.domain.errors import Gone, InvalidInput, LimitExceeded, PermissionDenied
from chatcore.domain.events import MessageDeleted, MessageEdited, MessagePosted, ReadMarkerMoved
from chatcore.domain.groups import Group
from chatcore.domain.limits import Limits
from chatcore.domain.permissions import Permission, authorize, permissions_for
from chatcore.domain.text import clean_text


@dataclass(slots=True)
class MessageEdit:
    """A previous version of a message's body, kept when it was replaced."""

    body: str
    replaced_at: datetime


@dataclass(slots=True)
class Message:
    id: str
    chat_id: str
    seq: int
    author_id: str
    body: str
    created_at: datetime
    reply_to: int | None = None
    client_msg_id: str | None = None
    edited_at: datetime | None = None
    history: list[MessageEdit] = field(default_factory=list)
    deleted_at: datetime | None = None
    deleted_by: str | None = None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def post(
        cls,
        *,
        message_id: str,
        chat: Chat,
        group: Group | None,
        author: str,
        body: str,
        reply_to: int | None,
        client_msg_id: str | None,
        now: datetime,
        limits: Limits,
    ) -> tuple[Message, MessagePosted]:
        """Check everything first, then take the seq: a refused post consumes nothing."""
        authorize(author, chat, group, Permission.SEND_MESSAGES)
        body = clean_text("body", body, limits.max_message_chars)
        if reply_to is not None and not 1 <= reply_to <= chat.last_seq:
            raise InvalidInput("reply_to", "no such message in this chat")
        check_client_msg_id(client_msg_id, limits)
        message = cls(message_id, chat.id, chat.next_seq(), author, body, now, reply_to, client_msg_id)
        return message, MessagePosted(
            chat_id=chat.id,
            message_id=message_id,
            seq=message.seq,
            author_id=author,
            body=body,
            reply_to=reply_to,
            client_msg_id=client_msg_id,
            created_at=now,
        )

    def same_post(self, body: str, reply_to: int | None) -> bool:
        """Whether a retried send with this message's client_msg_id asks for the same message."""
        return self.body == body and self.reply_to == reply_to

    def ensure_readable(self, reader: str, chat: Chat, group: Group | None) -> None:
        authorize(reader, chat, group, Permission.READ_CHAT)
        if self.is_deleted:
            raise Gone("message")

    def edit(
        self, actor: str, chat: Chat, group: Group | None, body: str, now: datetime, limits: Limits
    ) -> MessageEdited:
        self.ensure_readable(actor, chat, group)
        if actor != self.author_id:
            raise PermissionDenied(Permission.EDIT_OWN_MESSAGES.value, "only the author can edit a message")
        authorize(actor, chat, group, Permission.EDIT_OWN_MESSAGES)
        body = clean_text("body", body, limits.max_message_chars)
        self.history.append(MessageEdit(self.body, now))
        del self.history[: max(0, len(self.history) - limits.max_edit_history)]
        self.body, self.edited_at = body, now
        return MessageEdited(chat_id=chat.id, message_id=self.id, seq=self.seq, body=body, edited_at=now)

    def delete(self, actor: str, chat: Chat, group: Group | None, now: datetime) -> MessageDeleted:
        self.ensure_readable(actor, chat, group)
        granted = permissions_for(actor, chat, group)
        own = actor == self.author_id and Permission.DELETE_OWN_MESSAGES in granted
        if not own and Permission.DELETE_ANY_MESSAGE not in granted:
            raise PermissionDenied(Permission.DELETE_ANY_MESSAGE.value)
        # A tombstone: the seq stays so history has no holes, the content goes.
        self.body, self.history, self.deleted_at, self.deleted_by = "", [], now, actor
        return MessageDeleted(chat_id=chat.id, message_id=self.id, seq=self.seq, by=actor)


def check_client_msg_id(client_msg_id: str | None, limits: Limits) -> None:
    if client_msg_id is None:
        return
    if not client_msg_id:
        raise InvalidInput("client_msg_id", "client_msg_id must not be empty")
    if len(client_msg_id) > limits.max_client_msg_id_chars:
        raise LimitExceeded("client_msg_id", limits.max_client_msg_id_chars)
    if not client_msg_id.isascii() or not client_msg_id.isprintable():
        raise InvalidInput("client_msg_id", "client_msg_id must be printable ASCII")


@dataclass(slots=True)
class ReadMarker:
    """How far one member has read one chat (a message seq; 0 = nothing read)."""

    chat_id: str
    user_id: str
    seq: int = 0

    def move_to(self, chat: Chat, group: Group | None, seq: int) -> ReadMarkerMoved | None:
        """Markers only move forward; moving back or to the same place changes nothing."""
        authorize(self.user_id, chat, group, Permission.READ_CHAT)
        if not 0 <= seq <= chat.last_seq:
            raise InvalidInput("seq", f"seq must be between 0 and {chat.last_seq}")
        if seq <= self.seq:
            return None
        self.seq = seq
        return ReadMarkerMoved(chat_id=chat.id, user_id=self.user_id, seq=seq)
