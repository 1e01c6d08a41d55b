"""Group use cases: the group's info, members, roles and ownership."""

from __future__ import annotations

from datetime import datetime

import msgspec

from chatcore.application.common import UseCase, load_group, require_user
from chatcore.application.views import GroupView
from chatcore.domain.errors import InvalidInput
from chatcore.domain.events import GroupMemberRemoved
from chatcore.domain.groups import Group
from chatcore.domain.permissions import Permission, authorize
from chatcore.ports.unit_of_work import UnitOfWork


def _permissions(field: str, names: list[str]) -> frozenset[Permission]:
    try:
        return frozenset(Permission(n) for n in names)
    except ValueError as exc:
        raise InvalidInput(field, str(exc)) from None


async def _save(uow: UnitOfWork, group: Group) -> GroupView:
    await uow.groups.save(group)
    return GroupView.of(group)


class CreateGroupCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    name: str
    description: str = ""


class CreateGroup(UseCase):
    async def __call__(self, cmd: CreateGroupCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group, event = Group.create(
                group_id=self.deps.ids.new_id(),
                name=cmd.name,
                description=cmd.description,
                owner_id=cmd.actor,
                now=self.deps.clock.now(),
                limits=self.deps.limits,
            )
            await uow.groups.add(group)
            uow.record(event)
            return GroupView.of(group)

        return await self.transaction(work)


class GetGroup(UseCase):
    async def __call__(self, actor: str, group_id: str) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, group_id)
            authorize(actor, None, group, Permission.VIEW_GROUP)
            return GroupView.of(group)

        return await self.read(work)


class ListMyGroups(UseCase):
    async def __call__(self, actor: str) -> list[GroupView]:
        async def work(uow: UnitOfWork) -> list[GroupView]:
            return [GroupView.of(g) for g in await uow.groups.list_for_user(actor)]

        return await self.read(work)


class UpdateGroupCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    group_id: str
    name: str | None = None
    description: str | None = None


class UpdateGroup(UseCase):
    async def __call__(self, cmd: UpdateGroupCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(
                group.update_info(
                    cmd.actor, name=cmd.name, description=cmd.description, limits=self.deps.limits
                )
            )
            return await _save(uow, group)

        return await self.transaction(work)


class DeleteGroup(UseCase):
    """Delete a group. Its chats live on as standalone chats, each with its owner."""

    async def __call__(self, actor: str, group_id: str) -> None:
        async def work(uow: UnitOfWork) -> None:
            group = await load_group(uow, group_id)
            uow.record(group.delete(actor))
            for chat in await uow.chats.list_by_group(group.id):
                uow.record(chat.detach_from_group(actor))
                await uow.chats.save(chat)
            await uow.groups.delete(group.id)

        await self.transaction(work)


class GroupMemberCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    group_id: str
    user_id: str


class AddGroupMember(UseCase):
    async def __call__(self, cmd: GroupMemberCommand) -> GroupView:
        await self.throttle(cmd.actor, self.deps.rates.invite)

        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            authorize(cmd.actor, None, group, Permission.ADD_GROUP_MEMBERS)
            await require_user(uow, cmd.user_id)
            uow.record(group.add_member(cmd.actor, cmd.user_id, self.deps.clock.now(), self.deps.limits))
            return await _save(uow, group)

        return await self.transaction(work)


async def _leave_group_chats(
    uow: UnitOfWork, group: Group, removed: GroupMemberRemoved, now: datetime
) -> None:
    """Whoever leaves a group leaves its chats in the same unit of work."""
    for chat in await uow.chats.list_by_group(group.id):
        events = chat.drop_group_member(removed.user_id, group, removed.by, now)
        for event in events:
            uow.record(event)
        if events:
            await uow.chats.save(chat)


class RemoveGroupMember(UseCase):
    async def __call__(self, cmd: GroupMemberCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            removed = group.remove_member(cmd.actor, cmd.user_id)
            uow.record(removed)
            await _leave_group_chats(uow, group, removed, self.deps.clock.now())
            return await _save(uow, group)

        return await self.transaction(work)


class LeaveGroup(UseCase):
    async def __call__(self, actor: str, group_id: str) -> None:
        async def work(uow: UnitOfWork) -> None:
            group = await load_group(uow, group_id)
            removed = group.leave(actor)
            uow.record(removed)
            await _leave_group_chats(uow, group, removed, self.deps.clock.now())
            await uow.groups.save(group)

        await self.transaction(work)


class TransferGroupOwnership(UseCase):
    async def __call__(self, cmd: GroupMemberCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(group.transfer_ownership(cmd.actor, cmd.user_id))
            return await _save(uow, group)

        return await self.transaction(work)


class DefineRoleCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    group_id: str
    name: str
    rank: int
    permissions: list[str]


class DefineRole(UseCase):
    async def __call__(self, cmd: DefineRoleCommand) -> GroupView:
        # Parsed before the group is loaded: an outsider must get the same answer for an
        # existing group as for a missing one, never an error that reveals the group exists.
        permissions = _permissions("permissions", cmd.permissions)

        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(
                group.define_role(
                    cmd.actor,
                    role_id=self.deps.ids.new_id(),
                    name=cmd.name,
                    rank=cmd.rank,
                    permissions=permissions,
                    limits=self.deps.limits,
                )
            )
            return await _save(uow, group)

        return await self.transaction(work)


class EditRoleCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    group_id: str
    role_id: str
    name: str | None = None
    rank: int | None = None
    permissions: list[str] | None = None


class EditRole(UseCase):
    async def __call__(self, cmd: EditRoleCommand) -> GroupView:
        # Parsed before the group is loaded, as in DefineRole, so that errors never reveal a group.
        permissions = None if cmd.permissions is None else _permissions("permissions", cmd.permissions)

        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(
                group.edit_role(
                    cmd.actor,
                    cmd.role_id,
                    name=cmd.name,
                    rank=cmd.rank,
                    permissions=permissions,
                    limits=self.deps.limits,
                )
            )
            return await _save(uow, group)

        return await self.transaction(work)


class DeleteRole(UseCase):
    async def __call__(self, actor: str, group_id: str, role_id: str) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, group_id)
            uow.record(group.delete_role(actor, role_id))
            return await _save(uow, group)

        return await self.transaction(work)


class RoleAssignmentCommand(msgspec.Struct, frozen=True, kw_only=True):
    actor: str
    group_id: str
    user_id: str
    role_id: str


class AssignRole(UseCase):
    async def __call__(self, cmd: RoleAssignmentCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(group.assign_role(cmd.actor, cmd.user_id, cmd.role_id))
            return await _save(uow, group)

        return await self.transaction(work)


class UnassignRole(UseCase):
    async def __call__(self, cmd: RoleAssignmentCommand) -> GroupView:
        async def work(uow: UnitOfWork) -> GroupView:
            group = await load_group(uow, cmd.group_id)
            uow.record(group.unassign_role(cmd.actor, cmd.user_id, cmd.role_id))
            return await _save(uow, group)

        return await self.transaction(work)
