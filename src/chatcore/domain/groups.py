"""Groups (communities) and their roles: what each role of member may do is the owner's choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from chatcore.domain.errors import Conflict, InvalidInput, LimitExceeded, NotFound, PermissionDenied
from chatcore.domain.events import (
    GroupCreated,
    GroupDeleted,
    GroupMemberAdded,
    GroupMemberRemoved,
    GroupOwnershipTransferred,
    GroupUpdated,
    RoleAssigned,
    RoleDefined,
    RoleDeleted,
    RoleUnassigned,
)
from chatcore.domain.limits import Limits
from chatcore.domain.permissions import (
    ADMIN_RANK,
    ADMIN_ROLE_PERMISSIONS,
    MEMBER_RANK,
    MEMBER_ROLE_PERMISSIONS,
    OWNER_RANK,
    OWNER_ROLE_PERMISSIONS,
    ROLE_GRANTABLE,
    Permission,
    authorize,
    group_permissions,
    rank_in,
    require_outranks,
)
from chatcore.domain.text import clean_name, clean_text

OWNER_ROLE_ID = "owner"
ADMIN_ROLE_ID = "admin"
MEMBER_ROLE_ID = "member"


@dataclass(slots=True)
class Role:
    id: str
    name: str
    rank: int
    permissions: frozenset[Permission]
    builtin: bool = False

    def defined_event(self, group_id: str, by: str) -> RoleDefined:
        return RoleDefined(
            group_id=group_id,
            role_id=self.id,
            name=self.name,
            rank=self.rank,
            permissions=tuple(sorted(self.permissions)),
            by=by,
        )


def builtin_roles() -> dict[str, Role]:
    return {
        OWNER_ROLE_ID: Role(OWNER_ROLE_ID, "owner", OWNER_RANK, OWNER_ROLE_PERMISSIONS, builtin=True),
        ADMIN_ROLE_ID: Role(ADMIN_ROLE_ID, "admin", ADMIN_RANK, ADMIN_ROLE_PERMISSIONS, builtin=True),
        MEMBER_ROLE_ID: Role(MEMBER_ROLE_ID, "member", MEMBER_RANK, MEMBER_ROLE_PERMISSIONS, builtin=True),
    }


@dataclass(slots=True)
class GroupMember:
    user_id: str
    joined_at: datetime
    # Assigned roles only: everyone holds `member`, and `owner` follows Group.owner_id.
    role_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Group:
    id: str
    name: str
    description: str
    owner_id: str
    created_at: datetime
    members: dict[str, GroupMember] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=builtin_roles)

    @classmethod
    def create(
        cls, *, group_id: str, name: str, description: str, owner_id: str, now: datetime, limits: Limits
    ) -> tuple[Group, GroupCreated]:
        group = cls(
            id=group_id,
            name=clean_name("name", name, limits.max_group_name_chars),
            description=clean_text(
                "description", description, limits.max_description_chars, allow_empty=True
            ),
            owner_id=owner_id,
            created_at=now,
        )
        group.members[owner_id] = GroupMember(owner_id, now)
        return group, GroupCreated(group_id=group_id, name=group.name, owner_id=owner_id)

    # -- queries ----------------------------------------------------------------------------

    def is_member(self, user_id: str) -> bool:
        return user_id in self.members

    def roles_of(self, user_id: str) -> list[Role]:
        if user_id not in self.members:
            return []
        held = [self.roles[MEMBER_ROLE_ID]]
        held += [self.roles[r] for r in sorted(self.members[user_id].role_ids) if r in self.roles]
        if user_id == self.owner_id:
            held.append(self.roles[OWNER_ROLE_ID])
        return held

    def rank_of(self, user_id: str) -> int:
        return max((role.rank for role in self.roles_of(user_id)), default=-1)

    def role(self, role_id: str) -> Role:
        if role_id not in self.roles:
            raise NotFound("role")
        return self.roles[role_id]

    def _member(self, user_id: str) -> GroupMember:
        if user_id not in self.members:
            raise NotFound("member")
        return self.members[user_id]

    # -- group info -------------------------------------------------------------------------

    def update_info(
        self, actor: str, *, name: str | None, description: str | None, limits: Limits
    ) -> GroupUpdated:
        authorize(actor, None, self, Permission.MANAGE_GROUP)
        if name is not None:
            self.name = clean_name("name", name, limits.max_group_name_chars)
        if description is not None:
            self.description = clean_text(
                "description", description, limits.max_description_chars, allow_empty=True
            )
        return GroupUpdated(group_id=self.id, name=self.name, description=self.description, by=actor)

    def delete(self, actor: str) -> GroupDeleted:
        authorize(actor, None, self, Permission.DELETE_GROUP)
        return GroupDeleted(group_id=self.id, by=actor)

    # -- membership -------------------------------------------------------------------------

    def add_member(self, actor: str, user_id: str, now: datetime, limits: Limits) -> GroupMemberAdded:
        authorize(actor, None, self, Permission.ADD_GROUP_MEMBERS)
        if user_id in self.members:
            raise Conflict("already a member of the group")
        if len(self.members) >= limits.max_members_per_group:
            raise LimitExceeded("members", limits.max_members_per_group)
        self.members[user_id] = GroupMember(user_id, now)
        return GroupMemberAdded(group_id=self.id, user_id=user_id, by=actor)

    def remove_member(self, actor: str, user_id: str) -> GroupMemberRemoved:
        authorize(actor, None, self, Permission.REMOVE_GROUP_MEMBERS)
        self._member(user_id)
        require_outranks(actor, user_id, None, self)
        del self.members[user_id]
        return GroupMemberRemoved(group_id=self.id, user_id=user_id, by=actor)

    def leave(self, user_id: str) -> GroupMemberRemoved:
        if user_id not in self.members:
            raise NotFound("group")
        if user_id == self.owner_id:
            raise Conflict("the owner must transfer ownership before leaving")
        del self.members[user_id]
        return GroupMemberRemoved(group_id=self.id, user_id=user_id, by=user_id)

    def transfer_ownership(self, actor: str, new_owner_id: str) -> GroupOwnershipTransferred:
        authorize(actor, None, self, Permission.TRANSFER_GROUP_OWNERSHIP)
        if new_owner_id == actor:
            raise InvalidInput("user_id", "already the owner")
        self._member(new_owner_id)
        self.owner_id = new_owner_id
        # The former owner keeps administrative powers rather than falling to a plain member.
        self.members[actor].role_ids.add(ADMIN_ROLE_ID)
        return GroupOwnershipTransferred(group_id=self.id, previous_owner_id=actor, new_owner_id=new_owner_id)

    # -- roles ------------------------------------------------------------------------------

    def _check_grantable(self, actor: str, rank: int, permissions: frozenset[Permission]) -> None:
        """Nobody creates or hands out a role at or above their rank, or one granting what they lack."""
        if rank >= rank_in(actor, None, self):
            raise PermissionDenied("rank", "cannot grant a role ranked at or above your own")
        lacking = permissions - group_permissions(actor, self)
        if lacking:
            raise PermissionDenied(sorted(lacking)[0].value, "cannot grant a permission you do not hold")

    def _clean_role(
        self, role: Role | None, name: str, rank: int, permissions: frozenset[Permission], limits: Limits
    ) -> tuple[str, int, frozenset[Permission]]:
        if role is not None and role.builtin:
            # Built-in roles keep their name and rank; the owner configures only what they allow.
            if name != role.name or rank != role.rank:
                field_name = "name" if name != role.name else "rank"
                raise InvalidInput(field_name, "built-in roles keep their name and rank")
        else:
            name = clean_name("name", name, limits.max_role_name_chars)
            if not MEMBER_RANK < rank < OWNER_RANK:
                raise InvalidInput("rank", f"rank must be between {MEMBER_RANK + 1} and {OWNER_RANK - 1}")
        role_id = role.id if role is not None else None
        if any(r.name.casefold() == name.casefold() and r.id != role_id for r in self.roles.values()):
            raise Conflict("a role with this name exists")
        if not permissions <= ROLE_GRANTABLE:
            bad = sorted(permissions - ROLE_GRANTABLE)[0]
            raise InvalidInput("permissions", f"{bad.value} cannot be granted by a role")
        return name, rank, permissions

    def define_role(
        self,
        actor: str,
        *,
        role_id: str,
        name: str,
        rank: int,
        permissions: frozenset[Permission],
        limits: Limits,
    ) -> RoleDefined:
        authorize(actor, None, self, Permission.MANAGE_ROLES)
        if len(self.roles) >= limits.max_roles_per_group:
            raise LimitExceeded("roles", limits.max_roles_per_group)
        name, rank, permissions = self._clean_role(None, name, rank, permissions, limits)
        self._check_grantable(actor, rank, permissions)
        role = Role(role_id, name, rank, permissions)
        self.roles[role_id] = role
        return role.defined_event(self.id, actor)

    def edit_role(
        self,
        actor: str,
        role_id: str,
        *,
        name: str | None,
        rank: int | None,
        permissions: frozenset[Permission] | None,
        limits: Limits,
    ) -> RoleDefined:
        authorize(actor, None, self, Permission.MANAGE_ROLES)
        role = self.role(role_id)
        self._check_grantable(actor, role.rank, frozenset())  # only roles below the actor move
        new_name, new_rank, new_permissions = self._clean_role(
            role,
            role.name if name is None else name,
            role.rank if rank is None else rank,
            role.permissions if permissions is None else permissions,
            limits,
        )
        self._check_grantable(actor, new_rank, new_permissions - role.permissions)
        role.name, role.rank, role.permissions = new_name, new_rank, new_permissions
        return role.defined_event(self.id, actor)

    def delete_role(self, actor: str, role_id: str) -> RoleDeleted:
        authorize(actor, None, self, Permission.MANAGE_ROLES)
        role = self.role(role_id)
        if role.builtin:
            raise Conflict("built-in roles cannot be deleted")
        self._check_grantable(actor, role.rank, frozenset())
        del self.roles[role_id]
        for member in self.members.values():
            member.role_ids.discard(role_id)
        return RoleDeleted(group_id=self.id, role_id=role_id, by=actor)

    def _assignable(self, actor: str, user_id: str, role_id: str) -> tuple[GroupMember, Role]:
        authorize(actor, None, self, Permission.MANAGE_ROLES)
        member = self._member(user_id)
        role = self.role(role_id)
        if role.id in (OWNER_ROLE_ID, MEMBER_ROLE_ID):
            raise InvalidInput("role_id", f"the {role.name} role is not assigned by hand")
        require_outranks(actor, user_id, None, self)
        self._check_grantable(actor, role.rank, role.permissions)
        return member, role

    def assign_role(self, actor: str, user_id: str, role_id: str) -> RoleAssigned:
        member, role = self._assignable(actor, user_id, role_id)
        if role.id in member.role_ids:
            raise Conflict("the member already holds this role")
        member.role_ids.add(role.id)
        return RoleAssigned(group_id=self.id, user_id=user_id, role_id=role.id, by=actor)

    def unassign_role(self, actor: str, user_id: str, role_id: str) -> RoleUnassigned:
        member, role = self._assignable(actor, user_id, role_id)
        if role.id not in member.role_ids:
            raise Conflict("the member does not hold this role")
        member.role_ids.discard(role.id)
        return RoleUnassigned(group_id=self.id, user_id=user_id, role_id=role.id, by=actor)
