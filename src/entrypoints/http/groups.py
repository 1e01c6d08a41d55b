"""/v1/groups: groups, their members, roles, role assignments and ownership."""

from __future__ import annotations

from litestar import Controller, Response
from litestar.params import FromPath
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from chatcore.application.groups import (
    CreateGroupCommand,
    DefineRoleCommand,
    EditRoleCommand,
    GroupMemberCommand,
    RoleAssignmentCommand,
    UpdateGroupCommand,
)
from chatcore.application.views import GroupView, RoleView
from chatcore.domain.errors import NotFound
from chatcore.domain.permissions import Permission
from entrypoints.http.deps import Actor, Service
from entrypoints.http.guards import requires
from entrypoints.http.routing import delete, get, patch, post, put
from entrypoints.http.schemas import (
    CreateGroupRequest,
    DefineRoleRequest,
    EditRoleRequest,
    GroupList,
    JSONBody,
    RoleList,
    UpdateGroupRequest,
    UserRefRequest,
)

GROUP = "/{group_id:str}"
ROLE = GROUP + "/roles/{role_id:str}"

P = Permission


def _role(group: GroupView, role_id: FromPath[str]) -> RoleView:
    for role in group.roles:
        if role.id == role_id:
            return role
    raise NotFound("role")


class GroupController(Controller):
    path = "/v1/groups"
    tags = ["groups"]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_group(
        self, service: Service, actor: Actor, data: JSONBody[CreateGroupRequest]
    ) -> Response[GroupView]:
        group = await service.create_group(
            CreateGroupCommand(actor=actor, name=data.name, description=data.description)
        )
        return Response(group, status_code=HTTP_201_CREATED, headers={"Location": f"/v1/groups/{group.id}"})

    @get("/")
    async def list_my_groups(self, service: Service, actor: Actor) -> GroupList:
        return GroupList(groups=await service.list_my_groups(actor))

    @get(GROUP, opt=requires(P.VIEW_GROUP))
    async def get_group(self, service: Service, actor: Actor, group_id: FromPath[str]) -> GroupView:
        return await service.get_group(actor, group_id)

    @patch(GROUP, opt=requires(P.MANAGE_GROUP))
    async def update_group(
        self, service: Service, actor: Actor, group_id: FromPath[str], data: JSONBody[UpdateGroupRequest]
    ) -> GroupView:
        return await service.update_group(
            UpdateGroupCommand(actor=actor, group_id=group_id, name=data.name, description=data.description)
        )

    @delete(GROUP, opt=requires(P.DELETE_GROUP), status_code=HTTP_204_NO_CONTENT)
    async def delete_group(self, service: Service, actor: Actor, group_id: FromPath[str]) -> None:
        await service.delete_group(actor, group_id)

    # -- members ----------------------------------------------------------------------------

    @post(GROUP + "/members", opt=requires(P.ADD_GROUP_MEMBERS), status_code=200)
    async def add_member(
        self, service: Service, actor: Actor, group_id: FromPath[str], data: JSONBody[UserRefRequest]
    ) -> GroupView:
        return await service.add_group_member(
            GroupMemberCommand(actor=actor, group_id=group_id, user_id=data.user_id)
        )

    @delete(
        GROUP + "/members/{user_id:str}",
        opt=requires(P.REMOVE_GROUP_MEMBERS),
        status_code=HTTP_204_NO_CONTENT,
    )
    async def remove_member(
        self, service: Service, actor: Actor, group_id: FromPath[str], user_id: FromPath[str]
    ) -> None:
        await service.remove_group_member(GroupMemberCommand(actor=actor, group_id=group_id, user_id=user_id))

    @post(GROUP + "/leave", opt=requires(P.VIEW_GROUP), status_code=HTTP_204_NO_CONTENT)
    async def leave_group(self, service: Service, actor: Actor, group_id: FromPath[str]) -> None:
        await service.leave_group(actor, group_id)

    @put(GROUP + "/owner", opt=requires(P.TRANSFER_GROUP_OWNERSHIP))
    async def transfer_ownership(
        self, service: Service, actor: Actor, group_id: FromPath[str], data: JSONBody[UserRefRequest]
    ) -> GroupView:
        return await service.transfer_group_ownership(
            GroupMemberCommand(actor=actor, group_id=group_id, user_id=data.user_id)
        )

    # -- roles ------------------------------------------------------------------------------

    @get(GROUP + "/roles", opt=requires(P.VIEW_GROUP))
    async def list_roles(self, service: Service, actor: Actor, group_id: FromPath[str]) -> RoleList:
        return RoleList(roles=(await service.get_group(actor, group_id)).roles)

    @post(GROUP + "/roles", opt=requires(P.MANAGE_ROLES), status_code=HTTP_201_CREATED)
    async def define_role(
        self, service: Service, actor: Actor, group_id: FromPath[str], data: JSONBody[DefineRoleRequest]
    ) -> Response[RoleView]:
        group = await service.define_role(
            DefineRoleCommand(
                actor=actor, group_id=group_id, name=data.name, rank=data.rank, permissions=data.permissions
            )
        )
        role = next(r for r in group.roles if r.name.casefold() == data.name.strip().casefold())
        return Response(
            role, status_code=HTTP_201_CREATED, headers={"Location": f"/v1/groups/{group_id}/roles/{role.id}"}
        )

    @get(ROLE, opt=requires(P.VIEW_GROUP))
    async def get_role(
        self, service: Service, actor: Actor, group_id: FromPath[str], role_id: FromPath[str]
    ) -> RoleView:
        return _role(await service.get_group(actor, group_id), role_id)

    @patch(ROLE, opt=requires(P.MANAGE_ROLES))
    async def edit_role(
        self,
        service: Service,
        actor: Actor,
        group_id: FromPath[str],
        role_id: FromPath[str],
        data: JSONBody[EditRoleRequest],
    ) -> RoleView:
        group = await service.edit_role(
            EditRoleCommand(
                actor=actor,
                group_id=group_id,
                role_id=role_id,
                name=data.name,
                rank=data.rank,
                permissions=data.permissions,
            )
        )
        return _role(group, role_id)

    @delete(ROLE, opt=requires(P.MANAGE_ROLES), status_code=HTTP_204_NO_CONTENT)
    async def delete_role(
        self, service: Service, actor: Actor, group_id: FromPath[str], role_id: FromPath[str]
    ) -> None:
        await service.delete_role(actor, group_id, role_id)

    @put(GROUP + "/members/{user_id:str}/roles/{role_id:str}", opt=requires(P.MANAGE_ROLES))
    async def assign_role(
        self,
        service: Service,
        actor: Actor,
        group_id: FromPath[str],
        user_id: FromPath[str],
        role_id: FromPath[str],
    ) -> GroupView:
        return await service.assign_role(
            RoleAssignmentCommand(actor=actor, group_id=group_id, user_id=user_id, role_id=role_id)
        )

    @delete(
        GROUP + "/members/{user_id:str}/roles/{role_id:str}",
        opt=requires(P.MANAGE_ROLES),
        status_code=HTTP_204_NO_CONTENT,
    )
    async def unassign_role(
        self,
        service: Service,
        actor: Actor,
        group_id: FromPath[str],
        user_id: FromPath[str],
        role_id: FromPath[str],
    ) -> None:
        await service.unassign_role(
            RoleAssignmentCommand(actor=actor, group_id=group_id, user_id=user_id, role_id=role_id)
        )
