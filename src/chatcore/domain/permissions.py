"""Permissions and the one function that answers every access question: `permissions_for`.

Guards in the HTTP layer and checks in the aggregates both call this module; no access rule
is written anywhere else.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from chatcore.domain.errors import NotFound, PermissionDenied

if TYPE_CHECKING:
    from chatcore.domain.chats import Chat
    from chatcore.domain.groups import Group


class Permission(StrEnum):
    # Chat scope: granted by chat membership, chat ownership, or (in a group's chats) group roles.
    READ_CHAT = "read_chat"
    SEND_MESSAGES = "send_messages"
    EDIT_OWN_MESSAGES = "edit_own_messages"
    DELETE_OWN_MESSAGES = "delete_own_messages"
    DELETE_ANY_MESSAGE = "delete_any_message"
    ADD_CHAT_MEMBERS = "add_chat_members"
    REMOVE_CHAT_MEMBERS = "remove_chat_members"
    EDIT_CHAT_INFO = "edit_chat_info"
    TRANSFER_CHAT_OWNERSHIP = "transfer_chat_ownership"
    # Group scope.
    VIEW_GROUP = "view_group"
    CREATE_CHATS = "create_chats"
    ADD_GROUP_MEMBERS = "add_group_members"
    REMOVE_GROUP_MEMBERS = "remove_group_members"
    MANAGE_ROLES = "manage_roles"
    MANAGE_GROUP = "manage_group"
    DELETE_GROUP = "delete_group"
    TRANSFER_GROUP_OWNERSHIP = "transfer_group_ownership"


P = Permission

CHAT_SCOPE: frozenset[Permission] = frozenset(
    {
        P.READ_CHAT,
        P.SEND_MESSAGES,
        P.EDIT_OWN_MESSAGES,
        P.DELETE_OWN_MESSAGES,
        P.DELETE_ANY_MESSAGE,
        P.ADD_CHAT_MEMBERS,
        P.REMOVE_CHAT_MEMBERS,
        P.EDIT_CHAT_INFO,
        P.TRANSFER_CHAT_OWNERSHIP,
    }
)

# Membership itself grants sight of the object; roles cannot take it away or hand it out.
IMPLIED_BY_MEMBERSHIP: frozenset[Permission] = frozenset({P.READ_CHAT, P.VIEW_GROUP})
# Held only through ownership: no role other than the group owner's can carry them.
OWNERSHIP_ONLY: frozenset[Permission] = frozenset(
    {P.TRANSFER_CHAT_OWNERSHIP, P.TRANSFER_GROUP_OWNERSHIP, P.DELETE_GROUP}
)
ROLE_GRANTABLE: frozenset[Permission] = frozenset(Permission) - OWNERSHIP_ONLY - IMPLIED_BY_MEMBERSHIP

ROLE_MESSAGING: frozenset[Permission] = frozenset(
    {P.SEND_MESSAGES, P.EDIT_OWN_MESSAGES, P.DELETE_OWN_MESSAGES}
)
MESSAGING: frozenset[Permission] = ROLE_MESSAGING | {P.READ_CHAT}
DIRECT_MEMBER: frozenset[Permission] = MESSAGING
STANDALONE_MEMBER: frozenset[Permission] = MESSAGING
CHAT_OWNER: frozenset[Permission] = CHAT_SCOPE

# Built-in group roles. Rank orders roles: a higher rank may act on lower ranks only.
OWNER_RANK = 1000
ADMIN_RANK = 100
MEMBER_RANK = 0
# A chat's owner outranks everyone inside that chat; nobody can remove the owner.
CHAT_OWNER_RANK = OWNER_RANK + 1

OWNER_ROLE_PERMISSIONS: frozenset[Permission] = ROLE_GRANTABLE | {
    P.TRANSFER_GROUP_OWNERSHIP,
    P.DELETE_GROUP,
}
ADMIN_ROLE_PERMISSIONS: frozenset[Permission] = frozenset(
    {
        P.CREATE_CHATS,
        P.ADD_GROUP_MEMBERS,
        P.REMOVE_GROUP_MEMBERS,
        P.MANAGE_ROLES,
        P.MANAGE_GROUP,
        P.DELETE_ANY_MESSAGE,
        P.ADD_CHAT_MEMBERS,
        P.REMOVE_CHAT_MEMBERS,
        P.EDIT_CHAT_INFO,
    }
    | ROLE_MESSAGING
)
MEMBER_ROLE_PERMISSIONS: frozenset[Permission] = (
    frozenset({P.CREATE_CHATS, P.ADD_CHAT_MEMBERS}) | ROLE_MESSAGING
)


def group_permissions(user_id: str, group: Group) -> frozenset[Permission]:
    """Union of the permissions of every role the user holds in the group (none if not a member)."""
    if not group.is_member(user_id):
        return frozenset()
    granted: set[Permission] = {P.VIEW_GROUP}
    for role in group.roles_of(user_id):
        granted |= role.permissions
    return frozenset(granted)


def permissions_for(user_id: str, chat: Chat | None, group: Group | None) -> frozenset[Permission]:
    """Everything `user_id` may do on `chat` (or, with no chat, on `group`).

    A non-member of a chat holds nothing on it, whatever their group roles: membership is the
    gate, roles only shape what members may do.
    """
    if chat is None:
        return group_permissions(user_id, group) if group is not None else frozenset()
    if not chat.is_member(user_id):
        return frozenset()
    if chat.is_direct:
        return DIRECT_MEMBER
    if chat.group_id is None:
        granted = set(STANDALONE_MEMBER)
    else:
        if group is None or group.id != chat.group_id:
            raise ValueError("a group chat's permissions need its own group")
        granted = set(group_permissions(user_id, group) & CHAT_SCOPE) | {P.READ_CHAT}
    if chat.owner_id == user_id:
        granted |= CHAT_OWNER
    return frozenset(granted)


def rank_in(user_id: str, chat: Chat | None, group: Group | None) -> int:
    """How high `user_id` stands where the action happens; -1 for a stranger."""
    if chat is not None:
        if not chat.is_member(user_id):
            return -1
        if chat.owner_id == user_id:
            return CHAT_OWNER_RANK
        if chat.group_id is None or group is None:
            return MEMBER_RANK
    if group is None or not group.is_member(user_id):
        return -1
    return group.rank_of(user_id)


def authorize(user_id: str, chat: Chat | None, group: Group | None, permission: Permission) -> None:
    """Raise unless `user_id` holds `permission`; a caller who cannot even see the object gets NotFound."""
    granted = permissions_for(user_id, chat, group)
    visible = P.READ_CHAT if chat is not None else P.VIEW_GROUP
    if visible not in granted:
        raise NotFound("chat" if chat is not None else "group")
    if permission not in granted:
        raise PermissionDenied(permission.value)


def require_outranks(actor_id: str, target_id: str, chat: Chat | None, group: Group | None) -> None:
    """Nobody acts on a member ranked at or above themselves."""
    if rank_in(target_id, chat, group) >= rank_in(actor_id, chat, group):
        raise PermissionDenied("rank", "cannot act on a member ranked at or above you")
