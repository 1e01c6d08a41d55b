"""Request and response bodies of the REST API.

Requests are msgspec Structs with `forbid_unknown_fields=True`: a field the client may not set
(role, owner, email_verified, author, seq, timestamps) exists in no request type, so sending
one is a 422, never a silent write. Responses are the application's result Structs (views).
"""

from __future__ import annotations

from typing import Annotated, TypeAlias, TypeVar

import msgspec
from litestar.enums import RequestEncodingType
from litestar.params import Body

from chatcore.application.views import (
    ChatSummary,
    EditView,
    GroupView,
    RoleView,
)


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


T = TypeVar("T")

# A JSON request body (litestar's `JSONBody`) whose OpenAPI schema says what decoding does: a
# field the type does not name is refused (`additionalProperties: false`).
JSONBody: TypeAlias = Annotated[  # noqa: UP040 - litestar reads the Annotated metadata
    T, Body(media_type=RequestEncodingType.JSON, schema_extra={"additionalProperties": False})
]


# -- users ----------------------------------------------------------------------------------


class UpdateProfileRequest(Request, frozen=True, kw_only=True):
    display_name: str | None = None
    bio: str | None = None
    notify_missed_messages: bool | None = None
    notify_added: bool | None = None


# -- groups ---------------------------------------------------------------------------------


class CreateGroupRequest(Request, frozen=True, kw_only=True):
    name: str
    description: str = ""


class UpdateGroupRequest(Request, frozen=True, kw_only=True):
    name: str | None = None
    description: str | None = None


class UserRefRequest(Request, frozen=True, kw_only=True):
    """Names the user an action is about: a member to add, the new owner."""

    user_id: str


class DefineRoleRequest(Request, frozen=True, kw_only=True):
    name: str
    rank: int
    permissions: list[str] = []


class EditRoleRequest(Request, frozen=True, kw_only=True):
    name: str | None = None
    rank: int | None = None
    permissions: list[str] | None = None


# -- chats ----------------------------------------------------------------------------------


class CreateChatRequest(Request, frozen=True, kw_only=True):
    title: str
    member_ids: list[str] = []
    group_id: str | None = None


class RenameChatRequest(Request, frozen=True, kw_only=True):
    title: str


class ReadMarkerRequest(Request, frozen=True, kw_only=True):
    seq: int


# -- messages -------------------------------------------------------------------------------


class SendMessageRequest(Request, frozen=True, kw_only=True):
    body: str
    reply_to: int | None = None
    client_msg_id: str | None = None


class EditMessageRequest(Request, frozen=True, kw_only=True):
    body: str


# -- list envelopes -------------------------------------------------------------------------


class GroupList(msgspec.Struct, frozen=True, kw_only=True):
    groups: list[GroupView]


class RoleList(msgspec.Struct, frozen=True, kw_only=True):
    roles: list[RoleView]


class ChatList(msgspec.Struct, frozen=True, kw_only=True):
    chats: list[ChatSummary]


class EditHistory(msgspec.Struct, frozen=True, kw_only=True):
    edits: list[EditView]  # previous bodies, oldest first


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
