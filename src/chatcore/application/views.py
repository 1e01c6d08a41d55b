"""Results of use cases: plain msgspec Structs, ready to serialise, never carrying secrets."""

from __future__ import annotations

from datetime import datetime

import msgspec

from chatcore.domain.chats import Chat
from chatcore.domain.groups import Group, Role
from chatcore.domain.messages import Message, MessageEdit
from chatcore.domain.users import User


class MessageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    chat_id: str
    seq: int
    author_id: str
    body: str
    created_at: datetime
    reply_to: int | None
    client_msg_id: str | None
    edited_at: datetime | None
    deleted: bool

    @classmethod
    def of(cls, m: Message) -> MessageView:
        return cls(
            id=m.id,
            chat_id=m.chat_id,
            seq=m.seq,
            author_id=m.author_id,
            body=m.body,
            created_at=m.created_at,
            reply_to=m.reply_to,
            client_msg_id=m.client_msg_id,
            edited_at=m.edited_at,
            deleted=m.is_deleted,
        )


class EditView(msgspec.Struct, frozen=True, kw_only=True):
    body: str
    replaced_at: datetime

    @classmethod
    def of(cls, e: MessageEdit) -> EditView:
        return cls(body=e.body, replaced_at=e.replaced_at)


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    message: MessageView
    created: bool  # False when a retried client_msg_id returned the original


class MessagePage(msgspec.Struct, frozen=True, kw_only=True):
    messages: list[MessageView]
    has_more: bool  # more messages beyond this page in the direction asked


class ChatView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    title: str | None
    owner_id: str | None
    group_id: str | None
    member_ids: list[str]
    created_at: datetime
    last_seq: int

    @classmethod
    def of(cls, c: Chat) -> ChatView:
        return cls(
            id=c.id,
            kind=c.kind.value,
            title=c.title,
            owner_id=c.owner_id,
            group_id=c.group_id,
            member_ids=list(c.members),
            created_at=c.created_at,
            last_seq=c.last_seq,
        )


class ChatSummary(msgspec.Struct, frozen=True, kw_only=True):
    chat: ChatView
    read_seq: int
    unread_count: int
    last_message: MessageView | None


class ReadMarkerView(msgspec.Struct, frozen=True, kw_only=True):
    chat_id: str
    seq: int
    unread_count: int


class RoleView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    rank: int
    permissions: list[str]
    builtin: bool

    @classmethod
    def of(cls, r: Role) -> RoleView:
        return cls(id=r.id, name=r.name, rank=r.rank, permissions=sorted(r.permissions), builtin=r.builtin)


class GroupMemberView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    role_ids: list[str]
    joined_at: datetime


class GroupView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    description: str
    owner_id: str
    created_at: datetime
    members: list[GroupMemberView]
    roles: list[RoleView]

    @classmethod
    def of(cls, g: Group) -> GroupView:
        return cls(
            id=g.id,
            name=g.name,
            description=g.description,
            owner_id=g.owner_id,
            created_at=g.created_at,
            members=[
                GroupMemberView(user_id=u, role_ids=[r.id for r in g.roles_of(u)], joined_at=m.joined_at)
                for u, m in g.members.items()
            ],
            roles=[RoleView.of(r) for r in sorted(g.roles.values(), key=lambda r: (-r.rank, r.name))],
        )


class ProfileView(msgspec.Struct, frozen=True, kw_only=True):
    """The user's own profile."""

    id: str
    email: str
    display_name: str
    bio: str
    email_verified: bool
    created_at: datetime
    # Notification preferences (defaults keep older constructors and clients working).
    notify_missed_messages: bool = True
    notify_added: bool = True

    @classmethod
    def of(cls, u: User) -> ProfileView:
        return cls(
            id=u.id,
            email=u.email,
            display_name=u.display_name,
            bio=u.bio,
            email_verified=u.email_verified,
            created_at=u.created_at,
            notify_missed_messages=u.notify_missed_messages,
            notify_added=u.notify_added,
        )


class PublicProfileView(msgspec.Struct, frozen=True, kw_only=True):
    """What other users see: no email."""

    id: str
    display_name: str
    bio: str

    @classmethod
    def of(cls, u: User) -> PublicProfileView:
        return cls(id=u.id, display_name=u.display_name, bio=u.bio)
