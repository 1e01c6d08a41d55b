"""/v1/chats: the caller's chats, direct and group chats, members, ownership, read markers."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from chatcore.application.chats import (
    ChatMemberCommand,
    CreateGroupChatCommand,
    OpenDirectChatCommand,
    RenameChatCommand,
)
from chatcore.application.messages import MarkReadCommand
from chatcore.application.presence import ChatPresence
from chatcore.application.views import ChatView, ReadMarkerView
from chatcore.domain.permissions import Permission
from entrypoints.http.deps import Actor, Service
from entrypoints.http.guards import requires, runtime_of
from entrypoints.http.routing import delete, get, patch, post, put
from entrypoints.http.schemas import (
    ChatList,
    CreateChatRequest,
    JSONBody,
    ReadMarkerRequest,
    RenameChatRequest,
    UserRefRequest,
)

CHAT = "/{chat_id:str}"

P = Permission


def _location(chat: ChatView) -> dict[str, str]:
    return {"Location": f"/v1/chats/{chat.id}"}


class ChatController(Controller):
    path = "/v1/chats"
    tags = ["chats"]

    @get("/")
    async def list_my_chats(self, service: Service, actor: Actor) -> ChatList:
        """The caller's chats, most recently active first, with unread counts and the last message."""
        return ChatList(chats=await service.list_my_chats(actor))

    @post("/", status_code=HTTP_201_CREATED)
    async def create_chat(
        self, service: Service, actor: Actor, data: JSONBody[CreateChatRequest]
    ) -> Response[ChatView]:
        """A group chat; with `group_id`, inside that group (needs create_chats there)."""
        chat = await service.create_group_chat(
            CreateGroupChatCommand(
                actor=actor, title=data.title, member_ids=data.member_ids, group_id=data.group_id
            )
        )
        return Response(chat, status_code=HTTP_201_CREATED, headers=_location(chat))

    @post(
        "/direct",
        status_code=HTTP_201_CREATED,
        responses={HTTP_200_OK: ResponseSpec(ChatView, description="The pair's existing direct chat")},
    )
    async def open_direct_chat(
        self, service: Service, actor: Actor, data: JSONBody[UserRefRequest]
    ) -> Response[ChatView]:
        """The direct chat with `user_id`: 201 when opened now, 200 when the pair already had it."""
        chat, created = await service.open_direct_chat(
            OpenDirectChatCommand(actor=actor, user_id=data.user_id)
        )
        status = HTTP_201_CREATED if created else HTTP_200_OK
        return Response(chat, status_code=status, headers=_location(chat))

    @get(CHAT, opt=requires(P.READ_CHAT))
    async def get_chat(self, service: Service, actor: Actor, chat_id: FromPath[str]) -> ChatView:
        return await service.get_chat(actor, chat_id)

    @get(CHAT + "/presence", opt=requires(P.READ_CHAT))
    async def chat_presence(
        self, request: Request[Any, Any, Any], actor: Actor, chat_id: FromPath[str]
    ) -> ChatPresence:
        """Which members have a live connection (expired by the server a minute after the last)."""
        return await runtime_of(request).chat_presence(actor, chat_id)

    @patch(CHAT, opt=requires(P.EDIT_CHAT_INFO))
    async def rename_chat(
        self, service: Service, actor: Actor, chat_id: FromPath[str], data: JSONBody[RenameChatRequest]
    ) -> ChatView:
        return await service.rename_chat(RenameChatCommand(actor=actor, chat_id=chat_id, title=data.title))

    @post(CHAT + "/members", opt=requires(P.ADD_CHAT_MEMBERS), status_code=HTTP_200_OK)
    async def add_member(
        self, service: Service, actor: Actor, chat_id: FromPath[str], data: JSONBody[UserRefRequest]
    ) -> ChatView:
        return await service.add_chat_member(
            ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=data.user_id)
        )

    @delete(
        CHAT + "/members/{user_id:str}",
        opt=requires(P.REMOVE_CHAT_MEMBERS),
        status_code=HTTP_204_NO_CONTENT,
    )
    async def remove_member(
        self, service: Service, actor: Actor, chat_id: FromPath[str], user_id: FromPath[str]
    ) -> None:
        await service.remove_chat_member(ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=user_id))

    @post(CHAT + "/leave", opt=requires(P.READ_CHAT), status_code=HTTP_204_NO_CONTENT)
    async def leave_chat(self, service: Service, actor: Actor, chat_id: FromPath[str]) -> None:
        await service.leave_chat(actor, chat_id)

    @put(CHAT + "/owner", opt=requires(P.TRANSFER_CHAT_OWNERSHIP))
    async def transfer_ownership(
        self, service: Service, actor: Actor, chat_id: FromPath[str], data: JSONBody[UserRefRequest]
    ) -> ChatView:
        return await service.transfer_chat_ownership(
            ChatMemberCommand(actor=actor, chat_id=chat_id, user_id=data.user_id)
        )

    @put(CHAT + "/read-marker", opt=requires(P.READ_CHAT))
    async def mark_read(
        self, service: Service, actor: Actor, chat_id: FromPath[str], data: JSONBody[ReadMarkerRequest]
    ) -> ReadMarkerView:
        """Move the caller's read marker forward to `seq`; an older seq changes nothing."""
        return await service.mark_read(MarkReadCommand(actor=actor, chat_id=chat_id, seq=data.seq))
