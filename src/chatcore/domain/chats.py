"""Chats: direct (exactly two people, no owner) or group (an owner and members, maybe in a Group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from chatcore.domain.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from chatcore.domain.events import (
    ChatCreated,
    ChatMemberAdded,
    ChatMemberRemoved,
    ChatOwnershipTransferred,
    ChatUpdated,
)
from chatcore.domain.groups import Group
from chatcore.domain.limits import Limits
from chatcore.domain.permissions import Permission, authorize, require_outranks
from chatcore.domain.text import clean_name


class ChatKind(StrEnum):
    DIRECT = "direct"
    GROUP = "group"


def direct_key(a: str, b: str) -> str:
    """The one key of the pair's direct chat, whoever opens it: the store keeps it unique."""
    low, high = sorted((a, b))
    return f"{low}:{high}"


@dataclass(slots=True)
class ChatMember:
    user_id: str
    joined_at: datetime


@dataclass(slots=True)
class Chat:
    id: str
    kind: ChatKind
    created_at: datetime
    title: str | None = None
    owner_id: str | None = None
    group_id: str | None = None
    members: dict[str, ChatMember] = field(default_factory=dict)
    last_seq: int = 0  # seq of the newest message; messages are numbered 1..last_seq

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def open_direct(cls, *, chat_id: str, opener: str, other: str, now: datetime) -> tuple[Chat, ChatCreated]:
        if opener == other:
            raise InvalidInput("user_id", "a direct chat needs two different users")
        chat = cls(chat_id, ChatKind.DIRECT, now)
        chat.members = {u: ChatMember(u, now) for u in sorted((opener, other))}
        return chat, chat._created_event()

    @classmethod
    def create_group_chat(
        cls,
        *,
        chat_id: str,
        creator: str,
        title: str,
        member_ids: list[str],
        group: Group | None,
        now: datetime,
        limits: Limits,
    ) -> tuple[Chat, ChatCreated]:
        if group is not None:
            authorize(creator, None, group, Permission.CREATE_CHATS)
            if any(not group.is_member(u) for u in member_ids):
                raise InvalidInput("member_ids", "every member must belong to the chat's group")
        everyone = dict.fromkeys([creator, *member_ids])
        if len(everyone) > limits.max_members_per_chat:
            raise LimitExceeded("member_ids", limits.max_members_per_chat)
        chat = cls(
            chat_id,
            ChatKind.GROUP,
            now,
            title=clean_name("title", title, limits.max_chat_title_chars),
            owner_id=creator,
            group_id=group.id if group is not None else None,
            members={u: ChatMember(u, now) for u in everyone},
        )
        return chat, chat._created_event()

    def _created_event(self) -> ChatCreated:
        return ChatCreated(
            chat_id=self.id,
            kind=self.kind.value,
            title=self.title,
            owner_id=self.owner_id,
            group_id=self.group_id,
            member_ids=tuple(self.members),
        )

    # -- queries ----------------------------------------------------------------------------

    @property
    def is_direct(self) -> bool:
        return self.kind is ChatKind.DIRECT

    @property
    def direct_key(self) -> str | None:
        return direct_key(*self.members) if self.is_direct else None

    def is_member(self, user_id: str) -> bool:
        return user_id in self.members

    def next_seq(self) -> int:
        """Take the next message seq; saved with the chat in the same unit of work, so no gap."""
        self.last_seq += 1
        return self.last_seq

    # -- changes ----------------------------------------------------------------------------

    def rename(self, actor: str, title: str, group: Group | None, limits: Limits) -> ChatUpdated:
        authorize(actor, self, group, Permission.EDIT_CHAT_INFO)
        self.title = clean_name("title", title, limits.max_chat_title_chars)
        return ChatUpdated(chat_id=self.id, title=self.title, group_id=self.group_id, by=actor)

    def add_member(
        self, actor: str, user_id: str, group: Group | None, now: datetime, limits: Limits
    ) -> ChatMemberAdded:
        authorize(actor, self, group, Permission.ADD_CHAT_MEMBERS)
        if user_id in self.members:
            raise Conflict("already a member of the chat")
        if group is not None and not group.is_member(user_id):
            raise InvalidInput("user_id", "the user must belong to the chat's group")
        if len(self.members) >= limits.max_members_per_chat:
            raise LimitExceeded("members", limits.max_members_per_chat)
        self.members[user_id] = ChatMember(user_id, now)
        return ChatMemberAdded(chat_id=self.id, user_id=user_id, by=actor)

    def remove_member(self, actor: str, user_id: str, group: Group | None) -> ChatMemberRemoved:
        authorize(actor, self, group, Permission.REMOVE_CHAT_MEMBERS)
        if user_id not in self.members:
            raise NotFound("member")
        require_outranks(actor, user_id, self, group)
        del self.members[user_id]
        return ChatMemberRemoved(chat_id=self.id, user_id=user_id, by=actor)

    def leave(self, user_id: str) -> ChatMemberRemoved:
        if user_id not in self.members:
            raise NotFound("chat")
        if self.is_direct:
            raise Conflict("a direct chat cannot be left")
        if user_id == self.owner_id:
            raise Conflict("the owner must transfer ownership before leaving")
        del self.members[user_id]
        return ChatMemberRemoved(chat_id=self.id, user_id=user_id, by=user_id)

    def transfer_ownership(
        self, actor: str, new_owner_id: str, group: Group | None
    ) -> ChatOwnershipTransferred:
        authorize(actor, self, group, Permission.TRANSFER_CHAT_OWNERSHIP)
        if new_owner_id == actor:
            raise InvalidInput("user_id", "already the owner")
        if new_owner_id not in self.members:
            raise NotFound("member")
        self.owner_id = new_owner_id
        return ChatOwnershipTransferred(chat_id=self.id, previous_owner_id=actor, new_owner_id=new_owner_id)

    def drop_group_member(
        self, user_id: str, group: Group, by: str, now: datetime
    ) -> list[ChatMemberAdded | ChatOwnershipTransferred | ChatMemberRemoved]:
        """The user left or was removed from the chat's group: they leave the chat too.

        Ownership of a chat they owned passes to the group's owner, so the chat keeps one owner.
        """
        events: list[ChatMemberAdded | ChatOwnershipTransferred | ChatMemberRemoved] = []
        if user_id not in self.members:
            return events
        if self.owner_id == user_id:
            heir = group.owner_id
            if heir not in self.members:
                self.members[heir] = ChatMember(heir, now)
                events.append(ChatMemberAdded(chat_id=self.id, user_id=heir, by=by))
            self.owner_id = heir
            events.append(
                ChatOwnershipTransferred(chat_id=self.id, previous_owner_id=user_id, new_owner_id=heir)
            )
        del self.members[user_id]
        events.append(ChatMemberRemoved(chat_id=self.id, user_id=user_id, by=by))
        return events

    def detach_from_group(self, by: str) -> ChatUpdated:
        """The chat's group was deleted: the chat lives on as a standalone chat with its owner."""
        self.group_id = None
        return ChatUpdated(chat_id=self.id, title=self.title, group_id=None, by=by)
