"""Domain events: every change a client must see, written to the log with the change itself.

Each event belongs to one stream (a chat, a group or a user); the log numbers each stream's
events 1, 2, 3, ... and a client's cursor records how far it has read each stream.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    @property
    def stream_id(self) -> str:
        raise NotImplementedError

    @property
    def wakes(self) -> tuple[str, ...]:
        """User streams to wake besides the event's own: users who gain or lose sight of a stream."""
        return ()


class ChatEvent(DomainEvent, frozen=True, kw_only=True):
    chat_id: str

    @property
    def stream_id(self) -> str:
        return self.chat_id


class GroupEvent(DomainEvent, frozen=True, kw_only=True):
    group_id: str

    @property
    def stream_id(self) -> str:
        return self.group_id


class UserEvent(DomainEvent, frozen=True, kw_only=True):
    user_id: str

    @property
    def stream_id(self) -> str:
        return self.user_id


# -- chats ----------------------------------------------------------------------------------


class ChatCreated(ChatEvent, frozen=True, kw_only=True, tag="chat.created"):
    kind: str
    title: str | None
    owner_id: str | None
    group_id: str | None
    member_ids: tuple[str, ...]

    @property
    def wakes(self) -> tuple[str, ...]:
        return self.member_ids


class ChatUpdated(ChatEvent, frozen=True, kw_only=True, tag="chat.updated"):
    title: str | None
    group_id: str | None
    by: str


class ChatMemberAdded(ChatEvent, frozen=True, kw_only=True, tag="chat.member_added"):
    user_id: str
    by: str

    @property
    def wakes(self) -> tuple[str, ...]:
        return (self.user_id,)


class ChatMemberRemoved(ChatEvent, frozen=True, kw_only=True, tag="chat.member_removed"):
    """Also emitted when a member leaves (then `by == user_id`)."""

    user_id: str
    by: str

    @property
    def wakes(self) -> tuple[str, ...]:
        return (self.user_id,)


class ChatOwnershipTransferred(ChatEvent, frozen=True, kw_only=True, tag="chat.owner_changed"):
    previous_owner_id: str | None
    new_owner_id: str


class MessagePosted(ChatEvent, frozen=True, kw_only=True, tag="message.posted"):
    message_id: str
    seq: int
    author_id: str
    body: str
    reply_to: int | None
    client_msg_id: str | None
    created_at: datetime


class MessageEdited(ChatEvent, frozen=True, kw_only=True, tag="message.edited"):
    message_id: str
    seq: int
    body: str
    edited_at: datetime


class MessageDeleted(ChatEvent, frozen=True, kw_only=True, tag="message.deleted"):
    message_id: str
    seq: int
    by: str


class ReadMarkerMoved(ChatEvent, frozen=True, kw_only=True, tag="chat.read"):
    user_id: str
    seq: int


# -- groups ---------------------------------------------------------------------------------


class GroupCreated(GroupEvent, frozen=True, kw_only=True, tag="group.created"):
    name: str
    owner_id: str

    @property
    def wakes(self) -> tuple[str, ...]:
        return (self.owner_id,)


class GroupUpdated(GroupEvent, frozen=True, kw_only=True, tag="group.updated"):
    name: str
    description: str
    by: str


class GroupDeleted(GroupEvent, frozen=True, kw_only=True, tag="group.deleted"):
    by: str


class GroupMemberAdded(GroupEvent, frozen=True, kw_only=True, tag="group.member_added"):
    user_id: str
    by: str

    @property
    def wakes(self) -> tuple[str, ...]:
        return (self.user_id,)


class GroupMemberRemoved(GroupEvent, frozen=True, kw_only=True, tag="group.member_removed"):
    user_id: str
    by: str

    @property
    def wakes(self) -> tuple[str, ...]:
        return (self.user_id,)


class RoleDefined(GroupEvent, frozen=True, kw_only=True, tag="group.role_defined"):
    role_id: str
    name: str
    rank: int
    permissions: tuple[str, ...]
    by: str


class RoleDeleted(GroupEvent, frozen=True, kw_only=True, tag="group.role_deleted"):
    role_id: str
    by: str


class RoleAssigned(GroupEvent, frozen=True, kw_only=True, tag="group.role_assigned"):
    user_id: str
    role_id: str
    by: str


class RoleUnassigned(GroupEvent, frozen=True, kw_only=True, tag="group.role_unassigned"):
    user_id: str
    role_id: str
    by: str


class GroupOwnershipTransferred(GroupEvent, frozen=True, kw_only=True, tag="group.owner_changed"):
    previous_owner_id: str
    new_owner_id: str


# -- users ----------------------------------------------------------------------------------


class UserRegistered(UserEvent, frozen=True, kw_only=True, tag="user.registered"):
    email: str


class ProfileUpdated(UserEvent, frozen=True, kw_only=True, tag="user.profile_updated"):
    display_name: str
    bio: str


class SessionsRevoked(UserEvent, frozen=True, kw_only=True, tag="user.sessions_revoked"):
    """Sessions ended (logout, revocation, password change): their open connections close.

    `session_id` names one session; None means every session but `kept_session_id`.
    """

    session_id: str | None
    kept_session_id: str | None = None
    reason: str

    def ends(self, session_id: str) -> bool:
        if self.session_id is not None:
            return self.session_id == session_id
        return session_id != self.kept_session_id


def visibility_change(event: DomainEvent, user_id: str) -> bool | None:
    """True when the event lets `user_id` see its stream, False when it shuts them out, else None.

    A user reads a chat's or group's events from the one that let them in up to the one that
    shut them out, both included: that is how they learn of the change.
    """
    match event:
        case ChatCreated(member_ids=members):
            return True if user_id in members else None
        case ChatMemberAdded(user_id=u) | GroupMemberAdded(user_id=u):
            return True if u == user_id else None
        case ChatMemberRemoved(user_id=u) | GroupMemberRemoved(user_id=u):
            return False if u == user_id else None
        case GroupCreated(owner_id=owner):
            return True if owner == user_id else None
        case GroupDeleted():
            return False
    return None


AnyEvent = (
    ChatCreated
    | ChatUpdated
    | ChatMemberAdded
    | ChatMemberRemoved
    | ChatOwnershipTransferred
    | MessagePosted
    | MessageEdited
    | MessageDeleted
    | ReadMarkerMoved
    | GroupCreated
    | GroupUpdated
    | GroupDeleted
    | GroupMemberAdded
    | GroupMemberRemoved
    | RoleDefined
    | RoleDeleted
    | RoleAssigned
    | RoleUnassigned
    | GroupOwnershipTransferred
    | UserRegistered
    | ProfileUpdated
    | SessionsRevoked
)


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored in the log: its stream, its gapless per-stream seq, and when."""

    id: str
    stream_id: str
    seq: int
    occurred_at: datetime
    event: AnyEvent
